//! Starting the real pieces a figure runs against: the embedded broker (rumqttd, in this
//! process) or a Mosquitto process, and the collector and agent libraries in-process on
//! 127.0.0.1 ephemeral ports with their SQLite files in a temp dir.
//!
//! Nothing here is a stand-in: the same `Agent::start` / `Collector::start` the binaries
//! run. A Mosquitto process is killed by its pid when its `Broker` drops.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use stocksync_agent::config::AgentConfig;
use stocksync_agent::Agent;
use stocksync_collector::config::CollectorConfig;
use stocksync_collector::Collector;

use crate::util::{wait_until, TempDir};

/// Which broker a figure runs through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerKind {
    /// rumqttd, as `stocksync-collector` embeds it (started in this process).
    Embedded,
    /// A real `mosquitto` process with a generated config.
    Mosquitto,
}

/// A running broker. The embedded one lives until the process exits; Mosquitto is killed on drop.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker of `kind` on `port` and waits until it accepts connections.
    pub fn start(kind: BrokerKind, port: u16, dir: &TempDir) -> anyhow::Result<Broker> {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = match kind {
            BrokerKind::Embedded => {
                stocksync_collector::broker::start_embedded(
                    addr,
                    stocksync_runtime::mqtt::MAX_PACKET_BYTES,
                )?;
                None
            }
            BrokerKind::Mosquitto => Some(spawn_mosquitto(port, dir.path())?),
        };
        let broker = Broker { port, child };
        wait_until("broker to listen", Duration::from_secs(10), || {
            Ok(TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok())
        })?;
        Ok(broker)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_mosquitto(port: u16, dir: &Path) -> anyhow::Result<Child> {
    let conf = dir.join(format!("mosquitto-{port}.conf"));
    // Queues large enough that the broker never drops QoS 1 messages for a slow consumer.
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 1000000\nmax_packet_size 2000000\nset_tcp_nodelay true\n"
        ),
    )?;
    let log = std::fs::File::create(dir.join(format!("mosquitto-{port}.log")))?;
    let program = mosquitto_path()?;
    Ok(Command::new(program)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

fn mosquitto_path() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("mosquitto not installed (apt-get install mosquitto)"))
}

/// Agent config: HTTP on an ephemeral port, journal in `dir`, forwarding to `broker_port`.
pub fn agent_config(
    dir: &TempDir,
    agent_id: &str,
    broker_port: u16,
) -> anyhow::Result<AgentConfig> {
    Ok(toml::from_str(&format!(
        "agent_id = \"{agent_id}\"\nwarehouse = \"ams\"\n[http]\nlisten = \"127.0.0.1:0\"\n[journal]\npath = {:?}\n[broker]\nhost = \"127.0.0.1\"\nport = {broker_port}\nkeep_alive_secs = 5\n",
        dir.join(&format!("journal-{agent_id}.db"))
    ))?)
}

/// Collector config: HTTP on an ephemeral port, ledger at `ledger`, consuming from `broker_port`.
pub fn collector_config(ledger: &Path, broker_port: u16) -> anyhow::Result<CollectorConfig> {
    collector_config_with(ledger, broker_port, "")
}

/// The same, with `extra` TOML appended (e.g. a channel).
pub fn collector_config_with(
    ledger: &Path,
    broker_port: u16,
    extra: &str,
) -> anyhow::Result<CollectorConfig> {
    Ok(toml::from_str(&format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[ledger]\npath = {ledger:?}\n[broker]\nhost = \"127.0.0.1\"\nport = {broker_port}\nkeep_alive_secs = 5\n{extra}"
    ))?)
}

/// One channel publishing every SKU's sellable number retained over MQTT.
pub const MQTT_CHANNEL: &str =
    "[[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\nmqtt = true\n";

/// An agent and (optionally) a collector running in this process on one tokio runtime.
pub struct Stack {
    pub rt: tokio::runtime::Runtime,
    pub agent: Option<Agent>,
    pub collector: Option<Collector>,
    pub agent_url: String,
    pub collector_url: String,
}

impl Stack {
    /// Starts an agent forwarding to `broker_port` and, if `with_collector`, a collector
    /// consuming from it. Neither waits for the broker: both retry until it is there.
    pub fn start(dir: &TempDir, broker_port: u16, with_collector: bool) -> anyhow::Result<Stack> {
        Stack::start_with(dir, broker_port, with_collector.then_some(""))
    }

    /// Like `start`; `collector` is the extra collector TOML, `None` for no collector.
    pub fn start_with(
        dir: &TempDir,
        broker_port: u16,
        collector: Option<&str>,
    ) -> anyhow::Result<Stack> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let collector = if let Some(extra) = collector {
            let config = collector_config_with(&dir.join("ledger.db"), broker_port, extra)?;
            Some(rt.block_on(Collector::start(config))?)
        } else {
            None
        };
        let agent = rt.block_on(Agent::start(agent_config(dir, "a1", broker_port)?))?;
        Ok(Stack {
            agent_url: format!("http://{}", agent.http_addr),
            collector_url: collector
                .as_ref()
                .map(|c| format!("http://{}", c.http_addr))
                .unwrap_or_default(),
            agent: Some(agent),
            collector,
            rt,
        })
    }

    /// Stops both gracefully (finishing in-flight commits).
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(a) = self.agent.take() {
            self.rt.block_on(a.stop())?;
        }
        if let Some(c) = self.collector.take() {
            self.rt.block_on(c.stop())?;
        }
        Ok(())
    }
}

//! Shared helpers for the end-to-end suites: real brokers, real processes, real SQLite
//! files in temp dirs, real HTTP. Nothing here fakes a stocksync component.
//!
//! The broker is chosen by `STOCKSYNC_TEST_BROKER`: unset or `embedded` runs our embedded
//! rumqttd (`stocksync-collector broker`), `mosquitto` runs a real Mosquitto. Either way it
//! is a child process on an ephemeral 127.0.0.1 port that a test can kill and restart.
//! Every process is killed by pid when its handle drops; temp dirs are removed on drop.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub mod backend;
pub mod postgres;

use serde_json::Value;
use stocksync_agent::config::AgentConfig;
use stocksync_collector::config::CollectorConfig;

/// A temp directory removed (with everything in it) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "stocksync-test-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free 127.0.0.1 port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port()
}

/// Path of a workspace binary, next to the test executable's `deps/` folder.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run the suite with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(program: &Path, args: &[&str], log: PathBuf) -> Proc {
        Proc::spawn_env(program, args, &[], log)
    }

    /// [`Proc::spawn`] with extra environment variables (e.g. `RUST_LOG`).
    pub fn spawn_env(program: &Path, args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Proc {
        use std::os::unix::process::CommandExt;
        let err = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(program);
        // If the test binary dies without running destructors (a signal, a CI timeout), the
        // kernel kills the child too. The signal follows the spawning thread, which is the
        // test's own thread here.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(err.try_clone().expect("dup log"))
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Proc {
            child: Some(child),
            log,
        }
    }

    /// Wraps a child spawned elsewhere (e.g. under another user), with the same drop.
    pub fn from_child(child: Child, log: PathBuf) -> Proc {
        Proc {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL, then reap: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit code if the process has ended (`-1` for a signal), without waiting.
    pub fn try_wait(&mut self) -> Option<i32> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        Some(status.code().unwrap_or(-1))
    }

    /// The process's output so far (for assertion messages).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Which broker the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Embedded,
    Mosquitto,
}

impl BrokerKind {
    pub fn from_env() -> BrokerKind {
        match std::env::var("STOCKSYNC_TEST_BROKER").as_deref() {
            Ok("mosquitto") => BrokerKind::Mosquitto,
            _ => BrokerKind::Embedded,
        }
    }
}

/// A real MQTT broker process on a fixed ephemeral port, restartable on the same port.
pub struct Broker {
    pub kind: BrokerKind,
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

impl Broker {
    pub fn start(dir: &TempDir) -> Broker {
        let mut broker = Broker {
            kind: BrokerKind::from_env(),
            port: free_port(),
            dir: dir.path().to_owned(),
            proc: None,
            starts: 0,
        };
        broker.restart();
        broker
    }

    /// Kills the broker with SIGKILL (connections drop, nothing is flushed).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts the broker again on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        self.starts += 1;
        let log = self.dir.join(format!("broker-{}.log", self.starts));
        let proc = match self.kind {
            BrokerKind::Embedded => {
                let listen = format!("127.0.0.1:{}", self.port);
                Proc::spawn(
                    &bin("stocksync-collector"),
                    &["broker", "--listen", &listen],
                    log,
                )
            }
            BrokerKind::Mosquitto => {
                let conf = self.dir.join("mosquitto.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 100000\n",
                        self.port
                    ),
                )
                .expect("write mosquitto.conf");
                let mosquitto = which("mosquitto")
                    .expect("mosquitto not installed (STOCKSYNC_TEST_BROKER=mosquitto)");
                Proc::spawn(&mosquitto, &["-c", conf.to_str().expect("utf-8 path")], log)
            }
        };
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        wait_blocking(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        })
        .unwrap_or_else(|_| panic!("broker did not listen on {addr}: {}", proc.output()));
        self.proc = Some(proc);
    }
}

/// The path of `name` on PATH (or in /usr/sbin, /usr/local/sbin).
pub fn which(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.exists())
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_blocking(timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("condition not met within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls an async condition until it holds; panics with `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A JSON HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Blocking POST of a JSON (or any) body.
pub fn post_blocking(url: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = http().post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).unwrap_or_else(|e| panic!("POST {url}: {e}"));
    reply(&mut resp)
}

/// Blocking GET.
pub fn get_blocking(url: &str) -> Reply {
    let mut resp = http()
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    reply(&mut resp)
}

fn reply(resp: &mut ureq::http::Response<ureq::Body>) -> Reply {
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, body }
}

/// Async POST (runs the blocking client off the runtime's workers).
pub async fn post(url: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let (url, body) = (url.to_string(), body.to_string());
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        post_blocking(&url, &body, &h)
    })
    .await
    .expect("post task")
}

/// Async GET.
pub async fn get(url: &str) -> Reply {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || get_blocking(&url))
        .await
        .expect("get task")
}

/// Collector config using `broker` and a ledger in `dir`.
pub fn collector_config(dir: &TempDir, broker_port: u16, http_port: u16) -> CollectorConfig {
    toml_config(&collector_toml(dir, broker_port, http_port, ""))
}

/// The collector config as TOML text; `extra` is appended (channels, locations, ...).
pub fn collector_toml(dir: &TempDir, broker_port: u16, http_port: u16, extra: &str) -> String {
    collector_toml_with_ledger(&dir.join("ledger.db"), broker_port, http_port, extra)
}

/// [`collector_toml`] with the ledger at `ledger`.
pub fn collector_toml_with_ledger(
    ledger: &Path,
    broker_port: u16,
    http_port: u16,
    extra: &str,
) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:{http_port}\"\n[ledger]\npath = {ledger:?}\n[broker]\nhost = \"127.0.0.1\"\nport = {broker_port}\nkeep_alive_secs = 5\n{extra}"
    )
}

/// Agent config for `agent_id` at `warehouse`, journal in `dir`.
pub fn agent_config(
    dir: &TempDir,
    agent_id: &str,
    warehouse: &str,
    broker_port: u16,
    http_port: u16,
) -> AgentConfig {
    toml_config(&agent_toml(
        dir,
        agent_id,
        warehouse,
        broker_port,
        http_port,
        "",
    ))
}

/// The agent config as TOML text; `extra` is appended (e.g. a `[forward]` section).
pub fn agent_toml(
    dir: &TempDir,
    agent_id: &str,
    warehouse: &str,
    broker_port: u16,
    http_port: u16,
    extra: &str,
) -> String {
    format!(
        "agent_id = \"{agent_id}\"\nwarehouse = \"{warehouse}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[journal]\npath = {:?}\n[broker]\nhost = \"127.0.0.1\"\nport = {broker_port}\nkeep_alive_secs = 5\n{extra}",
        dir.join(&format!("journal-{agent_id}.db"))
    )
}

pub fn toml_config<T: for<'de> serde::Deserialize<'de>>(text: &str) -> T {
    toml::from_str(text).unwrap_or_else(|e| panic!("config: {e}\n{text}"))
}

/// A collector or agent running as a real OS process.
pub struct Service {
    pub proc: Proc,
    pub url: String,
    program: &'static str,
    config: PathBuf,
    log_dir: PathBuf,
    starts: u32,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl Service {
    /// Writes `config_text` to `dir/<name>.toml`, starts `program` with it and waits for `/healthz`.
    pub fn start(
        dir: &TempDir,
        program: &'static str,
        name: &str,
        config_text: &str,
        http_port: u16,
    ) -> Service {
        Service::start_in(dir.path(), program, name, config_text, http_port)
    }

    /// [`Service::start`] in a directory given by its path.
    pub fn start_in(
        dir: &Path,
        program: &'static str,
        name: &str,
        config_text: &str,
        http_port: u16,
    ) -> Service {
        Service::start_in_env(dir, program, name, config_text, http_port, &[])
    }

    /// [`Service::start_in`] with extra environment variables (e.g. `RUST_LOG`), kept for
    /// restarts.
    pub fn start_in_env(
        dir: &Path,
        program: &'static str,
        name: &str,
        config_text: &str,
        http_port: u16,
        env: &[(String, String)],
    ) -> Service {
        Service::start_in_env_args(dir, program, name, config_text, http_port, env, &[])
    }

    /// [`Service::start_in_env`] with extra command-line arguments after `--config FILE`
    /// (e.g. `--log-format json`), kept for restarts.
    pub fn start_in_env_args(
        dir: &Path,
        program: &'static str,
        name: &str,
        config_text: &str,
        http_port: u16,
        env: &[(String, String)],
        args: &[String],
    ) -> Service {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, config_text).expect("write config");
        let proc = spawn_service(program, &config, dir, 1, env, args);
        let service = Service {
            proc,
            url: format!("http://127.0.0.1:{http_port}"),
            program,
            config,
            log_dir: dir.to_owned(),
            starts: 1,
            env: env.to_vec(),
            args: args.to_vec(),
        };
        service.wait_up();
        service
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts the process again with the same config and waits until it serves HTTP.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.starts += 1;
        self.proc = spawn_service(
            self.program,
            &self.config,
            &self.log_dir,
            self.starts,
            &self.env,
            &self.args,
        );
        self.wait_up();
    }

    fn wait_up(&self) {
        let url = format!("{}/healthz", self.url);
        wait_blocking(Duration::from_secs(10), || http().get(&url).call().is_ok())
            .unwrap_or_else(|_| panic!("{} did not come up: {}", self.program, self.proc.output()));
    }
}

fn spawn_service(
    program: &str,
    config: &Path,
    log_dir: &Path,
    start: u32,
    env: &[(String, String)],
    args: &[String],
) -> Proc {
    let name = config.file_stem().and_then(|s| s.to_str()).unwrap_or("svc");
    let log = log_dir.join(format!("{name}-{start}.log"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut all = vec!["--config", config.to_str().expect("utf-8 path")];
    all.extend(args.iter().map(String::as_str));
    Proc::spawn_env(&bin(program), &all, &env, log)
}

/// Sum of `on_hand` over all locations of `sku` at the collector.
pub async fn on_hand(collector_url: &str, sku: &str) -> i64 {
    get(&format!("{collector_url}/v1/stock/{sku}")).await.body["on_hand"]
        .as_i64()
        .unwrap_or(0)
}

/// One counter from the collector's `/metrics`.
pub async fn metric(collector_url: &str, name: &str) -> u64 {
    let text = get(&format!("{collector_url}/metrics")).await.body;
    let text = text.as_str().unwrap_or_default().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// `n` receipts of one unit each, spread over `skus`, as JSON batches of `per_batch`.
pub fn receipt_batches(n: usize, per_batch: usize, skus: &[&str]) -> Vec<String> {
    let records: Vec<Value> = (0..n)
        .map(|i| serde_json::json!({"sku": skus[i % skus.len()], "kind": "receipt", "quantity": 1}))
        .collect();
    records
        .chunks(per_batch)
        .map(|c| Value::Array(c.to_vec()).to_string())
        .collect()
}

/// A plain MQTT client for tests: publishes raw payloads and collects what it receives.
pub struct MqttProbe {
    pub client: rumqttc::AsyncClient,
    received: tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    stash: std::collections::VecDeque<rumqttc::Publish>,
    connected: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl MqttProbe {
    /// Connects to the broker on `port` and waits for the CONNACK.
    pub async fn connect(port: u16, client_id: &str) -> MqttProbe {
        let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 1024);
        let (tx, received) = tokio::sync::mpsc::unbounded_channel();
        let (conn_tx, connected) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = conn_tx.send(true);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = tx.send(p);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let mut probe = MqttProbe {
            client,
            received,
            stash: Default::default(),
            connected,
            task,
        };
        tokio::time::timeout(Duration::from_secs(10), probe.connected.wait_for(|c| *c))
            .await
            .expect("probe connects")
            .expect("probe task alive");
        probe
    }

    /// Subscribes, and returns once the subscription is active: a marker message published
    /// after it on the same connection has come back.
    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        // A retained-free round trip through the broker proves the subscription is active.
        let marker = format!("stocksync-test/marker/{}", std::process::id());
        self.client
            .subscribe(&marker, rumqttc::QoS::AtLeastOnce)
            .await
            .expect("subscribe marker");
        self.client
            .publish(&marker, rumqttc::QoS::AtLeastOnce, false, b"m".to_vec())
            .await
            .expect("publish marker");
        loop {
            let p = tokio::time::timeout(Duration::from_secs(10), self.received.recv())
                .await
                .expect("marker comes back")
                .expect("probe alive");
            if p.topic == marker {
                return;
            }
            self.stash.push_back(p);
        }
    }

    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }

    /// The next message on a topic other than the marker, or panic after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> rumqttc::Publish {
        if let Some(p) = self.stash.pop_front() {
            return p;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let p = tokio::time::timeout(left, self.received.recv())
                .await
                .expect("message within timeout")
                .expect("probe alive");
            if !p.topic.starts_with("stocksync-test/marker/") {
                return p;
            }
        }
    }
}

impl MqttProbe {
    /// The next message on a topic other than the marker, or `None` after `timeout`.
    pub async fn try_next(&mut self, timeout: Duration) -> Option<rumqttc::Publish> {
        if let Some(p) = self.stash.pop_front() {
            return Some(p);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let p = tokio::time::timeout(left, self.received.recv())
                .await
                .ok()??;
            if !p.topic.starts_with("stocksync-test/marker/") {
                return Some(p);
            }
        }
    }

    /// Publishes `payload`, and again every two seconds until a message comes back (as an
    /// agent resends a batch until it is acknowledged: a PostgreSQL worker's session is
    /// clean, so what reaches a warehouse's topic while no worker holds it is gone). Panics
    /// after `timeout`.
    pub async fn publish_until_answered(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> rumqttc::Publish {
        let deadline = Instant::now() + timeout;
        loop {
            self.publish(topic, payload.clone()).await;
            if let Some(p) = self.try_next(Duration::from_secs(2)).await {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "no answer to {topic} within {timeout:?}"
            );
        }
    }
}

impl Drop for MqttProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes one QoS 1 message from a fresh connection whose packet limit allows `payload`,
/// and returns once the broker acknowledged it or dropped the connection (a broker may
/// refuse an oversized message by disconnecting its publisher).
pub async fn publish_once(port: u16, client_id: &str, topic: &str, payload: Vec<u8>) {
    let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 16);
    client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
        .await
        .expect("publish queued");
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// The collector's row of `sku` at `warehouse`/`bin` (bin `None` = warehouse level), or null.
pub async fn stock_row(collector: &str, sku: &str, warehouse: &str, bin: Option<&str>) -> Value {
    let stock = get(&format!("{collector}/v1/stock/{sku}")).await.body;
    stock["locations"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["warehouse"] == warehouse && r["bin"].as_str() == bin)
                .cloned()
        })
        .unwrap_or(Value::Null)
}

/// Blocking request with any method, an optional JSON body and extra headers (auth tests);
/// the reply with the response headers.
pub fn request_blocking(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (Reply, ureq::http::HeaderMap) {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let agent = http();
    let result = match body {
        Some(b) => agent.run(
            req.header("content-type", "application/json")
                .body(b.to_string())
                .expect("request"),
        ),
        None => agent.run(req.body(()).expect("request")),
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    (reply(&mut resp), resp.headers().clone())
}

/// Async [`request_blocking`].
pub async fn request(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (Reply, ureq::http::HeaderMap) {
    let (method, url, body) = (
        method.to_string(),
        url.to_string(),
        body.map(str::to_string),
    );
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        request_blocking(&method, &url, body.as_deref(), &h)
    })
    .await
    .expect("request task")
}

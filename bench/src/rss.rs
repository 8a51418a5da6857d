//! Figure: resident memory of the real `stocksync-agent` and `stocksync-collector` processes
//! (the binaries built beside this one), idle and at their peak under load.
//!
//! Read from `/proc/<pid>/status` (`VmRSS`), idle after the two are connected and quiet,
//! and sampled every 10 ms while a load is posted and drained. Processes are killed by pid.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::load::{self, client};
use crate::util::{free_port, sibling_bin, wait_until, Row, TempDir};

#[derive(Debug, Clone, clap::Args)]
pub struct RssArgs {
    /// Movements posted (batches of 1000) for the under-load reading.
    #[arg(long, default_value_t = 200_000)]
    pub movements: usize,
    /// Seconds to let both settle before the idle reading.
    #[arg(long, default_value_t = 3)]
    pub settle: u64,
}

/// A child process killed by pid on drop.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn spawn(
    bin: &str,
    config: &std::path::Path,
    log: &std::path::Path,
) -> anyhow::Result<Proc> {
    let log = std::fs::File::create(log)?;
    Ok(Proc(
        Command::new(sibling_bin(bin)?)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    ))
}

/// VmRSS of `pid` in kB.
pub fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))
}

pub fn run(args: &RssArgs) -> anyhow::Result<Vec<Row>> {
    let dir = TempDir::new("rss")?;
    let (broker, c_http, a_http) = (free_port(), free_port(), free_port());
    let c_conf = dir.join("collector.toml");
    std::fs::write(
        &c_conf,
        format!(
            "[http]\nlisten = \"127.0.0.1:{c_http}\"\n[ledger]\npath = {:?}\n[embedded_broker]\nlisten = \"127.0.0.1:{broker}\"\n",
            dir.join("ledger.db")
        ),
    )?;
    let a_conf = dir.join("agent.toml");
    std::fs::write(
        &a_conf,
        format!(
            "agent_id = \"a1\"\nwarehouse = \"ams\"\n[http]\nlisten = \"127.0.0.1:{a_http}\"\n[journal]\npath = {:?}\n[broker]\nhost = \"127.0.0.1\"\nport = {broker}\n",
            dir.join("journal.db")
        ),
    )?;
    let collector = spawn("stocksync-collector", &c_conf, &dir.join("collector.log"))?;
    let c_url = format!("http://127.0.0.1:{c_http}");
    let http = client();
    wait_until("collector to serve", Duration::from_secs(20), || {
        Ok(load::get_json(&http, &format!("{c_url}/healthz")).is_ok())
    })?;
    let agent = spawn("stocksync-agent", &a_conf, &dir.join("agent.log"))?;
    let a_url = format!("http://127.0.0.1:{a_http}");
    wait_until("agent to connect", Duration::from_secs(20), || {
        Ok(load::agent_status(&http, &a_url).is_ok_and(|s| s["broker"] == "connected"))
    })?;
    std::thread::sleep(Duration::from_secs(args.settle));
    let (a_pid, c_pid) = (agent.0.id(), collector.0.id());
    let (a_idle, c_idle) = (rss_kb(a_pid)?, rss_kb(c_pid)?);

    let (a_peak, c_peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (a_peak, c_peak, stop) = (a_peak.clone(), c_peak.clone(), stop.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                a_peak.fetch_max(rss_kb(a_pid).unwrap_or(0), Ordering::Relaxed);
                c_peak.fetch_max(rss_kb(c_pid).unwrap_or(0), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    let bodies = load::receipt_bodies(args.movements, 1000, 1000);
    load::post_all(&format!("{a_url}/v1/movements"), bodies, 2)?;
    wait_until("backlog to drain", Duration::from_secs(600), || {
        let s = load::agent_status(&http, &a_url)?;
        Ok(s["backlog"].as_u64() == Some(0))
    })?;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let mb = |kb: u64| format!("{:.1} MB", kb as f64 / 1024.0);
    let row = |figure: &str, kb: u64, target: &str, met: Option<bool>| Row {
        figure: figure.into(),
        result: mb(kb),
        limit: "n/a".into(),
        ratio: None,
        target: target.into(),
        met,
        command: "stocksync-bench rss".into(),
    };
    let load = format!("under load ({} movements, peak)", args.movements);
    Ok(vec![
        row(
            "agent RSS idle",
            a_idle,
            "< 16 MB",
            Some(a_idle < 16 * 1024),
        ),
        row(
            &format!("agent RSS {load}"),
            a_peak.load(Ordering::Relaxed),
            "-",
            None,
        ),
        row(
            "collector RSS idle (with embedded broker)",
            c_idle,
            "-",
            None,
        ),
        row(
            &format!("collector RSS {load}"),
            c_peak.load(Ordering::Relaxed),
            "-",
            None,
        ),
    ])
}

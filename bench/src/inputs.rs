//! Figures: the standard inputs beside the agent's own JSON ingest in the same run.
//!
//! `epcis`: events/s through `POST /v1/epcis/events` in documents of 100 ObjectEvents
//! (quantityList, LGTIN class URNs, an SGLN bizLocation), against the same number of
//! movements posted as JSON batches of 100 to the same agent. `csv`: rows/s of one CSV
//! file dropped into a watched folder (from the rename into the folder until it is in
//! `processed/`, including the settle time) and the agent process's peak RSS while it is
//! read, against JSON batches of 1000 posted to the same agent process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::load::{self, client};
use crate::rss::{rss_kb, spawn};
use crate::stack::Stack;
use crate::util::{free_port, per_s, rate, wait_until, Row, TempDir};

#[derive(Debug, Clone, clap::Args)]
pub struct EpcisArgs {
    /// Events posted (in documents of 100), and as many JSON movements.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Client threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CsvArgs {
    /// Rows in the dropped file, and as many JSON movements.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
}

/// The LGTIN class of item `i` of 1000 (company prefix 4012345, check digit computed).
fn lgtin(i: usize) -> String {
    format!("urn:epc:class:lgtin:4012345.0{:05}.L1", i % 1000)
}

fn epcis_documents(events: usize) -> Vec<String> {
    let all: Vec<_> = (0..events)
        .map(|i| {
            json!({"type": "ObjectEvent", "eventID": format!("ev-{i}"), "action": "OBSERVE",
                   "eventTime": "2026-11-25T09:00:00Z", "eventTimeZoneOffset": "+00:00",
                   "bizStep": "receiving", "disposition": "in_progress",
                   "quantityList": [{"epcClass": lgtin(i), "quantity": 1, "uom": "EA"}]})
        })
        .collect();
    all.chunks(100)
        .map(|c| json!({"type": "EPCISDocument", "schemaVersion": "2.0", "creationDate": "2026-11-25T09:00:00Z", "epcisBody": {"eventList": c}}).to_string())
        .collect()
}

pub fn epcis(args: &EpcisArgs) -> anyhow::Result<Vec<Row>> {
    let dir = TempDir::new("epcis")?;
    let stack = Stack::start(&dir, free_port(), false)?;
    let docs = epcis_documents(args.events);
    let epcis = rate(
        args.events as u64,
        load::post_all(
            &format!("{}/v1/epcis/events", stack.agent_url),
            docs,
            args.threads,
        )?,
    );
    let bodies = load::receipt_bodies(args.events, 100, 1000);
    let json = rate(
        args.events as u64,
        load::post_all(
            &format!("{}/v1/movements", stack.agent_url),
            bodies,
            args.threads,
        )?,
    );
    let status = load::agent_status(&client(), &stack.agent_url)?;
    anyhow::ensure!(
        status["last_seq"].as_u64() == Some(2 * args.events as u64),
        "agent journaled {}",
        status["last_seq"]
    );
    stack.stop()?;
    Ok(vec![Row {
        figure: "agent EPCIS ingest, documents of 100 ObjectEvents".into(),
        result: per_s(epcis),
        limit: format!(
            "{} (JSON ingest, batches of 100, same agent and run)",
            per_s(json)
        ),
        ratio: Some(epcis / json),
        target: ">= 50% of JSON".into(),
        met: Some(epcis / json >= 0.5),
        command: "stocksync-bench epcis".into(),
    }])
}

fn write_csv(path: &std::path::Path, rows: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "sku;quantity;kind;bin;occurred_at;id")?;
    for i in 0..rows {
        writeln!(
            w,
            "SKU-{};1;receipt;A-{:02};2026-11-25T09:00:00Z;row-{i}",
            i % 1000,
            i % 20
        )?;
    }
    w.flush()?;
    Ok(())
}

pub fn csv(args: &CsvArgs) -> anyhow::Result<Vec<Row>> {
    let dir = TempDir::new("csv")?;
    let folder = dir.join("drop");
    std::fs::create_dir_all(&folder)?;
    let a_http = free_port();
    let conf = dir.join("agent.toml");
    std::fs::write(&conf, format!(
        "agent_id = \"a1\"\nwarehouse = \"ams\"\n[http]\nlisten = \"127.0.0.1:{a_http}\"\n[journal]\npath = {:?}\n[broker]\nhost = \"127.0.0.1\"\nport = {}\n[[files]]\npath = {folder:?}\nsource = \"wms\"\npoll_ms = 50\nsettle_ms = 100\n",
        dir.join("journal.db"), free_port()
    ))?;
    let agent = spawn("stocksync-agent", &conf, &dir.join("agent.log"))?;
    let url = format!("http://127.0.0.1:{a_http}");
    let http = client();
    wait_until("agent to serve", Duration::from_secs(20), || {
        Ok(load::agent_status(&http, &url).is_ok())
    })?;
    let pid = agent.0.id();
    let idle = rss_kb(pid)?;
    write_csv(&dir.join("export.csv.tmp"), args.rows)?;
    let (peak, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let sampler = std::thread::spawn({
        let (peak, stop) = (peak.clone(), stop.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(pid).unwrap_or(0), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    let start = Instant::now();
    std::fs::rename(dir.join("export.csv.tmp"), folder.join("export.csv"))?;
    let done = wait_until("the file to be processed", Duration::from_secs(600), || {
        Ok(folder.join("processed/export.csv").exists())
    })?;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let csv = rate(args.rows as u64, done - start);
    let status = load::agent_status(&http, &url)?;
    anyhow::ensure!(
        status["last_seq"].as_u64() == Some(args.rows as u64),
        "agent journaled {} of {} rows",
        status["last_seq"],
        args.rows
    );
    let bodies = load::receipt_bodies(args.rows, 1000, 1000);
    let json = rate(
        args.rows as u64,
        load::post_all(&format!("{url}/v1/movements"), bodies, 2)?,
    );
    let mb = |kb: u64| format!("{:.1} MB", kb as f64 / 1024.0);
    let peak = peak.load(Ordering::Relaxed);
    Ok(vec![
        Row {
            figure: format!("agent CSV file drop, {} rows in one file", args.rows),
            result: per_s(csv),
            limit: format!(
                "{} (JSON ingest, batches of 1000, same agent process)",
                per_s(json)
            ),
            ratio: Some(csv / json),
            target: ">= 50% of JSON".into(),
            met: Some(csv / json >= 0.5),
            command: "stocksync-bench csv".into(),
        },
        Row {
            figure: format!("agent RSS peak while reading {} CSV rows", args.rows),
            result: mb(peak),
            limit: format!("idle {}", mb(idle)),
            ratio: None,
            target: "bounded: < idle + 64 MB".into(),
            met: Some(peak < idle + 64 * 1024),
            command: "stocksync-bench csv".into(),
        },
    ])
}

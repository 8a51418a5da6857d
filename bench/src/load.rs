//! HTTP load: lean blocking clients (ureq, keep-alive) on plain threads, closed-loop for
//! throughput and open-loop for latency, plus the JSON bodies and status reads they need.
//!
//! Open loop is what makes the latency figures coordinated-omission safe: request `i` is due
//! at `start + i / rate` whatever happened to request `i - 1`, and its latency is measured
//! from that due time. A stalled server therefore shows up as latency of every request it
//! delayed, not as a lower offered load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A keep-alive HTTP client that reports non-2xx statuses instead of failing on them.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// `n` receipts of one each as JSON bodies of `per_body` records, spread over `skus` SKUs and
/// 10 bins. Record `i` is SKU `i % skus`, so totals are easy to check.
pub fn receipt_bodies(n: usize, per_body: usize, skus: usize) -> Vec<String> {
    let mut bodies = Vec::with_capacity(n.div_ceil(per_body));
    let mut body = String::new();
    for i in 0..n {
        body.push(if body.is_empty() { '[' } else { ',' });
        body.push_str(&format!(
            r#"{{"sku":"SKU-{:06}","kind":"receipt","quantity":1,"bin":"B-{}"}}"#,
            i % skus,
            i % 10
        ));
        if (i + 1) % per_body == 0 || i + 1 == n {
            body.push(']');
            bodies.push(std::mem::take(&mut body));
        }
    }
    bodies
}

/// POSTs every body to `url` from `threads` threads, each with its own keep-alive
/// connection; errors on any answer but 202. Returns the wall time.
pub fn post_all(url: &str, bodies: Vec<String>, threads: usize) -> anyhow::Result<Duration> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (bodies, next, url) = (bodies.clone(), next.clone(), url.to_string());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let http = client();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else {
                        return Ok(());
                    };
                    let (status, text) = post(&http, &url, body)?;
                    anyhow::ensure!(status == 202, "POST {url}: {status} {text}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    }
    Ok(start.elapsed())
}

/// Requests per second of `GET url` (a no-op endpoint) from `threads` keep-alive clients:
/// the HTTP round-trip floor of this machine, with the same client.
pub fn get_rate(url: &str, requests: usize, threads: usize) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (next, url) = (next.clone(), url.to_string());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let http = client();
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let mut resp = http.get(&url).call()?;
                    resp.body_mut().read_to_string()?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    }
    Ok(requests as f64 / start.elapsed().as_secs_f64())
}

/// One POST; returns the status and body text.
pub fn post(http: &ureq::Agent, url: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut resp = http
        .post(url)
        .header("content-type", "application/json")
        .send(body)?;
    let status = resp.status().as_u16();
    Ok((status, resp.body_mut().read_to_string()?))
}

/// One GET as JSON.
pub fn get_json(http: &ureq::Agent, url: &str) -> anyhow::Result<Value> {
    let mut resp = http.get(url).call()?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    anyhow::ensure!(status == 200, "GET {url}: {status} {text}");
    Ok(serde_json::from_str(&text)?)
}

/// The agent's `GET /v1/status`.
pub fn agent_status(http: &ureq::Agent, agent_url: &str) -> anyhow::Result<Value> {
    get_json(http, &format!("{agent_url}/v1/status"))
}

/// One counter from the collector's `/metrics`.
pub fn metric(http: &ureq::Agent, collector_url: &str, name: &str) -> anyhow::Result<u64> {
    let mut resp = http.get(&format!("{collector_url}/metrics")).call()?;
    let text = resp.body_mut().read_to_string()?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0))
}

/// What one open-loop request did: when it was due, when its answer came, the first seq
/// the agent journaled for it.
pub struct Sent {
    /// Index of the body in the order given.
    pub index: usize,
    pub due: Instant,
    pub answered: Instant,
    pub first_seq: u64,
}

//! A lean closed-loop HTTP/1.1 load generator: `clients` keep-alive connections driven as
//! tasks of one single-threaded runtime on its own thread, the way `wrk` drives many
//! connections from few threads. A thread per connection (ureq) spends a large share of a
//! 2-core machine on its own wake-ups and context switches, CPU the server under test then
//! lacks; this one costs a fraction of that, and its own CPU time is measured and reported
//! beside every figure it produces.
//!
//! It speaks only what the collector answers: a status line, headers with a
//! `content-length`, a body. Anything else is an error, never a guess.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::Samples;

/// What a closed-loop run measured.
pub struct Run {
    pub wall: Duration,
    pub latencies: Samples,
    pub statuses: Vec<u16>,
    /// CPU time the load generator's thread used (user + system).
    pub client_cpu: Duration,
}

/// POSTs every body to `path` on `addr` from `clients` connections; each connection sends
/// its next body once the previous answer is read.
pub fn post_all(
    addr: std::net::SocketAddr,
    path: &str,
    bodies: Vec<String>,
    clients: usize,
) -> anyhow::Result<Run> {
    let path = path.to_string();
    std::thread::spawn(move || -> anyhow::Result<Run> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let cpu_before = thread_cpu();
        let bodies = Arc::new(bodies);
        let next = Arc::new(AtomicUsize::new(0));
        let out = Arc::new(Mutex::new((Samples::default(), Vec::new())));
        let start = Instant::now();
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..clients.max(1) {
                let (bodies, next, out, path) =
                    (bodies.clone(), next.clone(), out.clone(), path.clone());
                tasks.spawn(async move {
                    let mut conn = Conn::connect(addr).await?;
                    while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let t = Instant::now();
                        let (status, _) = conn.post(&path, body).await?;
                        let mut o = out.lock().expect("samples");
                        o.0.push(t.elapsed());
                        o.1.push(status);
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            anyhow::Ok(())
        })?;
        let wall = start.elapsed();
        let (latencies, statuses) = std::mem::take(&mut *out.lock().expect("samples"));
        Ok(Run {
            wall,
            latencies,
            statuses,
            client_cpu: thread_cpu().saturating_sub(cpu_before),
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("load thread panicked"))?
}

/// POSTs every body to `path` on `addr` open-loop: body `i` is due at `start + i / rate`,
/// sent by the first of `clients` connections that is free, and its latency counts from
/// that due time (coordinated-omission safe: a request that waited for a free connection
/// counts the wait). Returns what was sent and the CPU time the load generator's thread
/// used. Timers here tick in milliseconds, so a send may start up to 1 ms after it was due:
/// that adds to the measured latency, never subtracts.
pub fn open_loop(
    addr: std::net::SocketAddr,
    path: &str,
    bodies: Vec<String>,
    rate: f64,
    clients: usize,
) -> anyhow::Result<(Vec<crate::load::Sent>, Duration)> {
    let path = path.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let cpu_before = thread_cpu();
        let bodies = Arc::new(bodies);
        let next = Arc::new(AtomicUsize::new(0));
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let interval = Duration::from_secs_f64(1.0 / rate);
        let sent = rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..clients.max(1) {
                let (bodies, next, path) = (bodies.clone(), next.clone(), path.clone());
                tasks.spawn(async move {
                    let mut conn = Conn::connect(addr).await?;
                    let mut sent = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = bodies.get(i) else {
                            return anyhow::Ok(sent);
                        };
                        let due = start + interval * i as u32;
                        tokio::time::sleep_until(due).await;
                        let (status, text) = conn.post(&path, body).await?;
                        let answered = Instant::now();
                        anyhow::ensure!(
                            status == 202,
                            "POST {path}: {status} {}",
                            String::from_utf8_lossy(&text)
                        );
                        let v: serde_json::Value = serde_json::from_slice(&text)?;
                        let first_seq = v["first_seq"].as_u64().ok_or_else(|| {
                            anyhow::anyhow!("no first_seq in {}", String::from_utf8_lossy(&text))
                        })?;
                        sent.push(crate::load::Sent {
                            index: i,
                            due: due.into_std(),
                            answered,
                            first_seq,
                        });
                    }
                });
            }
            let mut all = Vec::new();
            while let Some(done) = tasks.join_next().await {
                all.extend(done??);
            }
            anyhow::Ok(all)
        })?;
        Ok((sent, thread_cpu().saturating_sub(cpu_before)))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("load thread panicked"))?
}

/// One keep-alive connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(8192),
        })
    }

    /// Sends one JSON POST; returns the status and the body.
    async fn post(&mut self, path: &str, body: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        loop {
            if let Some((head, status, length)) = parse_head(&self.buf)? {
                while self.buf.len() < head + length {
                    self.fill().await?;
                }
                let body = self.buf[head..head + length].to_vec();
                self.buf.drain(..head + length);
                return Ok((status, body));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the server closed the connection mid-answer");
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// `(header bytes, status, content-length)` once the whole head is in `buf`.
fn parse_head(buf: &[u8]) -> anyhow::Result<Option<(usize, u16, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end])?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line in {head:?}"))?;
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("an answer without content-length: {head:?}"))?;
    Ok(Some((end + 4, status, length)))
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // /proc/thread-self/stat fields 14 and 15: utime and stime in clock ticks (100 Hz).
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return Duration::ZERO;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_read_only_when_complete() {
        assert!(parse_head(b"HTTP/1.1 201 Created\r\ncontent-le")
            .unwrap()
            .is_none());
        let r = parse_head(b"HTTP/1.1 201 Created\r\nContent-Length: 12\r\n\r\n{\"a\"")
            .unwrap()
            .unwrap();
        assert_eq!((r.1, r.2), (201, 12));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    }
}

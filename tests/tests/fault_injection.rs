//! Fault injection: many movements from three agents while the harness SIGKILLs and restarts
//! agents, the collector and the broker at seeded random points, cuts one agent's network
//! for a while (its broker link goes through a TCP proxy the harness stops and starts),
//! stamps one agent's movements minutes ahead (a skewed clock), and injects every poison
//! message of issue 10. At the end the totals must equal the reference exactly, every
//! poison message must be in a rejects queue, and the ledger must hold each accepted
//! movement once: nothing lost, nothing doubled. It runs on both stores: one SQLite
//! collector (`<case>::sqlite`), or two PostgreSQL workers (`<case>::postgres`) of which the
//! harness kills one at a time, the other taking its warehouses over by lease.
//!
//! Size and seed: `STOCKSYNC_FAULT_MOVEMENTS` (default 100000), `STOCKSYNC_FAULT_SECS` (how
//! long posting is spread over, default 30), `STOCKSYNC_FAULT_SEED` (default 1). It prints
//! movements, kills, the largest backlog seen and the time to converge.

mod support;

use std::collections::BTreeMap;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stocksync_common::model::*;
use stocksync_common::wire::{self, Batch};
use support::backend::{on_both_backends, Backend, CollectorSpec};
use support::*;

const WAREHOUSES: [&str; 3] = ["ams", "ber", "par"];
const SKUS_PER_WAREHOUSE: u64 = 20;
const PER_REQUEST: u64 = 100;
/// par-1's movements are stamped this far ahead: its clock runs fast, by minutes, yet within
/// the 5-minute skew both the agent and the collector accept (beyond it they are refused by
/// rule, which `truth_agent_e2e` and `truth_collector` test).
const SKEW_MS: i64 = 4 * 60_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seeded xorshift64*: the same seed replays the same faults at the same points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A TCP proxy in front of the broker; `cut` drops every connection and refuses new ones
/// until `restore`, like a network outage at one site.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let mut open = open2.lock().unwrap();
                open.push(inbound.try_clone().unwrap());
                open.push(outbound.try_clone().unwrap());
                pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                pipe(outbound, inbound);
            }
        });
        Proxy { port, up, open }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Posts one request until an answer of 2xx, retrying with the same idempotency key through
/// kills, restarts and outages: it is journaled once, whatever the agent answered before.
fn post_until_accepted(url: &str, key: &str, body: &str) {
    let http = http();
    loop {
        let sent = http
            .post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .send(body);
        if let Ok(mut resp) = sent {
            let status = resp.status().as_u16();
            let _ = resp.body_mut().read_to_string();
            if status == 200 || status == 202 {
                return;
            }
            assert!(status >= 500, "request {key} refused with {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The movements one agent posts: `(request bodies, expected total per SKU)`.
fn workload(
    warehouse: &str,
    movements: u64,
    rng: &mut Rng,
) -> (Vec<String>, BTreeMap<String, i64>) {
    let mut expected = BTreeMap::new();
    let mut bodies = Vec::new();
    let skewed = warehouse == "par";
    let mut left = movements;
    while left > 0 {
        let n = left.min(PER_REQUEST);
        left -= n;
        let records: Vec<serde_json::Value> = (0..n)
            .map(|_| {
                let sku = format!("FI-{warehouse}-{:02}", rng.below(SKUS_PER_WAREHOUSE));
                let quantity = 1 + rng.below(5) as i64;
                *expected.entry(sku.clone()).or_insert(0) += quantity;
                let mut r =
                    serde_json::json!({"sku": sku, "kind": "receipt", "quantity": quantity});
                if skewed {
                    let at = jiff::Timestamp::now().as_millisecond() + SKEW_MS;
                    r["occurred_at"] = jiff::Timestamp::from_millisecond(at)
                        .unwrap()
                        .to_string()
                        .into();
                }
                r
            })
            .collect();
        bodies.push(serde_json::Value::Array(records).to_string());
    }
    (bodies, expected)
}

/// A poison message and where its refusal shows up.
struct Poison {
    name: &'static str,
    topic: &'static str,
    payload: Vec<u8>,
    /// Substring of the refusal reason in the collector's (or, for scanners, ams-1's) queue.
    reason: &'static str,
    at_agent: bool,
}

fn movement(seq: u64, warehouse: &str) -> Movement {
    Movement {
        seq,
        sku: Sku("POISON".into()),
        location: Location {
            warehouse: warehouse.into(),
            bin: None,
        },
        source: "wms".into(),
        kind: MovementKind::Receipt,
        quantity: 1,
        unit: "each".into(),
        unit_quantity: 1,
        occurred_at: OccurredAt {
            unix_ms: 1_795_000_000_000,
            offset_seconds: 0,
        },
        references: References::default(),
        external_id: None,
        note: None,
        origin: Default::default(),
    }
}

fn poisons(kind: BrokerKind) -> Vec<Poison> {
    let batch = |agent: &str, warehouse: &str, located: &str, seqs: &[u64]| {
        wire::encode_batch(&Batch {
            agent_id: agent.into(),
            journal_id: 5,
            sent_at_ms: None,
            warehouse: warehouse.into(),
            movements: seqs.iter().map(|s| movement(*s, located)).collect(),
        })
    };
    let mut all = vec![
        Poison {
            name: "forged batch from ber claiming ams-1, seqs 1..10^12",
            topic: "stocksync/v1/ber/movements",
            payload: batch("ams-1", "ams", "ams", &[1, 1_000_000_000_000]),
            reason: "does not match topic",
            at_agent: false,
        },
        Poison {
            name: "`+` in agent_id",
            topic: "stocksync/v1/ams/movements",
            payload: batch("ams+1", "ams", "ams", &[1]),
            reason: "agent_id cannot name an ack topic",
            at_agent: false,
        },
        Poison {
            name: "undecodable",
            topic: "stocksync/v1/par/movements",
            payload: vec![1, 0xff, 0xff, 0xff, 0x00],
            reason: "malformed v1 payload",
            at_agent: false,
        },
        Poison {
            name: "wrong warehouse",
            topic: "stocksync/v1/ams/movements",
            payload: batch("intruder-1", "ams", "ber", &[1]),
            reason: "is located in `ber`",
            at_agent: false,
        },
        Poison {
            name: "invalid scanner message",
            topic: "scanners/ams/9/movements",
            payload: br#"{"sku":"S","kind":"receipt","quantity":"lots"}"#.to_vec(),
            reason: "$.quantity",
            at_agent: true,
        },
    ];
    // Over the packet limit: the embedded broker refuses these at the publisher (its limit
    // equals our clients'); the test's Mosquitto has no limit, so they reach the consumers.
    if kind == BrokerKind::Mosquitto {
        all.push(Poison {
            name: "1.5 MB batch",
            topic: "stocksync/v1/ber/movements",
            payload: vec![1; 1_500_000],
            reason: "exceeds the 1048576-byte limit",
            at_agent: false,
        });
        all.push(Poison {
            name: "1.5 MB scanner message",
            topic: "scanners/ams/9/movements",
            payload: vec![b' '; 1_500_000],
            reason: "exceeds the limit",
            at_agent: true,
        });
    }
    all
}

/// True once `poison` is in its rejects queue.
fn recorded(poison: &Poison, collector: &str, ams: &str) -> bool {
    let (url, key) = if poison.at_agent {
        (
            format!("{ams}/v1/rejects?limit=1000"),
            if poison.reason.starts_with('$') {
                "field"
            } else {
                "detail"
            },
        )
    } else {
        (format!("{collector}/v1/rejects?limit=1000"), "reason")
    };
    let Ok(mut resp) = http().get(&url).call() else {
        return false;
    };
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let Ok(rows) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    rows.as_array().is_some_and(|rows| {
        rows.iter()
            .any(|r| r[key].as_str().is_some_and(|v| v.contains(poison.reason)))
    })
}

fn backlog(agent_url: &str) -> Option<u64> {
    let mut resp = http().get(&format!("{agent_url}/v1/status")).call().ok()?;
    let text = resp.body_mut().read_to_string().ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["backlog"].as_u64()
}

fn on_hand_blocking(collector: &str, sku: &str) -> Option<i64> {
    let mut resp = http()
        .get(&format!("{collector}/v1/stock/{sku}"))
        .call()
        .ok()?;
    let text = resp.body_mut().read_to_string().ok()?;
    Some(
        serde_json::from_str::<serde_json::Value>(&text).ok()?["on_hand"]
            .as_i64()
            .unwrap_or(0),
    )
}

#[derive(Default, Debug)]
struct Kills {
    agents: u32,
    /// The collector, or one of the workers.
    collector: u32,
    broker: u32,
    outages: u32,
}

on_both_backends!(blocking every_movement_counted_once_through_kills_outages_skew_and_poison);
fn every_movement_counted_once_through_kills_outages_skew_and_poison(backend: Backend) {
    let movements = env_or("STOCKSYNC_FAULT_MOVEMENTS", 100_000);
    let spread = Duration::from_secs(env_or("STOCKSYNC_FAULT_SECS", 30));
    let seed = env_or("STOCKSYNC_FAULT_SEED", 1).max(1);
    let mut rng = Rng(seed);
    let dir = TempDir::new("fault");
    let mut broker = Broker::start(&dir);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let Some(mut collectors) = CollectorSpec::new(backend, &dir, broker.port)
        .warehouses(&WAREHOUSES)
        .start_processes()
    else {
        return;
    };
    let c_url = collectors.url().to_string();
    let proxy = Proxy::start(broker.port);
    let mut agents: Vec<Service> = WAREHOUSES
        .iter()
        .map(|wh| {
            let port = free_port();
            let id = format!("{wh}-1");
            // ber-1 reaches the broker through the proxy; ams-1 also reads scanners.
            let broker_port = if *wh == "ber" { proxy.port } else { broker.port };
            let extra = if *wh == "ams" {
                format!(
                    "[scanner]\ntopic = \"scanners/ams/+/movements\"\n[scanner.broker]\nport = {}\nkeep_alive_secs = 5\n",
                    broker.port
                )
            } else {
                String::new()
            };
            let text = agent_toml(&dir, &id, wh, broker_port, port, &extra);
            Service::start(&dir, "stocksync-agent", &id, &text, port)
        })
        .collect();
    let agent_urls: Vec<String> = agents.iter().map(|a| a.url.clone()).collect();

    // Posters: one thread per agent, paced so that posting spans `spread`.
    let per_agent = movements / 3;
    let mut expected = BTreeMap::new();
    let mut posters = Vec::new();
    let posted = Arc::new(AtomicU64::new(0));
    for (i, wh) in WAREHOUSES.iter().enumerate() {
        let n = if i == 2 {
            movements - 2 * per_agent
        } else {
            per_agent
        };
        let (bodies, totals) = workload(wh, n, &mut rng);
        expected.extend(totals);
        let url = format!("{}/v1/movements", agent_urls[i]);
        let pause = spread / bodies.len().max(1) as u32;
        let posted = posted.clone();
        let wh = wh.to_string();
        posters.push(std::thread::spawn(move || {
            for (k, body) in bodies.iter().enumerate() {
                let started = Instant::now();
                post_until_accepted(&url, &format!("{wh}-{k}"), body);
                posted.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(pause.saturating_sub(started.elapsed()));
            }
        }));
    }

    let poisons = poisons(broker.kind);
    let mut next_poison = 0;
    let mut kills = Kills::default();
    let mut max_backlog = 0;
    let mut cut_until: Option<Instant> = None;
    let started = Instant::now();
    while posters.iter().any(|p| !p.is_finished()) || next_poison < poisons.len() {
        std::thread::sleep(Duration::from_millis(500 + rng.below(1500)));
        for url in &agent_urls {
            max_backlog = max_backlog.max(backlog(url).unwrap_or(0));
        }
        if cut_until.is_some_and(|t| Instant::now() > t) {
            proxy.restore();
            cut_until = None;
        }
        match rng.below(6) {
            0 | 1 => {
                let i = rng.below(3) as usize;
                agents[i].kill();
                std::thread::sleep(Duration::from_millis(rng.below(1000)));
                agents[i].restart();
                kills.agents += 1;
            }
            2 => {
                let n = collectors.procs.len();
                let i = if n > 1 {
                    rng.below(n as u64) as usize
                } else {
                    0
                };
                collectors.procs[i].kill();
                std::thread::sleep(Duration::from_millis(rng.below(1000)));
                collectors.procs[i].restart();
                kills.collector += 1;
            }
            3 => {
                broker.restart();
                kills.broker += 1;
            }
            4 if cut_until.is_none() => {
                proxy.cut();
                cut_until = Some(Instant::now() + Duration::from_millis(2000 + rng.below(4000)));
                kills.outages += 1;
            }
            _ if next_poison < poisons.len() => {
                // Published until it is in its queue: a broker restart may lose it in flight.
                let p = &poisons[next_poison];
                let deadline = Instant::now() + Duration::from_secs(60);
                while !recorded(p, &c_url, &agent_urls[0]) {
                    assert!(
                        Instant::now() < deadline,
                        "poison `{}` never recorded",
                        p.name
                    );
                    runtime.block_on(publish_once(
                        broker.port,
                        "poisoner",
                        p.topic,
                        p.payload.clone(),
                    ));
                    let _ = wait_blocking(Duration::from_secs(3), || {
                        recorded(p, &c_url, &agent_urls[0])
                    });
                }
                next_poison += 1;
            }
            _ => {}
        }
    }
    proxy.restore();
    for p in posters {
        p.join().expect("poster");
    }
    let posting = started.elapsed();

    let converging = Instant::now();
    wait_blocking(Duration::from_secs(180), || {
        expected
            .iter()
            .all(|(sku, total)| on_hand_blocking(&c_url, sku) == Some(*total))
            && agent_urls.iter().all(|u| backlog(u) == Some(0))
    })
    .unwrap_or_else(|_| {
        let wrong: Vec<String> = expected
            .iter()
            .filter_map(|(sku, total)| {
                let got = on_hand_blocking(&c_url, sku);
                (got != Some(*total)).then(|| format!("{sku}: {got:?} != {total}"))
            })
            .collect();
        panic!(
            "did not converge: {wrong:?}; backlogs {:?}",
            agent_urls.iter().map(|u| backlog(u)).collect::<Vec<_>>()
        )
    });
    let converge = converging.elapsed();

    // Nothing doubled, nothing lost: the ledger holds each accepted movement once.
    let query =
        "SELECT agent_id, COUNT(*), MAX(seq) FROM ledger GROUP BY agent_id ORDER BY agent_id";
    let rows: Vec<(String, i64, i64)> = match &collectors.pg {
        None => {
            let ledger = rusqlite::Connection::open(dir.join("ledger.db")).unwrap();
            ledger.busy_timeout(Duration::from_secs(10)).unwrap();
            let rows = ledger
                .prepare(query)
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            rows
        }
        Some(pg) => pg
            .query(query)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                (
                    f[0].to_string(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect(),
    };
    let total_rows: i64 = rows.iter().map(|r| r.1).sum();
    assert_eq!(total_rows as u64, movements, "ledger rows: {rows:?}");
    for (agent, count, max_seq) in &rows {
        assert_eq!(count, max_seq, "{agent}: seqs dense, each once");
    }
    for p in &poisons {
        assert!(
            recorded(p, &c_url, &agent_urls[0]),
            "poison `{}` not in a rejects queue",
            p.name
        );
    }
    for url in &collectors.urls {
        let health = http()
            .get(&format!("{url}/healthz"))
            .call()
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(health, 200, "{url}");
    }
    eprintln!(
        "fault injection (seed {seed}, {:?} broker, {backend:?}): {movements} movements in {} requests over {posting:?}; kills {kills:?}; poison messages {}; max backlog {max_backlog}; converged {converge:?} after posting",
        broker.kind,
        posted.load(Ordering::Relaxed),
        poisons.len(),
    );
}

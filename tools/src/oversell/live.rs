//! Strategy (c): the real thing. A collector with its embedded broker and one agent per
//! warehouse run in this process on temporary files; customers see the collector's stock
//! (`GET /v1/stock/<sku>`), checkouts go to `POST /v1/orders` (routed and held), pick waves
//! post shipments carrying the order reference to the warehouse's agent. The simulator only
//! keeps the physical truth to check every accepted allocation against it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use stocksync_collector::Collector;

use super::world::{self, Intent, Item, World, CHANNELS, MARKETS, OUTAGE, PICK_EVERY, WAREHOUSES};
use super::{Tally, Truth};

struct Stack {
    c: String,
    agents: Vec<String>,
    http: ureq::Agent,
}

impl Stack {
    fn post(&self, url: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let mut r = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .send(body.to_string())?;
        Ok((
            r.status().as_u16(),
            r.body_mut().read_json().unwrap_or(Value::Null),
        ))
    }

    fn get(&self, url: &str) -> anyhow::Result<Value> {
        Ok(self.http.get(url).call()?.body_mut().read_json()?)
    }

    fn movements(&self, wh: usize, batch: &[Value]) -> anyhow::Result<()> {
        for chunk in batch.chunks(500) {
            let (status, body) = self.post(&self.agents[wh], &Value::Array(chunk.to_vec()))?;
            anyhow::ensure!(status == 202, "agent refused movements: {status} {body}");
        }
        Ok(())
    }

    fn freeze(&self, wh: usize, on: bool) -> anyhow::Result<()> {
        let url = format!("{}/v1/routing/warehouses/{}", self.c, WAREHOUSES[wh].name);
        self.http
            .put(&url)
            .header("content-type", "application/json")
            .send(json!({"frozen": on, "reason": "network outage"}).to_string())?;
        Ok(())
    }

    fn applied(&self) -> u64 {
        let text = self
            .http
            .get(&format!("{}/metrics", self.c))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("stocksync_movements_applied_total ")
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// What the channel shows: the collector's available at its warehouses, less its buffer.
    fn shown(&self, world: &World, ch: usize, item: Item) -> anyhow::Result<u64> {
        let mut units = u64::MAX;
        for (sku, per) in world.parts(item) {
            let s = self.get(&format!("{}/v1/stock/{}", self.c, world.skus[sku]))?;
            let pool: i64 = s["locations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| {
                    CHANNELS[ch]
                        .warehouses
                        .iter()
                        .any(|w| r["warehouse"] == WAREHOUSES[*w].name)
                })
                .map(|r| r["available"].as_i64().unwrap_or(0))
                .sum();
            units = units.min((pool.max(0) as u64).saturating_sub(CHANNELS[ch].safety_units) / per);
        }
        Ok(units)
    }
}

fn config(world: &World, dir: &std::path::Path, mqtt: u16) -> String {
    let mut t = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[ledger]\npath = {:?}\n[embedded_broker]\nlisten = \"127.0.0.1:{mqtt}\"\n",
        dir.join("ledger.db")
    );
    for s in &world.skus {
        let _ = writeln!(t, "[[catalog.skus]]\nid = \"{s}\"");
    }
    for (name, parts) in &world.bundles {
        let comps: Vec<String> = parts
            .iter()
            .map(|(s, q)| format!("{{ sku = \"{}\", quantity = {q} }}", world.skus[*s]))
            .collect();
        let _ = writeln!(
            t,
            "[[catalog.bundles]]\nsku = \"{name}\"\ncomponents = [{}]",
            comps.join(", ")
        );
    }
    for c in &CHANNELS {
        let whs: Vec<String> = c
            .warehouses
            .iter()
            .map(|w| format!("\"{}\"", WAREHOUSES[*w].name))
            .collect();
        let _ = writeln!(
            t,
            "[[channels.channel]]\nname = \"{}\"\nlocations = [{}]\nsafety_units = {}",
            c.name,
            whs.join(", "),
            c.safety_units
        );
    }
    t += "[orders]\n";
    for w in &WAREHOUSES {
        let _ = writeln!(
            t,
            "[orders.warehouses.{}]\nlat = {}\nlon = {}\ntime_zone = \"{}\"\ncutoff = \"{}\"",
            w.name, w.lat, w.lon, w.time_zone, w.cutoff
        );
    }
    for c in &CHANNELS {
        let whs: Vec<String> = c
            .warehouses
            .iter()
            .map(|w| format!("\"{}\"", WAREHOUSES[*w].name))
            .collect();
        let _ = writeln!(
            t,
            "[[orders.channel]]\nname = \"{}\"\nwarehouses = [{}]\nrules = [\"minimise_splits\", \"closest\", \"ship_today\", \"most_stock\"]",
            c.name,
            whs.join(", ")
        );
    }
    t
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn run(world: &World, name: &str) -> anyhow::Result<Tally> {
    let dir = std::env::temp_dir().join(format!("stocksync-oversell-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mqtt = free_port()?;
    let cfg: stocksync_collector::config::CollectorConfig =
        toml::from_str(&config(world, &dir, mqtt))?;
    let collector = rt.block_on(Collector::start(cfg))?;
    let mut agents = Vec::new();
    let mut urls = Vec::new();
    for w in &WAREHOUSES {
        let text = format!(
            "agent_id = \"{0}-1\"\nwarehouse = \"{0}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[journal]\npath = {1:?}\n[broker]\nhost = \"127.0.0.1\"\nport = {mqtt}\n",
            w.name,
            dir.join(format!("journal-{}.db", w.name))
        );
        let agent = rt.block_on(Agent::start(toml::from_str(&text)?))?;
        urls.push(format!("http://{}/v1/movements", agent.http_addr));
        agents.push(agent);
    }
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let stack = Stack {
        c: format!("http://{}", collector.http_addr),
        agents: urls,
        http,
    };
    let result = day(world, &stack, name);
    for a in agents {
        rt.block_on(a.stop())?;
    }
    rt.block_on(collector.stop())?;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn receipt(world: &World, sku: usize, quantity: u64) -> Value {
    json!({"sku": world.skus[sku], "kind": "receipt", "quantity": quantity, "bin": "A-01"})
}

/// Waits until the collector has counted `n` movements.
fn settle(stack: &Stack, n: u64) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stack.applied() < n {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "collector did not count {n} movements in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn day(world: &World, stack: &Stack, name: &str) -> anyhow::Result<Tally> {
    let mut truth = Truth::new(world);
    let mut sent = 0u64;
    for wh in 0..WAREHOUSES.len() {
        let batch: Vec<Value> = (0..world.skus.len())
            .filter(|s| world.initial[*s][wh] > 0)
            .map(|s| receipt(world, s, world.initial[s][wh]))
            .collect();
        sent += batch.len() as u64;
        stack.movements(wh, &batch)?;
    }
    settle(stack, sent)?;
    let mut tally = Tally::named(name);
    // Per warehouse: movements waiting for the next pick wave or for the link to return,
    // and allocations (order id, SKU, units) to ship at the next wave.
    let mut outbox: Vec<Vec<Value>> = vec![Vec::new(); WAREHOUSES.len()];
    let mut to_ship: Vec<BTreeMap<(String, usize), u64>> = vec![BTreeMap::new(); WAREHOUSES.len()];
    let mut returns: Vec<Vec<Value>> = vec![Vec::new(); WAREHOUSES.len()];
    let (mut next_intent, mut next_receipt) = (0, 0);
    let mut receipts: Vec<&world::Receipt> = world.receipts.iter().collect();
    receipts.sort_by_key(|r| r.minute);
    for minute in 0..1440u32 {
        if minute == OUTAGE.1 {
            stack.freeze(OUTAGE.0, true)?;
        }
        if minute == OUTAGE.2 {
            stack.freeze(OUTAGE.0, false)?;
        }
        while next_receipt < receipts.len() && receipts[next_receipt].minute == minute {
            let r = receipts[next_receipt];
            truth.phys[r.sku][r.warehouse] += r.quantity;
            outbox[r.warehouse].push(receipt(world, r.sku, r.quantity));
            next_receipt += 1;
        }
        if minute % PICK_EVERY == 0 {
            for wh in 0..WAREHOUSES.len() {
                truth.pick(wh);
                for ((order, sku), units) in std::mem::take(&mut to_ship[wh]) {
                    outbox[wh].push(json!({"sku": world.skus[sku], "kind": "shipment", "quantity": units, "bin": "A-01", "order": order}));
                }
                outbox[wh].append(&mut returns[wh]);
            }
        }
        for (wh, out) in outbox.iter_mut().enumerate() {
            if !out.is_empty() && !world::in_outage(wh, minute) {
                stack.movements(wh, &std::mem::take(out))?;
            }
        }
        while next_intent < world.intents.len() && world.intents[next_intent].minute == minute {
            let k = next_intent;
            next_intent += 1;
            let intent = &world.intents[k];
            let mut shown = true;
            for (item, q) in &intent.lines {
                if stack.shown(world, intent.channel, *item)? < *q {
                    shown = false;
                    break;
                }
            }
            if !shown {
                continue;
            }
            checkout(
                world,
                stack,
                &mut truth,
                &mut tally,
                k,
                intent,
                &mut to_ship,
                &mut returns,
            )?;
        }
    }
    Ok(tally)
}

#[allow(clippy::too_many_arguments)]
fn checkout(
    world: &World,
    stack: &Stack,
    truth: &mut Truth,
    tally: &mut Tally,
    k: usize,
    intent: &Intent,
    to_ship: &mut [BTreeMap<(String, usize), u64>],
    returns: &mut [Vec<Value>],
) -> anyhow::Result<()> {
    let id = format!("SIM-{k}");
    let (_, lat, lon) = MARKETS[intent.market];
    let lines: Vec<Value> = intent
        .lines
        .iter()
        .map(|(item, q)| json!({"sku": world.name(*item), "quantity": q}))
        .collect();
    let body = json!({
        "id": id, "channel": CHANNELS[intent.channel].name, "lines": lines,
        "ship_to": {"country": MARKETS[intent.market].0, "lat": lat, "lon": lon},
        "requested_at": world.at(intent.minute).to_string(),
    });
    let (status, answer) = stack.post(&format!("{}/v1/orders", stack.c), &body)?;
    match status {
        201 => {}
        409 => {
            tally.refused += 1;
            return Ok(());
        }
        _ => anyhow::bail!("order {id}: {status} {answer}"),
    }
    let (mut allocs, mut short) = (Vec::new(), 0);
    for (line, l) in answer["lines"].as_array().into_iter().flatten().enumerate() {
        let item = intent.lines[line].0;
        for a in l["allocations"].as_array().into_iter().flatten() {
            let wh = WAREHOUSES
                .iter()
                .position(|w| a["warehouse"] == w.name)
                .expect("a simulated warehouse");
            let units = a["quantity"].as_u64().unwrap_or(0);
            // The check that matters: is what the collector held physically there?
            let there = truth.fits(world, item, wh, units);
            short += units - there;
            truth.take(world, item, wh, there);
            if there > 0 {
                allocs.push((line, wh, there));
            }
            for (sku, per) in world.parts(item) {
                *to_ship[wh].entry((id.clone(), sku)).or_default() += there * per;
            }
        }
    }
    if world.returns[k] {
        if let Some((_, wh, _)) = allocs.first() {
            let sku = world.parts(intent.lines[0].0)[0].0;
            returns[*wh].push(json!({"sku": world.skus[sku], "kind": "return", "quantity": 1, "bin": "A-01", "order": id}));
        }
    }
    tally.accepted(world, intent, &allocs, short);
    Ok(())
}

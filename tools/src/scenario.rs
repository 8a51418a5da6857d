//! What the simulated warehouse floor does: a plausible stream of movements, with the
//! mistakes real scanners make mixed in.
//!
//! Pure and deterministic for a given seed, so it is unit-tested and so a benchmark can
//! replay the same stream. It keeps its own idea of the stock it has put away and never
//! ships or damages more than that, so the demo's numbers stay non-negative and a reader
//! can check them by eye. Invalid and resent messages are deliberate: the agent must refuse
//! the first into its rejects queue and count the second once. Cycle counts report the
//! scenario's own on-hand, except a deliberate miscount now and then (one unit short, with a
//! `note` saying so), which the collector must show as drift or conflict, not absorb.

use serde_json::{json, Value};

/// How often the unusual things happen, as "one message in N" (0 = never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// A record the agent must refuse (bad quantity, unknown kind, missing SKU, unknown unit).
    pub invalid_every: u64,
    /// The previous scanner message sent again with the same `id` (an at-least-once redelivery).
    pub resend_every: u64,
    /// A movement sent by the "WMS" over HTTP instead of by a scanner over MQTT.
    pub http_every: u64,
    /// A cycle count (always by a scanner, so it is journaled after the movements before it).
    pub count_every: u64,
    /// Every Nth count is one unit short.
    pub miscount_every: u64,
    /// Report one receipt in three in cases of this many eaches (needs a catalog with a
    /// `case` pack for every SKU); `None` reports everything in eaches.
    pub case_size: Option<u64>,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            invalid_every: 40,
            resend_every: 25,
            http_every: 5,
            count_every: 30,
            miscount_every: 3,
            case_size: None,
        }
    }
}

/// Which path a message takes to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// JSON on the scanner topic, as a handheld publishes it.
    Scanner,
    /// `POST /v1/movements`, as a WMS integration sends it.
    Http,
}

/// Why a message was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A valid movement, counted once.
    Movement,
    /// A valid movement sent a second time with the same id; must not be counted again.
    Resend,
    /// An invalid record; must land in the agent's rejects queue.
    Invalid,
}

/// One message for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Index of the target (warehouse) it is for.
    pub target: usize,
    pub path: Path,
    pub purpose: Purpose,
    /// The JSON body, exactly as sent.
    pub body: Value,
    /// Idempotency key for the HTTP path (the request's identity for safe retries).
    pub idempotency_key: Option<String>,
}

const BINS: [&str; 2] = ["A-01", "B-01"];

/// The `note` of a deliberate miscount, so the history explains it.
pub const MISCOUNT_NOTE: &str = "demo: deliberate miscount, one unit short";

/// The stream generator.
pub struct Scenario {
    rng: u64,
    /// The seed, in ids, orders and idempotency keys, so two runs against the same journal
    /// do not collide.
    run_tag: u64,
    skus: Vec<String>,
    targets: usize,
    mix: Mix,
    /// Units the scenario has put away per (target, sku, bin) and not yet shipped or damaged.
    stock: Vec<u64>,
    /// Physical units per (target, sku, bin): `stock` plus damaged and returned ones.
    on_hand: Vec<u64>,
    counts: u64,
    /// Per (target, sku, bin): the latest order shipped from there and how many of its units
    /// may still come back, so returns never exceed what their order shipped.
    returnable: Vec<Option<(String, u64)>>,
    sent: u64,
    last_scanner: Option<Message>,
}

impl Scenario {
    /// A scenario over `targets` warehouses and the given SKUs.
    pub fn new(seed: u64, targets: usize, skus: Vec<String>, mix: Mix) -> Scenario {
        assert!(targets > 0 && !skus.is_empty(), "need a target and a SKU");
        Scenario {
            rng: seed | 1,
            run_tag: seed,
            stock: vec![0; targets * skus.len() * BINS.len()],
            on_hand: vec![0; targets * skus.len() * BINS.len()],
            counts: 0,
            returnable: vec![None; targets * skus.len() * BINS.len()],
            skus,
            targets,
            mix,
            sent: 0,
            last_scanner: None,
        }
    }

    /// The next message.
    pub fn next_message(&mut self) -> Message {
        self.sent += 1;
        let n = self.sent;
        let target = self.below(self.targets as u64) as usize;
        if every(self.mix.invalid_every, n) {
            return Message {
                target,
                path: Path::Scanner,
                purpose: Purpose::Invalid,
                body: self.invalid(n),
                idempotency_key: None,
            };
        }
        if every(self.mix.resend_every, n) {
            if let Some(previous) = self.last_scanner.clone() {
                return Message {
                    purpose: Purpose::Resend,
                    ..previous
                };
            }
        }
        let counting = every(self.mix.count_every, n);
        let path = if every(self.mix.http_every, n) && !counting {
            Path::Http
        } else {
            Path::Scanner
        };
        let mut body = if counting {
            self.count(target)
        } else {
            self.movement(target)
        };
        match path {
            Path::Scanner => {
                body["id"] = json!(self.scan_id(n));
                let m = Message {
                    target,
                    path,
                    purpose: Purpose::Movement,
                    body,
                    idempotency_key: None,
                };
                self.last_scanner = Some(m.clone());
                m
            }
            Path::Http => Message {
                target,
                path,
                purpose: Purpose::Movement,
                body: json!([body]),
                idempotency_key: Some(format!("sim-{:x}-{n}", self.run_tag)),
            },
        }
    }

    /// A valid receipt, shipment, damage or return that keeps the scenario's stock >= 0.
    fn movement(&mut self, target: usize) -> Value {
        let (sku, bin, slot) = self.pick_slot(target);
        let have = self.stock[slot];
        let roll = self.below(100);
        let returnable = self.returnable[slot].is_some();
        let (kind, quantity) = if have < 5 || roll < 35 || (roll >= 93 && !returnable) {
            ("receipt", 6 + self.below(25))
        } else if roll < 85 {
            ("shipment", 1 + self.below(have.min(4)))
        } else if roll < 93 {
            ("damage", 1)
        } else {
            ("return", 1)
        };
        match kind {
            "receipt" => {
                self.stock[slot] += quantity;
                self.on_hand[slot] += quantity;
            }
            "shipment" => {
                self.stock[slot] -= quantity;
                self.on_hand[slot] -= quantity;
            }
            "damage" => self.stock[slot] -= quantity,
            // Returns are held for inspection, not put back on the shelf the scenario ships from.
            _ => self.on_hand[slot] += quantity,
        }
        let mut body = json!({
            "sku": self.skus[sku],
            "kind": kind,
            "quantity": quantity,
            "bin": BINS[bin],
        });
        if let Some(case) = self.mix.case_size.filter(|c| *c > 0) {
            if kind == "receipt" && self.below(3) == 0 {
                // Report the same put-away as whole cases: round down and keep the remainder
                // out of the scenario's books.
                let cases = (quantity / case).max(1);
                let diff = quantity as i64 - (cases * case) as i64;
                self.stock[slot] = (self.stock[slot] as i64 - diff) as u64;
                self.on_hand[slot] = (self.on_hand[slot] as i64 - diff) as u64;
                body["quantity"] = json!(cases);
                body["unit"] = json!("case");
            }
        }
        if kind == "shipment" {
            let order = format!("SO-{:x}-{}", self.run_tag & 0xffff_ffff, self.sent);
            body["order"] = json!(order);
            self.returnable[slot] = Some((order, quantity));
        }
        if kind == "return" {
            // A return names the order that shipped this SKU (the agent refuses one without,
            // and the collector flags returns beyond what the order shipped).
            let (order, left) = self.returnable[slot]
                .take()
                .expect("chosen only if returnable");
            body["order"] = json!(order);
            if left > quantity {
                self.returnable[slot] = Some((order, left - quantity));
            }
        }
        body
    }

    /// A cycle count of one bin: its on-hand, or one short for every `miscount_every`th count.
    fn count(&mut self, target: usize) -> Value {
        let (sku, bin, slot) = self.pick_slot(target);
        self.counts += 1;
        let mut body = json!({"sku": self.skus[sku], "kind": "count", "bin": BINS[bin]});
        let short = every(self.mix.miscount_every, self.counts) && self.stock[slot] > 0;
        let counted = if short {
            // The difference of a count lands in `available`, so the books follow it.
            self.stock[slot] -= 1;
            self.on_hand[slot] -= 1;
            body["note"] = json!(MISCOUNT_NOTE);
            self.on_hand[slot]
        } else {
            self.on_hand[slot]
        };
        body["quantity"] = json!(counted);
        body
    }

    fn pick_slot(&mut self, target: usize) -> (usize, usize, usize) {
        let sku = self.below(self.skus.len() as u64) as usize;
        let bin = self.below(BINS.len() as u64) as usize;
        (
            sku,
            bin,
            (target * self.skus.len() + sku) * BINS.len() + bin,
        )
    }

    /// A record with one realistic mistake, rotating through the kinds of mistake.
    fn invalid(&mut self, n: u64) -> Value {
        let pick = self.below(self.skus.len() as u64) as usize;
        let sku = self.skus[pick].clone();
        match (n / self.mix.invalid_every.max(1)) % 4 {
            0 => json!({"sku": sku, "kind": "receipt", "quantity": -3, "id": self.scan_id(n)}),
            1 => json!({"sku": sku, "kind": "teleport", "quantity": 1, "id": self.scan_id(n)}),
            2 => json!({"kind": "shipment", "quantity": 2, "id": self.scan_id(n)}),
            _ => {
                json!({"sku": sku, "kind": "receipt", "quantity": 1, "unit": "pallet", "id": self.scan_id(n)})
            }
        }
    }

    /// A scanner movement id, unique across runs: scanner ids are deduplicated per source at
    /// the agent for `idempotency_days`, so a second demo run on the same journal must not
    /// reuse the first run's ids or its movements would be dropped as duplicates.
    fn scan_id(&self, n: u64) -> String {
        format!("scan-{:x}-{n}", self.run_tag & 0xffff_ffff)
    }

    /// Uniform-enough number in `0..n` (xorshift64*; no crate needed for a demo).
    fn below(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn every(n: u64, i: u64) -> bool {
    n > 0 && i.is_multiple_of(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(mix: Mix) -> Scenario {
        Scenario::new(42, 2, vec!["SKU-1".into(), "SKU-2".into()], mix)
    }

    /// Replays the valid movements with the collector's effects (for a warehouse without an
    /// authority) and checks that stock never goes negative and counts report the books.
    #[test]
    fn books_stay_non_negative_and_counts_match_them() {
        let mut s = scenario(Mix {
            case_size: Some(12),
            ..Mix::default()
        });
        let mut books = std::collections::HashMap::<(usize, String, String), (i64, i64)>::new();
        let (mut counts, mut miscounts, mut cases) = (0, 0, 0);
        let mut returnable = std::collections::HashMap::<(String, String), i64>::new();
        for _ in 0..5_000 {
            let m = s.next_message();
            if m.purpose != Purpose::Movement {
                continue;
            }
            let body = match m.path {
                Path::Http => m.body[0].clone(),
                Path::Scanner => m.body.clone(),
            };
            let key = (
                m.target,
                body["sku"].as_str().unwrap().to_string(),
                body["bin"].as_str().unwrap().to_string(),
            );
            let mut q = body["quantity"].as_i64().unwrap();
            if body["unit"] == "case" {
                q *= 12;
                cases += 1;
            }
            let order_key = (body["order"].to_string(), body["sku"].to_string());
            match body["kind"].as_str().unwrap() {
                "shipment" => *returnable.entry(order_key).or_default() += q,
                "return" => {
                    let left = returnable.entry(order_key).or_default();
                    *left -= q;
                    assert!(*left >= 0, "returned more than the order shipped: {body}");
                }
                _ => {}
            }
            let (available, on_hand) = books.entry(key).or_default();
            match body["kind"].as_str().unwrap() {
                "receipt" => (*available += q, *on_hand += q),
                "shipment" => (*available -= q, *on_hand -= q),
                "damage" => (*available -= q, ()),
                "return" => {
                    assert!(
                        body["order"].is_string(),
                        "a return names its order: {body}"
                    );
                    ((), *on_hand += q)
                }
                "count" => {
                    counts += 1;
                    assert_eq!(m.path, Path::Scanner, "counts go by scanner");
                    let expected = if body["note"] == MISCOUNT_NOTE {
                        miscounts += 1;
                        *on_hand - 1
                    } else {
                        *on_hand
                    };
                    assert_eq!(q, expected, "count reports the books: {body}");
                    *available += q - *on_hand;
                    *on_hand = q;
                    ((), ())
                }
                other => panic!("unexpected kind {other}"),
            };
            assert!(*available >= 0, "stock went negative: {body}");
        }
        assert!(
            counts > 50 && miscounts > 10 && cases > 50,
            "{counts} counts, {miscounts} miscounts, {cases} case receipts"
        );
    }

    #[test]
    fn mixes_in_each_purpose_and_path() {
        let mut s = scenario(Mix::default());
        let messages: Vec<Message> = (0..200).map(|_| s.next_message()).collect();
        let count = |p: Purpose| messages.iter().filter(|m| m.purpose == p).count();
        assert_eq!(count(Purpose::Invalid), 5);
        assert!(count(Purpose::Resend) >= 7);
        assert!(messages.iter().any(|m| m.path == Path::Http));
        for m in messages.iter().filter(|m| m.purpose == Purpose::Resend) {
            assert_eq!(m.path, Path::Scanner);
            assert!(
                m.body["id"].is_string(),
                "a resend keeps its id: {}",
                m.body
            );
        }
    }

    #[test]
    fn quiet_mix_sends_only_valid_scanner_movements() {
        let mut s = scenario(Mix {
            invalid_every: 0,
            resend_every: 0,
            http_every: 0,
            count_every: 0,
            miscount_every: 0,
            case_size: None,
        });
        for _ in 0..500 {
            let m = s.next_message();
            assert_eq!((m.path, m.purpose), (Path::Scanner, Purpose::Movement));
            assert_ne!(m.body["kind"], "count");
            assert!(m.body.get("unit").is_none(), "eaches only: {}", m.body);
        }
    }
}

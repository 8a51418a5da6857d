//! What the simulated warehouse floor does: a plausible stream of movements, with the
//! mistakes real scanners make mixed in.
//!
//! Pure and deterministic for a given seed, so it is unit-tested and so a benchmark can
//! replay the same stream. It keeps its own idea of the stock it has put away and never
//! ships or damages more than that, so the demo's numbers stay non-negative and a reader
//! can check them by eye. Invalid and resent messages are deliberate: the agent must refuse
//! the first into its rejects queue and count the second once.

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
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            invalid_every: 40,
            resend_every: 25,
            http_every: 5,
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

/// The stream generator.
pub struct Scenario {
    rng: u64,
    /// The seed, in idempotency keys, so two runs against the same journal do not collide.
    run_tag: u64,
    skus: Vec<String>,
    targets: usize,
    mix: Mix,
    /// Units the scenario has put away per (target, sku, bin) and not yet shipped or damaged.
    stock: Vec<u64>,
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
        let path = if every(self.mix.http_every, n) {
            Path::Http
        } else {
            Path::Scanner
        };
        let mut body = self.movement(target);
        match path {
            Path::Scanner => {
                body["id"] = json!(format!("scan-{n}"));
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
        let sku = self.below(self.skus.len() as u64) as usize;
        let bin = self.below(BINS.len() as u64) as usize;
        let slot = (target * self.skus.len() + sku) * BINS.len() + bin;
        let have = self.stock[slot];
        let roll = self.below(100);
        let (kind, quantity) = if have < 5 || roll < 35 {
            ("receipt", 6 + self.below(25))
        } else if roll < 85 {
            ("shipment", 1 + self.below(have.min(4)))
        } else if roll < 93 {
            ("damage", 1)
        } else {
            ("return", 1)
        };
        match kind {
            "receipt" => self.stock[slot] += quantity,
            "shipment" | "damage" => self.stock[slot] -= quantity,
            // Returns are held for inspection, not put back on the shelf the scenario ships from.
            _ => {}
        }
        let mut body = json!({
            "sku": self.skus[sku],
            "kind": kind,
            "quantity": quantity,
            "bin": BINS[bin],
        });
        if kind == "shipment" {
            body["order"] = json!(format!("SO-{}", 10_000 + self.sent));
        }
        body
    }

    /// A record with one realistic mistake, rotating through the kinds of mistake.
    fn invalid(&mut self, n: u64) -> Value {
        let pick = self.below(self.skus.len() as u64) as usize;
        let sku = self.skus[pick].clone();
        match (n / self.mix.invalid_every.max(1)) % 4 {
            0 => json!({"sku": sku, "kind": "receipt", "quantity": -3, "id": format!("scan-{n}")}),
            1 => json!({"sku": sku, "kind": "teleport", "quantity": 1, "id": format!("scan-{n}")}),
            2 => json!({"kind": "shipment", "quantity": 2, "id": format!("scan-{n}")}),
            _ => {
                json!({"sku": sku, "kind": "receipt", "quantity": 1, "unit": "pallet", "id": format!("scan-{n}")})
            }
        }
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

    #[test]
    fn never_ships_more_than_it_received() {
        let mut s = scenario(Mix::default());
        let mut level = std::collections::HashMap::<(usize, String, String), i64>::new();
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
            let q = body["quantity"].as_i64().unwrap();
            let entry = level.entry(key).or_default();
            match body["kind"].as_str().unwrap() {
                "receipt" => *entry += q,
                "shipment" | "damage" => *entry -= q,
                _ => {}
            }
            assert!(*entry >= 0, "stock went negative: {body}");
        }
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
        });
        for _ in 0..500 {
            let m = s.next_message();
            assert_eq!((m.path, m.purpose), (Path::Scanner, Purpose::Movement));
        }
    }
}

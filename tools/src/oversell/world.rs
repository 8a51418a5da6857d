//! The simulated day itself: SKUs with a long tail and a few hot items, bundles, stock per
//! warehouse, receipts and the customers' order intents, all drawn from one seed so every
//! strategy faces exactly the same day.

use stocksync_collector::orders::calendar;
use stocksync_collector::orders::config::{Site, WarehouseRouting};

/// A small, fast, seedable generator (splitmix64); the day must not depend on a crate's
/// algorithm choices to stay reproducible across versions.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A warehouse of the day.
pub struct Warehouse {
    pub name: &'static str,
    pub lat: f64,
    pub lon: f64,
    pub time_zone: &'static str,
    pub cutoff: &'static str,
}

pub const WAREHOUSES: [Warehouse; 3] = [
    Warehouse {
        name: "ams",
        lat: 52.37,
        lon: 4.90,
        time_zone: "Europe/Amsterdam",
        cutoff: "15:00",
    },
    Warehouse {
        name: "chi",
        lat: 41.88,
        lon: -87.63,
        time_zone: "America/Chicago",
        cutoff: "14:00",
    },
    Warehouse {
        name: "sin",
        lat: 1.35,
        lon: 103.82,
        time_zone: "Asia/Singapore",
        cutoff: "16:00",
    },
];

/// Where customers live: one place per market.
pub const MARKETS: [(&str, f64, f64); 3] = [
    ("NL", 52.09, 5.12),
    ("US", 40.71, -74.0),
    ("SG", 1.29, 103.85),
];

/// A sales channel: the warehouses it may sell from, a safety buffer and its market mix.
pub struct Channel {
    pub name: &'static str,
    pub warehouses: &'static [usize],
    pub safety_units: u64,
    /// Share of the day's orders.
    pub share: f64,
}

pub const CHANNELS: [Channel; 4] = [
    Channel {
        name: "web",
        warehouses: &[0, 1, 2],
        safety_units: 0,
        share: 0.4,
    },
    Channel {
        name: "marketplace",
        warehouses: &[0, 1, 2],
        safety_units: 2,
        share: 0.3,
    },
    Channel {
        name: "b2b",
        warehouses: &[0, 1],
        safety_units: 0,
        share: 0.1,
    },
    Channel {
        name: "app",
        warehouses: &[0, 1, 2],
        safety_units: 1,
        share: 0.2,
    },
];

/// The warehouse whose network goes down, and when (minutes of the UTC day).
pub const OUTAGE: (usize, u32, u32) = (1, 14 * 60, 16 * 60);
/// Minutes between pick waves (shipments of everything allocated).
pub const PICK_EVERY: u32 = 30;
/// The simulated day (a Wednesday), UTC.
pub const DAY: &str = "2026-11-25";

/// One order line: a SKU (index) or a bundle (index into `bundles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Sku(usize),
    Bundle(usize),
}

/// A customer who wants to buy.
pub struct Intent {
    pub minute: u32,
    pub channel: usize,
    pub market: usize,
    pub lines: Vec<(Item, u64)>,
}

/// A replenishment arriving at a warehouse.
pub struct Receipt {
    pub minute: u32,
    pub warehouse: usize,
    pub sku: usize,
    pub quantity: u64,
}

/// Everything that happens during the day.
pub struct World {
    pub skus: Vec<String>,
    pub bundles: Vec<(String, Vec<(usize, u64)>)>,
    /// Stock at the start of the day, per SKU per warehouse.
    pub initial: Vec<[u64; 3]>,
    pub receipts: Vec<Receipt>,
    pub intents: Vec<Intent>,
    /// Indexes of intents whose first shipped line comes back (to quality control).
    pub returns: Vec<bool>,
    pub sites: Vec<Site>,
}

/// Sizes of the day.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub seed: u64,
    pub skus: usize,
    pub orders: usize,
}

impl World {
    pub fn generate(size: Size) -> World {
        let mut rng = Rng::new(size.seed);
        let n = size.skus.max(10);
        let skus: Vec<String> = (0..n).map(|i| format!("SKU-{i:03}")).collect();
        // Long tail: popularity ~ 1/(rank+1); the first 5 are hot and thinly stocked.
        let weight: Vec<f64> = (0..n).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let total: f64 = weight.iter().sum();
        let units = size.orders as f64 * 1.6;
        let initial = (0..n)
            .map(|i| {
                let expected = units * weight[i] / total;
                let cover = if i < 5 { 0.5 } else { 1.2 + rng.unit() };
                let per = (expected * cover / 3.0).ceil() as u64;
                [0, 1, 2].map(|_| per + rng.below(3))
            })
            .collect();
        let bundles: Vec<(String, Vec<(usize, u64)>)> = (0..8)
            .map(|b| {
                (
                    format!("KIT-{b}"),
                    vec![(b % 5, 1), (5 + rng.below(20) as usize, 1 + rng.below(2))],
                )
            })
            .collect();
        let pick = |rng: &mut Rng| -> usize {
            let mut x = rng.unit() * total;
            for (i, w) in weight.iter().enumerate() {
                x -= w;
                if x <= 0.0 {
                    return i;
                }
            }
            n - 1
        };
        let mut intents = Vec::with_capacity(size.orders);
        for k in 0..size.orders {
            let minute = ((k as f64 + rng.unit()) * 1440.0 / size.orders as f64) as u32;
            let mut x = rng.unit();
            let channel = CHANNELS
                .iter()
                .position(|c| {
                    x -= c.share;
                    x < 0.0
                })
                .unwrap_or(0);
            let market = rng.below(3) as usize;
            let count = 1 + rng.below(3) as usize;
            let lines = (0..count)
                .map(|_| {
                    let item = if rng.unit() < 0.1 {
                        Item::Bundle(rng.below(8) as usize)
                    } else {
                        Item::Sku(pick(&mut rng))
                    };
                    (item, 1 + u64::from(rng.unit() < 0.2))
                })
                .collect();
            intents.push(Intent {
                minute,
                channel,
                market,
                lines,
            });
        }
        let receipts = (0..n.div_ceil(4))
            .map(|_| Receipt {
                minute: 360 + rng.below(720) as u32,
                warehouse: rng.below(3) as usize,
                sku: pick(&mut rng),
                quantity: 2 + rng.below(6),
            })
            .collect();
        let returns = (0..size.orders).map(|_| rng.unit() < 0.03).collect();
        let sites = WAREHOUSES
            .iter()
            .map(|w| {
                let r = WarehouseRouting {
                    time_zone: w.time_zone.into(),
                    cutoff: Some(w.cutoff.into()),
                    ..Default::default()
                };
                Site::parse(w.name, &r).expect("simulation sites are valid")
            })
            .collect();
        World {
            skus,
            bundles,
            initial,
            receipts,
            intents,
            returns,
            sites,
        }
    }

    /// What one unit of `item` takes, per SKU.
    pub fn parts(&self, item: Item) -> Vec<(usize, u64)> {
        match item {
            Item::Sku(i) => vec![(i, 1)],
            Item::Bundle(b) => self.bundles[b].1.clone(),
        }
    }

    /// The catalog name of `item`.
    pub fn name(&self, item: Item) -> &str {
        match item {
            Item::Sku(i) => &self.skus[i],
            Item::Bundle(b) => &self.bundles[b].0,
        }
    }

    /// The instant of `minute` of the day.
    pub fn at(&self, minute: u32) -> jiff::Timestamp {
        let start: jiff::Timestamp = format!("{DAY}T00:00:00Z").parse().expect("valid day");
        start + jiff::SignedDuration::from_mins(i64::from(minute))
    }

    /// True if `warehouse` ships an order placed at `minute` today.
    pub fn same_day(&self, warehouse: usize, minute: u32) -> bool {
        calendar::days_to_ship(&self.sites[warehouse], self.at(minute)) == Some(0)
    }
}

/// Kilometres from a warehouse to a market.
pub fn km(warehouse: usize, market: usize) -> f64 {
    let w = &WAREHOUSES[warehouse];
    let m = MARKETS[market];
    stocksync_collector::orders::haversine_km((w.lat, w.lon), (m.1, m.2))
}

/// True while `warehouse`'s network is down.
pub fn in_outage(warehouse: usize, minute: u32) -> bool {
    warehouse == OUTAGE.0 && (OUTAGE.1..OUTAGE.2).contains(&minute)
}

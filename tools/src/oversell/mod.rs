//! The oversell simulation: one seeded business day (3 warehouses in three time zones, 4
//! channels, a long tail of SKUs with a few hot ones, bundles, receipts, pick waves,
//! returns, a 2-hour network outage of one warehouse), replayed under each way of keeping
//! channels in step, on the same stream of customers.
//!
//! Customers order only what their channel shows them. Whatever a strategy accepts is then
//! checked against the physical truth the simulator keeps (shelf stock less what earlier
//! accepted orders already took); a unit that is not there is an oversold order. The
//! strategies: (a) periodic sync every 15 or 5 minutes, (b) stocksync's live feed without
//! reservation at checkout, (c) stocksync orders routed and held at checkout through the
//! real collector's HTTP API (`live`).

mod live;
mod model;
pub mod world;

use std::fmt::Write;

pub use world::{Size, World};

use world::{Intent, Item, CHANNELS};

/// The physical truth: stock on the shelves and what accepted orders have taken of it
/// (committed, not yet picked).
pub struct Truth {
    pub phys: Vec<[u64; 3]>,
    pub committed: Vec<[u64; 3]>,
}

impl Truth {
    pub fn new(world: &World) -> Truth {
        Truth {
            phys: world.initial.clone(),
            committed: vec![[0; 3]; world.skus.len()],
        }
    }

    pub fn free(&self, sku: usize, wh: usize) -> u64 {
        self.phys[sku][wh] - self.committed[sku][wh]
    }

    /// Units of `item` that warehouse `wh` can still give, at most `want`.
    pub fn fits(&self, world: &World, item: Item, wh: usize, want: u64) -> u64 {
        world
            .parts(item)
            .iter()
            .map(|(s, q)| self.free(*s, wh) / q)
            .fold(want, u64::min)
    }

    pub fn take(&mut self, world: &World, item: Item, wh: usize, units: u64) {
        for (s, q) in world.parts(item) {
            self.committed[s][wh] += units * q;
        }
    }

    /// A pick wave at `wh`: everything committed there leaves the shelf.
    pub fn pick(&mut self, wh: usize) {
        for (p, c) in self.phys.iter_mut().zip(self.committed.iter_mut()) {
            p[wh] -= c[wh];
            c[wh] = 0;
        }
    }
}

/// How one strategy did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub name: String,
    /// Orders the channels accepted.
    pub orders: u64,
    /// Accepted orders with at least one unit that was not there.
    pub oversold: u64,
    /// Oversold orders of which nothing could ship.
    pub cancelled: u64,
    /// Orders refused at checkout (shown, but the hold failed): not oversold.
    pub refused: u64,
    pub splits: u64,
    pub same_day: u64,
    km_sum: f64,
    km_n: u64,
}

impl Tally {
    fn named(name: &str) -> Tally {
        Tally {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Records an accepted order's allocations `(line, warehouse, units)` and its shortfall.
    fn accepted(
        &mut self,
        world: &World,
        intent: &Intent,
        allocs: &[(usize, usize, u64)],
        short: u64,
    ) {
        self.orders += 1;
        if short > 0 {
            self.oversold += 1;
            if allocs.is_empty() {
                self.cancelled += 1;
            }
        }
        let mut whs: Vec<usize> = allocs.iter().map(|a| a.1).collect();
        whs.sort_unstable();
        whs.dedup();
        self.splits += u64::from(whs.len() > 1);
        if !whs.is_empty() && whs.iter().all(|w| world.same_day(*w, intent.minute)) {
            self.same_day += 1;
        }
        for (_, wh, units) in allocs {
            self.km_sum += world::km(*wh, intent.market) * *units as f64;
            self.km_n += units;
        }
    }

    fn oversold_percent(&self) -> f64 {
        100.0 * self.oversold as f64 / self.orders.max(1) as f64
    }
}

/// Runs every strategy on the day of `size`; (c) starts a real collector and agents.
pub fn run(size: Size) -> anyhow::Result<Vec<Tally>> {
    let world = World::generate(size);
    let mut out = modelled(&world);
    out.push(live::run(
        &world,
        "(c) stocksync orders, routed + reserved",
    )?);
    Ok(out)
}

/// Strategies (a) and (b) on `world`: pure functions of the seed.
pub fn modelled(world: &World) -> Vec<Tally> {
    vec![
        model::run(
            world,
            model::View::Periodic(15),
            "(a) periodic sync, 15 min",
        ),
        model::run(world, model::View::Periodic(5), "(a) periodic sync, 5 min"),
        model::run(
            world,
            model::View::Live,
            "(b) stocksync feed, no reservation",
        ),
    ]
}

/// The result as a Markdown table.
pub fn table(size: Size, rows: &[Tally]) -> String {
    let mut s = format!(
        "seed {}, {} SKUs, {} customers, {} channels, 3 warehouses\n\n",
        size.seed,
        size.skus,
        size.orders,
        CHANNELS.len()
    );
    s += "| strategy | orders | oversold | oversold % | cancelled for lack of stock | refused at checkout | split shipments | shipped same day | mean km per unit |\n";
    s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for t in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1}% | {} | {} | {} | {} | {:.0} |",
            t.name,
            t.orders,
            t.oversold,
            t.oversold_percent(),
            t.cancelled,
            t.refused,
            t.splits,
            t.same_day,
            t.km_sum / t.km_n.max(1) as f64
        );
    }
    s
}

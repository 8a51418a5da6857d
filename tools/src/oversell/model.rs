//! Strategies (a) and (b), modelled: what a channel shows is a copy of a stock number
//! that is refreshed now and then, less the channel's own sales since; an accepted order is
//! then allocated by the warehouse system against the physical truth, nearest warehouse
//! first. Neither holds stock at checkout, so two channels can sell the same last unit.

use super::world::{self, Item, World, CHANNELS, PICK_EVERY, WAREHOUSES};
use super::{Tally, Truth};

/// Where a channel's number comes from.
#[derive(Clone, Copy)]
pub enum View {
    /// A batch sync every so many minutes pushes what is free (shelf less open orders).
    Periodic(u32),
    /// stocksync's feed: every counted movement republishes shelf stock at once, but an
    /// order only leaves it when its shipment is counted (no reservation).
    Live,
}

struct Channels {
    /// Per channel and SKU: the number last pushed, and own sales since.
    pushed: Vec<Vec<u64>>,
    sold: Vec<Vec<u64>>,
}

impl Channels {
    fn refresh(&mut self, ch: usize, sku: usize, value: u64) {
        if self.pushed[ch][sku] != value {
            self.pushed[ch][sku] = value;
            self.sold[ch][sku] = 0;
        }
    }

    fn shown(&self, world: &World, ch: usize, item: Item) -> u64 {
        let safety = CHANNELS[ch].safety_units;
        world
            .parts(item)
            .iter()
            .map(|(s, q)| {
                self.pushed[ch][*s]
                    .saturating_sub(self.sold[ch][*s])
                    .saturating_sub(safety)
                    / q
            })
            .min()
            .unwrap_or(0)
    }
}

/// What the system behind the channels believes: receipts and picks at a warehouse whose
/// network is down reach it only when the link is back.
struct Seen {
    shelf: Vec<[u64; 3]>,
}

pub fn run(world: &World, view: View, name: &str) -> Tally {
    let n = world.skus.len();
    let mut truth = Truth::new(world);
    let mut seen = Seen {
        shelf: world.initial.clone(),
    };
    let mut ch = Channels {
        pushed: vec![vec![0; n]; CHANNELS.len()],
        sold: vec![vec![0; n]; CHANNELS.len()],
    };
    let mut pending: Vec<(usize, usize, i64)> = Vec::new(); // (sku, wh, shelf change) not yet seen
    let mut tally = Tally::named(name);
    let (mut next_intent, mut next_receipt) = (0, 0);
    let mut receipts: Vec<&world::Receipt> = world.receipts.iter().collect();
    receipts.sort_by_key(|r| r.minute);
    for minute in 0..1440u32 {
        while next_receipt < receipts.len() && receipts[next_receipt].minute == minute {
            let r = receipts[next_receipt];
            truth.phys[r.sku][r.warehouse] += r.quantity;
            pending.push((r.sku, r.warehouse, r.quantity as i64));
            next_receipt += 1;
        }
        if minute % PICK_EVERY == 0 {
            for wh in 0..WAREHOUSES.len() {
                for sku in 0..n {
                    let c = truth.committed[sku][wh];
                    if c > 0 {
                        pending.push((sku, wh, -(c as i64)));
                    }
                }
                truth.pick(wh);
            }
        }
        pending.retain(|(sku, wh, d)| {
            let visible = !world::in_outage(*wh, minute);
            if visible {
                seen.shelf[*sku][*wh] = (seen.shelf[*sku][*wh] as i64 + d) as u64;
            }
            !visible
        });
        let refresh = match view {
            View::Periodic(every) => minute % every == 0,
            View::Live => true,
        };
        if refresh {
            push(world, view, &truth, &seen, &mut ch);
        }
        while next_intent < world.intents.len() && world.intents[next_intent].minute == minute {
            let intent = &world.intents[next_intent];
            next_intent += 1;
            if intent
                .lines
                .iter()
                .any(|(item, q)| ch.shown(world, intent.channel, *item) < *q)
            {
                continue; // the customer sees it sold out and does not order
            }
            for (item, q) in &intent.lines {
                for (s, per) in world.parts(*item) {
                    ch.sold[intent.channel][s] += q * per;
                }
            }
            let (allocs, short) = allocate(world, &mut truth, intent);
            tally.accepted(world, intent, &allocs, short);
        }
    }
    tally
}

fn push(world: &World, view: View, truth: &Truth, seen: &Seen, ch: &mut Channels) {
    for (c, channel) in CHANNELS.iter().enumerate() {
        for sku in 0..world.skus.len() {
            let value = channel
                .warehouses
                .iter()
                .map(|wh| match view {
                    // What the ERP knows is free: seen shelf less open orders.
                    View::Periodic(_) => {
                        seen.shelf[sku][*wh].saturating_sub(truth.committed[sku][*wh])
                    }
                    View::Live => seen.shelf[sku][*wh],
                })
                .sum();
            ch.refresh(c, sku, value);
        }
    }
}

/// The warehouse system allocates an accepted order, nearest warehouse first; what is not
/// on any shelf is the shortfall.
fn allocate(
    world: &World,
    truth: &mut Truth,
    intent: &world::Intent,
) -> (Vec<(usize, usize, u64)>, u64) {
    let mut whs: Vec<usize> = CHANNELS[intent.channel].warehouses.to_vec();
    whs.sort_by(|a, b| world::km(*a, intent.market).total_cmp(&world::km(*b, intent.market)));
    let (mut allocs, mut short) = (Vec::new(), 0);
    for (line, (item, q)) in intent.lines.iter().enumerate() {
        let mut left = *q;
        for wh in &whs {
            let k = truth.fits(world, *item, *wh, left);
            if k > 0 {
                truth.take(world, *item, *wh, k);
                allocs.push((line, *wh, k));
                left -= k;
            }
        }
        short += left;
    }
    (allocs, short)
}

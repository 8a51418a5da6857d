//! What each movement kind does to the stock states of a (SKU, location).
//!
//! This is the movement-effect table of `docs/MOVEMENTS.md` as code, kept pure so it can be
//! tested row by row. `on_hand` (physical) is never stored on its own: it is
//! `available + reserved + damaged + quality_control`, so the states cannot disagree with it.
//! `in_transit` and `incoming` are not physical at the location and are not part of it.

use stocksync_common::model::{Direction, InspectionOutcome, Location, Movement, MovementKind};

/// The stock states of one (SKU, location).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct States {
    pub available: i64,
    pub reserved: i64,
    pub damaged: i64,
    pub quality_control: i64,
    pub in_transit: i64,
    pub incoming: i64,
}

impl States {
    /// Physical stock at the location.
    pub fn on_hand(&self) -> i64 {
        self.available + self.reserved + self.damaged + self.quality_control
    }

    /// Takes another delta off this one.
    pub fn sub(&mut self, d: &States) {
        self.available -= d.available;
        self.reserved -= d.reserved;
        self.damaged -= d.damaged;
        self.quality_control -= d.quality_control;
        self.in_transit -= d.in_transit;
        self.incoming -= d.incoming;
    }

    /// Adds another delta to this one.
    pub fn add(&mut self, d: &States) {
        self.available += d.available;
        self.reserved += d.reserved;
        self.damaged += d.damaged;
        self.quality_control += d.quality_control;
        self.in_transit += d.in_transit;
        self.incoming += d.incoming;
    }
}

/// A change to one location's states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub location: Location,
    pub delta: States,
}

/// How a movement changes stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Relative changes, possibly at more than one location (a transfer also touches its peer).
    Deltas(Vec<Effect>),
    /// An absolute count of physical stock at the movement's location.
    Count { on_hand: i64 },
}

/// Where returns are held before inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnsTo {
    QualityControl,
    Available,
}

/// The change a movement makes. `returns_to` is the location's returns policy.
pub fn change(m: &Movement, returns_to: ReturnsTo) -> Change {
    let q = m.quantity as i64;
    let here = |delta: States| Effect {
        location: m.location.clone(),
        delta,
    };
    let one = |delta: States| Change::Deltas(vec![here(delta)]);
    let s = States::default;
    match &m.kind {
        MovementKind::Receipt | MovementKind::Cancellation => one(States {
            available: q,
            ..s()
        }),
        MovementKind::Shipment => one(States {
            available: -q,
            ..s()
        }),
        MovementKind::Adjustment {
            direction: Direction::Increase,
            ..
        } => one(States {
            available: q,
            ..s()
        }),
        MovementKind::Adjustment {
            direction: Direction::Decrease,
            ..
        } => one(States {
            available: -q,
            ..s()
        }),
        MovementKind::Count => Change::Count { on_hand: q },
        MovementKind::TransferOut => {
            let mut effects = vec![here(States {
                available: -q,
                ..s()
            })];
            if let Some(peer) = &m.references.peer_warehouse {
                effects.push(Effect {
                    location: Location {
                        warehouse: peer.clone(),
                        bin: None,
                    },
                    delta: States {
                        in_transit: q,
                        ..s()
                    },
                });
            }
            Change::Deltas(effects)
        }
        MovementKind::TransferIn => {
            let mut effects = vec![here(States {
                available: q,
                ..s()
            })];
            if m.references.peer_warehouse.is_some() {
                effects.push(Effect {
                    location: Location {
                        warehouse: m.location.warehouse.clone(),
                        bin: None,
                    },
                    delta: States {
                        in_transit: -q,
                        ..s()
                    },
                });
            }
            Change::Deltas(effects)
        }
        MovementKind::Return => match returns_to {
            ReturnsTo::QualityControl => one(States {
                quality_control: q,
                ..s()
            }),
            ReturnsTo::Available => one(States {
                available: q,
                ..s()
            }),
        },
        MovementKind::Damage => one(States {
            available: -q,
            damaged: q,
            ..s()
        }),
        MovementKind::Inspection {
            outcome: InspectionOutcome::Available,
        } => one(States {
            quality_control: -q,
            available: q,
            ..s()
        }),
        MovementKind::Inspection {
            outcome: InspectionOutcome::Damaged,
        } => one(States {
            quality_control: -q,
            damaged: q,
            ..s()
        }),
        MovementKind::WriteOff => one(States { damaged: -q, ..s() }),
        MovementKind::Expected => one(States { incoming: q, ..s() }),
    }
}

/// Applies a count to current states: the difference lands in `available`, the other
/// physical states are taken as they are. Returns the delta applied.
pub fn count_delta(current: &States, counted_on_hand: i64) -> States {
    States {
        available: counted_on_hand - current.on_hand(),
        ..States::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksync_common::model::*;

    fn mv(kind: MovementKind, q: u64) -> Movement {
        Movement {
            seq: 1,
            sku: Sku("S".into()),
            location: Location {
                warehouse: "ams".into(),
                bin: Some("A".into()),
            },
            source: "wms".into(),
            kind,
            quantity: q,
            unit: "each".into(),
            unit_quantity: q,
            occurred_at: OccurredAt {
                unix_ms: 0,
                offset_seconds: 0,
            },
            references: References::default(),
            external_id: None,
            note: None,
            origin: Default::default(),
        }
    }

    fn delta(kind: MovementKind) -> States {
        match change(&mv(kind, 5), ReturnsTo::QualityControl) {
            Change::Deltas(mut e) => e.remove(0).delta,
            Change::Count { .. } => panic!("not a delta"),
        }
    }

    #[test]
    fn every_kind_has_its_documented_effect() {
        let s = States::default;
        assert_eq!(
            delta(MovementKind::Receipt),
            States {
                available: 5,
                ..s()
            }
        );
        assert_eq!(
            delta(MovementKind::Shipment),
            States {
                available: -5,
                ..s()
            }
        );
        assert_eq!(
            delta(MovementKind::Cancellation),
            States {
                available: 5,
                ..s()
            }
        );
        assert_eq!(
            delta(MovementKind::Adjustment {
                direction: Direction::Increase,
                reason: "x".into()
            }),
            States {
                available: 5,
                ..s()
            }
        );
        assert_eq!(
            delta(MovementKind::Adjustment {
                direction: Direction::Decrease,
                reason: "x".into()
            }),
            States {
                available: -5,
                ..s()
            }
        );
        assert_eq!(
            delta(MovementKind::TransferOut),
            States {
                available: -5,
                ..s()
            }
        );
        assert_eq!(
            delta(MovementKind::TransferIn),
            States {
                available: 5,
                ..s()
            }
        );
        assert_eq!(
            delta(MovementKind::Return),
            States {
                quality_control: 5,
                ..s()
            }
        );
        assert_eq!(
            delta(MovementKind::Damage),
            States {
                available: -5,
                damaged: 5,
                ..s()
            }
        );
        assert_eq!(
            delta(MovementKind::Inspection {
                outcome: InspectionOutcome::Available
            }),
            States {
                quality_control: -5,
                available: 5,
                ..s()
            }
        );
        assert_eq!(
            delta(MovementKind::Inspection {
                outcome: InspectionOutcome::Damaged
            }),
            States {
                quality_control: -5,
                damaged: 5,
                ..s()
            }
        );
        assert_eq!(delta(MovementKind::WriteOff), States { damaged: -5, ..s() });
        assert_eq!(delta(MovementKind::Expected), States { incoming: 5, ..s() });
        assert_eq!(
            change(&mv(MovementKind::Count, 7), ReturnsTo::QualityControl),
            Change::Count { on_hand: 7 }
        );
    }

    #[test]
    fn transfers_touch_the_peer_in_transit() {
        let mut out = mv(MovementKind::TransferOut, 4);
        out.references.peer_warehouse = Some("ber".into());
        let Change::Deltas(e) = change(&out, ReturnsTo::QualityControl) else {
            panic!()
        };
        assert_eq!(
            e[1].location,
            Location {
                warehouse: "ber".into(),
                bin: None
            }
        );
        assert_eq!(e[1].delta.in_transit, 4);
    }

    #[test]
    fn returns_follow_the_location_policy_and_transfer_in_clears_in_transit() {
        let r = change(&mv(MovementKind::Return, 3), ReturnsTo::Available);
        let Change::Deltas(e) = r else { panic!() };
        assert_eq!(
            e[0].delta,
            States {
                available: 3,
                ..States::default()
            }
        );
        let mut inbound = mv(MovementKind::TransferIn, 4);
        inbound.references.peer_warehouse = Some("ber".into());
        let Change::Deltas(e) = change(&inbound, ReturnsTo::QualityControl) else {
            panic!()
        };
        assert_eq!(e[0].delta.available, 4);
        assert_eq!(
            e[1].location,
            Location {
                warehouse: "ams".into(),
                bin: None
            }
        );
        assert_eq!(e[1].delta.in_transit, -4);
    }

    #[test]
    fn a_count_moves_the_difference_into_available() {
        let current = States {
            available: 3,
            damaged: 2,
            ..States::default()
        };
        assert_eq!(count_delta(&current, 10).available, 5);
    }
}

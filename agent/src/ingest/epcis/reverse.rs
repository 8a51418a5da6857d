//! `errorDeclaration`: "the event with this eventID was wrong". Its effect is undone with
//! compensating movements journaled beside the original, so the ledger shows the mistake
//! and its correction instead of silently losing either.
//!
//! An error declaration repeats the original event, so the original's movements are
//! journaled with it (under their original ids): if the original was counted before they
//! are duplicates and skipped, if it arrives later it is the duplicate. Either way it
//! counts once and is reversed once, whatever the arrival order. Kinds whose effect no
//! combination of movements undoes exactly (counts, transfers to a named peer, inspections)
//! are refused, naming `errorDeclaration`: a count is corrected by counting again.

use crate::input::{InputKind, MovementInput};
use stocksync_common::model::{Direction, InspectionOutcome};

use super::decode::{refuse, Refusal};
use super::map::Draft;

/// The movements that undo `drafts`, each numbered under its original's id.
pub fn compensations(
    drafts: &[Draft],
    path: &str,
    event_id: &str,
    reason: Option<&str>,
) -> Result<Vec<Draft>, Refusal> {
    let why = format!(
        "EPCIS errorDeclaration of {event_id}{}",
        reason.map(|r| format!(" ({r})")).unwrap_or_default()
    );
    let mut out = Vec::new();
    for d in drafts {
        let steps = undo(&d.input).ok_or_else(|| {
            refuse(
                format!("{path}.errorDeclaration"),
                format!(
                    "a {} cannot be reversed by compensating movements; correct it with a count",
                    kind_name(d.input.kind)
                ),
            )
        })?;
        for (k, (kind, direction, outcome)) in steps.into_iter().enumerate() {
            let mut input = d.input.clone();
            input.kind = kind;
            input.direction = direction;
            input.outcome = outcome;
            input.reason =
                direction.map(|_| why.chars().take(crate::input::MAX_TEXT_LEN).collect());
            input.id = d.input.id.as_ref().map(|id| format!("{id}:r{k}"));
            input.note = Some(why.chars().take(crate::input::MAX_TEXT_LEN).collect());
            out.push(Draft { input, ..d.clone() });
        }
    }
    Ok(out)
}

type Step = (InputKind, Option<Direction>, Option<InspectionOutcome>);

/// Movements whose effects sum to minus the effect of `m` (see `docs/MOVEMENTS.md`).
fn undo(m: &MovementInput) -> Option<Vec<Step>> {
    let increase = (InputKind::Adjustment, Some(Direction::Increase), None);
    let decrease = (InputKind::Adjustment, Some(Direction::Decrease), None);
    Some(match m.kind {
        InputKind::Receipt | InputKind::Cancellation => vec![decrease],
        InputKind::Shipment => vec![increase],
        InputKind::TransferIn | InputKind::TransferOut if m.peer_warehouse.is_some() => {
            return None
        }
        InputKind::TransferIn => vec![decrease],
        InputKind::TransferOut => vec![increase],
        // +quality_control: release it to available, then take it away.
        InputKind::Return => vec![
            (
                InputKind::Inspection,
                None,
                Some(InspectionOutcome::Available),
            ),
            decrease,
        ],
        // available -> damaged: write the damaged off, put it back as available.
        InputKind::Damage => vec![(InputKind::WriteOff, None, None), increase],
        // -damaged: add it as available, then move it to damaged.
        InputKind::WriteOff => vec![increase, (InputKind::Damage, None, None)],
        InputKind::Count | InputKind::Inspection | InputKind::Adjustment | InputKind::Expected => {
            return None
        }
    })
}

fn kind_name(kind: InputKind) -> &'static str {
    match kind {
        InputKind::Count => "count",
        InputKind::Inspection => "inspection",
        InputKind::TransferIn => "transfer_in to or from a named warehouse",
        InputKind::TransferOut => "transfer_out to a named warehouse",
        _ => "movement of this kind",
    }
}

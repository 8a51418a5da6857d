//! The bytes an agent and the collector exchange over MQTT.
//!
//! Every payload starts with the wire version as a postcard varint, followed by the
//! postcard encoding of that version's message. A reader that meets a version it does not
//! know refuses it with [`WireError::UnknownVersion`] and the caller keeps the raw payload
//! (it is never dropped): an agent upgraded before the collector must not lose stock.
//!
//! Compatibility rule: a v1 payload decodes forever. Changing any v1 type's fields needs a
//! new version; golden vectors under `tests/golden/` fail CI otherwise. Version 2 is v1 plus
//! fields appended at the end of `Batch` (`sent_at_ms`, before the movements) and of each
//! `Movement` (its [`Origin`]); a v2 movement's bytes are therefore its v1 bytes followed by
//! the origin, which is how [`decode_movement`] tells the two apart without a tag.

use serde::{Deserialize, Serialize};

use crate::model::{Movement, Origin};

/// The version this build writes for batches.
pub const VERSION: u16 = 2;
/// The version acks are written in: the ack did not change in v2.
pub const ACK_VERSION: u16 = 1;

/// A batch of movements from one agent, in journal order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub agent_id: String,
    /// Random id the agent's journal got when it was created. A journal that was wiped and
    /// recreated restarts its seqs; the collector refuses a new journal id for a known agent
    /// rather than mistake fresh movements for duplicates.
    pub journal_id: u64,
    pub warehouse: String,
    pub movements: Vec<Movement>,
    /// When the agent sent the batch, by its own clock (v2; `None` for v1). The collector
    /// compares it with its receive time to show each agent's clock skew.
    #[serde(skip)]
    pub sent_at_ms: Option<i64>,
}

impl Batch {
    /// The inclusive seq range this batch covers, if it is not empty.
    pub fn seq_range(&self) -> Option<(u64, u64)> {
        let first = self.movements.first()?.seq;
        let last = self.movements.last()?.seq;
        Some((first, last))
    }
}

/// The collector's answer to one batch, sent only after its durable commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub agent_id: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub outcome: AckOutcome,
}

/// What the collector did with an acknowledged batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckOutcome {
    /// Committed to the ledger; `duplicates` of the movements had been applied before.
    Applied { applied: u32, duplicates: u32 },
    /// Durably recorded in the collector's rejects queue instead of the ledger.
    Rejected { reason: String },
}

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("empty payload")]
    Empty,
    #[error(
        "wire version {version} is unknown to this build (it reads up to {VERSION}); payload kept"
    )]
    UnknownVersion { version: u64 },
    #[error("malformed v{version} payload: {source}")]
    Malformed {
        version: u64,
        #[source]
        source: postcard::Error,
    },
}

/// Encodes a batch as a v2 payload (a missing `sent_at_ms` is written as 0, "unknown").
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = batch.movements.iter().map(encode_movement).collect();
    encode_batch_from_parts(
        &batch.agent_id,
        batch.journal_id,
        &batch.warehouse,
        batch.sent_at_ms.unwrap_or(0),
        parts.iter().map(Vec::as_slice),
    )
}

/// Encodes a batch as a v1 payload, as agents before v2 did (origins and send time are lost).
pub fn encode_batch_v1(batch: &Batch) -> Vec<u8> {
    encode(1, batch)
}

/// Encodes one movement the way it appears inside a v2 batch: its v1 bytes, then its
/// origin. The agent journals these bytes so that forwarding is concatenation.
pub fn encode_movement(movement: &Movement) -> Vec<u8> {
    // Sized once for a typical movement: growing from empty reallocated and copied the
    // bytes several times per movement, a tenth of the agent's journal writer.
    let out = Vec::with_capacity(MOVEMENT_BYTES);
    let out = postcard::to_extend(movement, out).expect("movement serialises");
    postcard::to_extend(&movement.origin, out).expect("origin serialises")
}

/// Room reserved for one encoded movement; longer ones grow as needed.
const MOVEMENT_BYTES: usize = 256;

/// Builds a v2 batch payload from movements already encoded with [`encode_movement`].
/// The result is byte-identical to [`encode_batch`] of the decoded movements.
pub fn encode_batch_from_parts<'a>(
    agent_id: &str,
    journal_id: u64,
    warehouse: &str,
    sent_at_ms: i64,
    movements: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = postcard::to_stdvec(&VERSION).expect("u16 serialises");
    out.extend(postcard::to_stdvec(agent_id).expect("str serialises"));
    out.extend(postcard::to_stdvec(&journal_id).expect("u64 serialises"));
    out.extend(postcard::to_stdvec(warehouse).expect("str serialises"));
    out.extend(postcard::to_stdvec(&sent_at_ms).expect("i64 serialises"));
    out.extend(postcard::to_stdvec(&(movements.len() as u64)).expect("u64 serialises"));
    for bytes in movements {
        out.extend_from_slice(bytes);
    }
    out
}

/// Decodes a batch payload of any version this build knows.
pub fn decode_batch(payload: &[u8]) -> Result<Batch, WireError> {
    decode_batch_with_parts(payload).map(|r| r.batch)
}

/// A decoded batch with the byte range of each movement inside its payload, so that the
/// collector stores each movement's bytes as received instead of encoding it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub batch: Batch,
    pub parts: Vec<std::ops::Range<usize>>,
}

/// Like [`decode_batch`], also returning where each movement's bytes are in `payload`.
pub fn decode_batch_with_parts(payload: &[u8]) -> Result<Received, WireError> {
    if payload.is_empty() {
        return Err(WireError::Empty);
    }
    let malformed = |version, source| WireError::Malformed { version, source };
    let (version, rest) = postcard::take_from_bytes::<u64>(payload).map_err(|e| malformed(0, e))?;
    if version != 1 && version != 2 {
        return Err(WireError::UnknownVersion { version });
    }
    let m = |e| malformed(version, e);
    let (agent_id, rest) = postcard::take_from_bytes::<String>(rest).map_err(m)?;
    let (journal_id, rest) = postcard::take_from_bytes::<u64>(rest).map_err(m)?;
    let (warehouse, rest) = postcard::take_from_bytes::<String>(rest).map_err(m)?;
    let (sent_at_ms, rest) = if version == 2 {
        let (t, rest) = postcard::take_from_bytes::<i64>(rest).map_err(m)?;
        ((t != 0).then_some(t), rest)
    } else {
        (None, rest)
    };
    let (count, mut rest) = postcard::take_from_bytes::<u64>(rest).map_err(m)?;
    // Every movement takes more than one byte: a count beyond the payload is malformed, and
    // checking it first keeps a hostile count from reserving memory.
    if count > rest.len() as u64 {
        return Err(m(postcard::Error::DeserializeUnexpectedEnd));
    }
    let mut movements = Vec::with_capacity(count as usize);
    let mut parts = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let start = payload.len() - rest.len();
        let (mut mv, mut tail) = postcard::take_from_bytes::<Movement>(rest).map_err(m)?;
        if version == 2 {
            let (origin, t) = postcard::take_from_bytes::<Origin>(tail).map_err(m)?;
            mv.origin = origin;
            tail = t;
        }
        parts.push(start..payload.len() - tail.len());
        movements.push(mv);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(m(postcard::Error::DeserializeBadEncoding));
    }
    Ok(Received {
        batch: Batch {
            agent_id,
            journal_id,
            warehouse,
            movements,
            sent_at_ms,
        },
        parts,
    })
}

/// Decodes one stored movement, v1 bytes or v2 bytes. Unambiguous because v2 only appends:
/// the v1 fields of either parse the same, and what is left is nothing (v1) or exactly one
/// origin (v2); anything else is an error.
pub fn decode_movement(bytes: &[u8]) -> Result<Movement, postcard::Error> {
    let (mut movement, tail) = postcard::take_from_bytes::<Movement>(bytes)?;
    if tail.is_empty() {
        return Ok(movement);
    }
    let (origin, tail) = postcard::take_from_bytes::<Origin>(tail)?;
    if !tail.is_empty() {
        return Err(postcard::Error::DeserializeBadEncoding);
    }
    movement.origin = origin;
    Ok(movement)
}

/// Encodes an ack (unchanged since v1, so written as v1).
pub fn encode_ack(ack: &Ack) -> Vec<u8> {
    encode(ACK_VERSION, ack)
}

/// Decodes an ack payload.
pub fn decode_ack(payload: &[u8]) -> Result<Ack, WireError> {
    if payload.is_empty() {
        return Err(WireError::Empty);
    }
    let (version, rest) = postcard::take_from_bytes::<u64>(payload)
        .map_err(|source| WireError::Malformed { version: 0, source })?;
    if version != u64::from(ACK_VERSION) {
        return Err(WireError::UnknownVersion { version });
    }
    let (message, tail) = postcard::take_from_bytes::<Ack>(rest)
        .map_err(|source| WireError::Malformed { version, source })?;
    if !tail.is_empty() {
        return Err(WireError::Malformed {
            version,
            source: postcard::Error::DeserializeBadEncoding,
        });
    }
    Ok(message)
}

fn encode<T: Serialize>(version: u16, message: &T) -> Vec<u8> {
    let mut out = postcard::to_stdvec(&version).expect("u16 serialises");
    out.extend(postcard::to_stdvec(message).expect("message serialises"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    pub(crate) fn sample(seq: u64) -> Movement {
        Movement {
            seq,
            sku: Sku("SKU-1".into()),
            location: Location {
                warehouse: "ams".into(),
                bin: Some("A-01".into()),
            },
            source: "wms".into(),
            kind: MovementKind::Adjustment {
                direction: Direction::Decrease,
                reason: "breakage".into(),
            },
            quantity: 24,
            unit: "case".into(),
            unit_quantity: 2,
            occurred_at: OccurredAt {
                unix_ms: 1_795_000_000_000,
                offset_seconds: 3600,
            },
            references: References {
                order: Some("O-1".into()),
                ..Default::default()
            },
            external_id: None,
            note: None,
            origin: Origin {
                input: "scanner:scanners/ams/gun-7/movements".into(),
                validated: false,
            },
        }
    }

    #[test]
    fn parts_encoding_equals_struct_encoding() {
        let batch = Batch {
            agent_id: "a1".into(),
            journal_id: 77,
            warehouse: "ams".into(),
            movements: vec![sample(1), sample(2)],
            sent_at_ms: Some(1_795_000_000_123),
        };
        let parts: Vec<Vec<u8>> = batch.movements.iter().map(encode_movement).collect();
        let joined = encode_batch_from_parts(
            "a1",
            77,
            "ams",
            1_795_000_000_123,
            parts.iter().map(Vec::as_slice),
        );
        assert_eq!(joined, encode_batch(&batch));
        assert_eq!(decode_batch(&joined).unwrap(), batch);
    }

    #[test]
    fn parts_are_the_movements_own_bytes() {
        let batch = Batch {
            agent_id: "a1".into(),
            journal_id: 77,
            warehouse: "ams".into(),
            movements: vec![sample(1), sample(2)],
            sent_at_ms: Some(1_795_000_000_123),
        };
        let payload = encode_batch(&batch);
        let received = decode_batch_with_parts(&payload).unwrap();
        assert_eq!(received.batch, batch);
        for (m, range) in batch.movements.iter().zip(&received.parts) {
            assert_eq!(&payload[range.clone()], encode_movement(m).as_slice());
        }
        assert!(decode_batch_with_parts(&payload[..payload.len() - 1]).is_err());
    }

    #[test]
    fn unknown_version_is_named() {
        let mut payload = encode_batch(&Batch {
            agent_id: "a".into(),
            journal_id: 1,
            warehouse: "w".into(),
            movements: vec![],
            sent_at_ms: None,
        });
        payload[0] = 3;
        assert!(matches!(
            decode_batch(&payload),
            Err(WireError::UnknownVersion { version: 3 })
        ));
        assert!(matches!(decode_batch(&[]), Err(WireError::Empty)));
    }

    #[test]
    fn v1_still_decodes_with_a_default_origin() {
        let mut batch = Batch {
            agent_id: "a1".into(),
            journal_id: 77,
            warehouse: "ams".into(),
            movements: vec![sample(1)],
            sent_at_ms: Some(5),
        };
        let v1 = encode_batch_v1(&batch);
        assert_eq!(v1[0], 1);
        let received = decode_batch_with_parts(&v1).unwrap();
        batch.sent_at_ms = None;
        batch.movements[0].origin = Origin::default();
        assert_eq!(received.batch, batch);
        let stored = &v1[received.parts[0].clone()];
        assert_eq!(decode_movement(stored).unwrap(), batch.movements[0]);
        let v2 = encode_movement(&sample(1));
        assert_eq!(decode_movement(&v2).unwrap(), sample(1));
        assert!(decode_movement(&[v2.as_slice(), &[0]].concat()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode_batch(&bytes);
            let _ = decode_batch_with_parts(&bytes);
            let _ = decode_ack(&bytes);
        }
    }
}

//! The bytes an agent and the collector exchange over MQTT.
//!
//! Every payload starts with the wire version as a postcard varint, followed by the
//! postcard encoding of that version's message. A reader that meets a version it does not
//! know refuses it with [`WireError::UnknownVersion`] and the caller keeps the raw payload
//! (it is never dropped): an agent upgraded before the collector must not lose stock.
//!
//! Compatibility rule: a v1 payload decodes forever. Changing any v1 type's fields needs a
//! new version; golden vectors under `tests/golden/` fail CI otherwise.

use serde::{Deserialize, Serialize};

use crate::model::Movement;

/// The version this build writes.
pub const VERSION: u16 = 1;

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

/// Encodes a batch as a v1 payload.
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    encode(batch)
}

/// Encodes one movement the way it appears inside a batch; the agent journals these bytes so
/// that forwarding is concatenation, not re-encoding.
pub fn encode_movement(movement: &Movement) -> Vec<u8> {
    postcard::to_stdvec(movement).expect("movement serialises")
}

/// Builds a v1 batch payload from movements already encoded with [`encode_movement`].
/// The result is byte-identical to [`encode_batch`] of the decoded movements.
pub fn encode_batch_from_parts<'a>(
    agent_id: &str,
    journal_id: u64,
    warehouse: &str,
    movements: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = postcard::to_stdvec(&VERSION).expect("u16 serialises");
    out.extend(postcard::to_stdvec(agent_id).expect("str serialises"));
    out.extend(postcard::to_stdvec(&journal_id).expect("u64 serialises"));
    out.extend(postcard::to_stdvec(warehouse).expect("str serialises"));
    out.extend(postcard::to_stdvec(&(movements.len() as u64)).expect("u64 serialises"));
    for bytes in movements {
        out.extend_from_slice(bytes);
    }
    out
}

/// Decodes a batch payload of any version this build knows.
pub fn decode_batch(payload: &[u8]) -> Result<Batch, WireError> {
    decode(payload)
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
    if version != u64::from(VERSION) {
        return Err(WireError::UnknownVersion { version });
    }
    let (agent_id, rest) =
        postcard::take_from_bytes::<String>(rest).map_err(|e| malformed(version, e))?;
    let (journal_id, rest) =
        postcard::take_from_bytes::<u64>(rest).map_err(|e| malformed(version, e))?;
    let (warehouse, rest) =
        postcard::take_from_bytes::<String>(rest).map_err(|e| malformed(version, e))?;
    let (count, mut rest) =
        postcard::take_from_bytes::<u64>(rest).map_err(|e| malformed(version, e))?;
    // Every movement takes more than one byte: a count beyond the payload is malformed, and
    // checking it first keeps a hostile count from reserving memory.
    if count > rest.len() as u64 {
        return Err(malformed(
            version,
            postcard::Error::DeserializeUnexpectedEnd,
        ));
    }
    let mut movements = Vec::with_capacity(count as usize);
    let mut parts = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let start = payload.len() - rest.len();
        let (m, tail) =
            postcard::take_from_bytes::<Movement>(rest).map_err(|e| malformed(version, e))?;
        parts.push(start..payload.len() - tail.len());
        movements.push(m);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(malformed(version, postcard::Error::DeserializeBadEncoding));
    }
    Ok(Received {
        batch: Batch {
            agent_id,
            journal_id,
            warehouse,
            movements,
        },
        parts,
    })
}

/// Decodes one journaled movement.
pub fn decode_movement(bytes: &[u8]) -> Result<Movement, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// Encodes an ack as a v1 payload.
pub fn encode_ack(ack: &Ack) -> Vec<u8> {
    encode(ack)
}

/// Decodes an ack payload.
pub fn decode_ack(payload: &[u8]) -> Result<Ack, WireError> {
    decode(payload)
}

fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut out = postcard::to_stdvec(&VERSION).expect("u16 serialises");
    out.extend(postcard::to_stdvec(message).expect("message serialises"));
    out
}

fn decode<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, WireError> {
    if payload.is_empty() {
        return Err(WireError::Empty);
    }
    let (version, rest) = postcard::take_from_bytes::<u64>(payload)
        .map_err(|source| WireError::Malformed { version: 0, source })?;
    if version != u64::from(VERSION) {
        return Err(WireError::UnknownVersion { version });
    }
    let (message, tail) = postcard::take_from_bytes::<T>(rest)
        .map_err(|source| WireError::Malformed { version, source })?;
    if !tail.is_empty() {
        return Err(WireError::Malformed {
            version,
            source: postcard::Error::DeserializeBadEncoding,
        });
    }
    Ok(message)
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
        }
    }

    #[test]
    fn parts_encoding_equals_struct_encoding() {
        let batch = Batch {
            agent_id: "a1".into(),
            journal_id: 77,
            warehouse: "ams".into(),
            movements: vec![sample(1), sample(2)],
        };
        let parts: Vec<Vec<u8>> = batch.movements.iter().map(encode_movement).collect();
        let joined = encode_batch_from_parts("a1", 77, "ams", parts.iter().map(Vec::as_slice));
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
        });
        payload[0] = 2;
        assert!(matches!(
            decode_batch(&payload),
            Err(WireError::UnknownVersion { version: 2 })
        ));
        assert!(matches!(decode_batch(&[]), Err(WireError::Empty)));
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

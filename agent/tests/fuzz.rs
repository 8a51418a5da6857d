//! Fuzzing on stable Rust: the decoders that read bytes from the network and from senders
//! (the wire decoder, the movement JSON decoder) get large random inputs and mutations of a
//! corpus of valid ones. They live with the agent because the movement JSON decoder is the
//! agent's (`stocksync_agent::input`); the wire decoder is `stocksync_common::wire`. Each must return an error or a value, never panic, and never
//! allocate far beyond its input (a hostile length prefix must not reserve gigabytes).
//!
//! CI runs the default case count as part of `cargo test`. A long run:
//!
//! ```sh
//! PROPTEST_CASES=1000000 cargo test --release -p stocksync-agent --test fuzz
//! ```
//!
//! A failing case is shrunk and saved to `agent/tests/fuzz.proptest-regressions`; keep that
//! file in git so the case is replayed first on every later run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use stocksync_agent::input::{self, BaseUnitOnly, Context};
use stocksync_common::model::OccurredAt;
use stocksync_common::wire;

/// Records the largest single allocation made by the current thread.
struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Runs `f` and fails if one allocation in it exceeded what `input_len` bytes can justify.
fn bounded<T>(input_len: usize, f: impl FnOnce() -> T) -> T {
    LARGEST.with(|l| l.set(0));
    let out = f();
    let largest = LARGEST.with(Cell::get);
    // A decoded movement is a few hundred bytes in memory for at least 30 on the wire.
    let bound = input_len * 512 + 64 * 1024;
    assert!(
        largest <= bound,
        "{largest}-byte allocation for {input_len} input bytes"
    );
    out
}

fn hex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn wire_corpus() -> Vec<Vec<u8>> {
    vec![
        hex(include_str!("../../tests/golden/batch_v1.hex")),
        hex(include_str!("../../tests/golden/ack_v1_0.hex")),
        hex(include_str!("../../tests/golden/ack_v1_1.hex")),
    ]
}

const JSON_CORPUS: &[&str] = &[
    r#"{"sku":"MUG-001","kind":"receipt","quantity":12,"bin":"A-01"}"#,
    r#"[{"sku":"A","kind":"shipment","quantity":1,"order":"o-1","id":"x1"},{"sku":"B","kind":"count","quantity":0}]"#,
    r#"{"sku":"A","kind":"adjustment","direction":"decrease","reason":"shrink","quantity":3,"occurred_at":"2026-11-27T08:00:00+01:00"}"#,
    r#"{"sku":"A","kind":"transfer_out","quantity":2,"transfer":"t-9","peer_warehouse":"ber","unit":"each","note":"ok"}"#,
    r#"{"sku":"A","kind":"inspection","outcome":"damaged","quantity":1,"warehouse":"ams","source":"scanner"}"#,
];

/// One edit of a corpus entry.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    Splice(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..32).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Splice(a, b)),
    ]
}

fn mutate(mut bytes: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match edit {
            Mutation::Flip(i, b) => {
                if let Some(x) = bytes.get_mut(i % len) {
                    *x ^= b | 1;
                }
            }
            Mutation::Insert(i, b) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let at = i % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
            // Repeat a slice of the input: long length prefixes, duplicated records.
            Mutation::Splice(a, b) => {
                let (a, b) = (a % len, b % len);
                let (from, to) = (a.min(b), a.max(b).min(bytes.len()));
                let copy = bytes[from..to].to_vec();
                bytes.splice(from..from, copy);
            }
        }
    }
    bytes
}

/// Decodes `bytes` every way the collector and the agent do; checks what a success promises.
fn decode_wire(bytes: &[u8]) {
    bounded(bytes.len(), || {
        if let Ok(received) = wire::decode_batch_with_parts(bytes) {
            assert_eq!(received.parts.len(), received.batch.movements.len());
            for (range, m) in received.parts.iter().zip(&received.batch.movements) {
                let again = wire::decode_movement(&bytes[range.clone()]).expect("part decodes");
                assert_eq!(&again, m);
            }
        }
        let _ = wire::decode_batch(bytes);
        let _ = wire::decode_ack(bytes);
    });
}

fn decode_json(bytes: &[u8]) {
    let sources = ["wms".to_string(), "scanner".to_string()];
    let ctx = Context {
        warehouse: "ams",
        default_source: "wms",
        now: OccurredAt {
            unix_ms: 1_795_000_000_000,
            offset_seconds: 0,
        },
        max_batch: 1000,
        units: &BaseUnitOnly,
        input: "http",
        sources: &sources,
        validated: true,
        // The corpus is dated in 2026 against a clock at 1970 in one context: no skew limit.
        clock: input::ClockRule {
            max_ahead_ms: i64::MAX,
            clamp: false,
        },
    };
    bounded(bytes.len(), || {
        if let Ok(movements) = input::parse_body(bytes, &ctx) {
            assert!(!movements.is_empty() && movements.len() <= 1000);
            for m in &movements {
                assert_eq!(m.location.warehouse, "ams");
            }
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: ProptestConfig::default().cases.max(2000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_wire_decoder_survives_random_bytes(
        version in 0u8..4,
        body in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        // Most inputs start with a known version byte, so the decoder gets past the first check.
        let mut bytes = vec![version];
        bytes.extend(body);
        decode_wire(&bytes);
    }

    #[test]
    fn the_wire_decoder_survives_mutated_valid_payloads(
        which in 0usize..3,
        edits in proptest::collection::vec(mutation(), 1..8),
    ) {
        let bytes = mutate(wire_corpus()[which].clone(), &edits);
        decode_wire(&bytes);
    }

    #[test]
    fn the_movement_json_decoder_survives_random_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        decode_json(&body);
    }

    #[test]
    fn the_movement_json_decoder_survives_mutated_valid_bodies(
        which in 0usize..JSON_CORPUS.len(),
        edits in proptest::collection::vec(mutation(), 1..8),
    ) {
        let bytes = mutate(JSON_CORPUS[which].as_bytes().to_vec(), &edits);
        decode_json(&bytes);
    }
}

#[test]
fn the_corpus_is_valid_so_mutations_start_from_real_inputs() {
    let corpus = wire_corpus();
    assert!(wire::decode_batch(&corpus[0]).is_ok());
    assert!(wire::decode_ack(&corpus[1]).is_ok());
    assert!(wire::decode_ack(&corpus[2]).is_ok());
    let sources = ["wms".to_string(), "scanner".to_string()];
    let ctx = Context {
        warehouse: "ams",
        default_source: "wms",
        now: OccurredAt {
            unix_ms: 0,
            offset_seconds: 0,
        },
        max_batch: 1000,
        units: &BaseUnitOnly,
        input: "http",
        sources: &sources,
        validated: true,
        // The corpus is dated in 2026 against a clock at 1970 in one context: no skew limit.
        clock: input::ClockRule {
            max_ahead_ms: i64::MAX,
            clamp: false,
        },
    };
    for body in JSON_CORPUS {
        input::parse_body(body.as_bytes(), &ctx).unwrap_or_else(|e| panic!("{body}: {e:?}"));
    }
}

#[test]
fn a_hostile_length_prefix_reserves_nothing() {
    // v1 batch: agent "a", journal 1, warehouse "w", then a movement count of u64::MAX.
    let mut bytes = vec![1, 1, b'a', 1, 1, b'w'];
    bytes.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    decode_wire(&bytes);
    // A string length of 2^63 in place of the agent id.
    let bytes = [
        1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, b'a',
    ];
    decode_wire(&bytes);
}

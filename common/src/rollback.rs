//! How the collector tells an agent that its journal went back in time.
//!
//! A journal restored from a backup, or whose WAL was lost, hands out seqs again that the
//! collector has already applied. Deduplication by `(agent_id, seq)` would then drop new
//! movements as "duplicates" of old ones. The collector compares each reused seq's bytes with
//! the ones it stored; when they differ it refuses the batch with the reason built here, and
//! the agent reads the two numbers back from it to stop and, on the operator's word, move its
//! new movements past the collector's last seq (`stocksync-agent accept-rollback`). The
//! reason is text because the v1 ack is frozen; its format is part of the wire contract.

/// Start of the `Rejected` reason for a reused seq.
pub const PREFIX: &str = "seq reused with different content";

/// The `Rejected` reason: `first_differing` is the first seq of the batch whose bytes differ
/// from the collector's; `collector_last` the highest seq the collector has for the agent.
pub fn reason(agent_id: &str, first_differing: u64, collector_last: u64) -> String {
    format!(
        "{PREFIX}: agent `{agent_id}` sent seq {first_differing} again with other content (the collector has seqs up to {collector_last}); its journal was rolled back or restored from a backup"
    )
}

/// `(first_differing, collector_last)` from a reason built by [`reason`].
pub fn parse(reason: &str) -> Option<(u64, u64)> {
    let rest = reason.strip_prefix(PREFIX)?;
    let first = number_after(rest, "sent seq ")?;
    let last = number_after(rest, "has seqs up to ")?;
    Some((first, last))
}

fn number_after(text: &str, marker: &str) -> Option<u64> {
    let start = text.find(marker)? + marker.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_carries_both_seqs() {
        assert_eq!(parse(&reason("ams-1", 301, 1000)), Some((301, 1000)));
        assert_eq!(parse("warehouse `x` does not match"), None);
        assert_eq!(parse(&format!("{PREFIX}: garbage")), None);
    }
}

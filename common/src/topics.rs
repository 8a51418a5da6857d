//! MQTT topic names, in one place so the agent, the collector and the broker ACLs in
//! `deploy/` cannot drift apart.

/// Prefix of every stocksync topic; the `v1` is the topic layout version, not the wire version.
pub const PREFIX: &str = "stocksync/v1";

/// Retained topic the collector publishes the catalog on (JSON); every agent subscribes.
pub const CATALOG: &str = "stocksync/v1/catalog";

/// Topic an agent publishes its movement batches to.
pub fn movements(warehouse: &str) -> String {
    format!("{PREFIX}/{warehouse}/movements")
}

/// Filter the collector subscribes to for every warehouse's batches.
pub const MOVEMENTS_FILTER: &str = "stocksync/v1/+/movements";

/// Topic the collector acknowledges one agent's batches on.
pub fn acks(warehouse: &str, agent_id: &str) -> String {
    format!("{PREFIX}/{warehouse}/acks/{agent_id}")
}

/// Longest warehouse or agent id that may name a topic level.
pub const MAX_LEVEL_BYTES: usize = 128;

/// Checks that `level` can stand as one topic level of a topic we publish to: not empty, no
/// wildcard (`+`, `#`), no separator (`/`), no NUL or control character, at most
/// [`MAX_LEVEL_BYTES`]. Ids from a payload are checked before they name an ack topic, because
/// a client refuses to publish to an invalid topic.
pub fn check_level(level: &str) -> Result<(), String> {
    if level.is_empty() {
        return Err("empty".into());
    }
    if level.len() > MAX_LEVEL_BYTES {
        return Err(format!("{} bytes, at most {MAX_LEVEL_BYTES}", level.len()));
    }
    match level
        .chars()
        .find(|c| matches!(c, '+' | '#' | '/') || c.is_control())
    {
        Some(c) => Err(format!("contains {c:?}")),
        None => Ok(()),
    }
}

/// The warehouse named by a movements topic, if the topic has that shape.
pub fn warehouse_of_movements_topic(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let (warehouse, tail) = rest.split_once('/')?;
    (tail == "movements" && !warehouse.is_empty()).then_some(warehouse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn movements_topic_round_trips() {
        assert_eq!(warehouse_of_movements_topic(&movements("ams")), Some("ams"));
        assert_eq!(
            warehouse_of_movements_topic("stocksync/v1/ams/acks/a1"),
            None
        );
        assert_eq!(warehouse_of_movements_topic("other/v1/ams/movements"), None);
    }

    #[test]
    fn ids_that_cannot_be_a_topic_level_are_refused() {
        assert!(check_level("ams-1").is_ok());
        for bad in ["", "a+b", "#", "a/b", "a\0b", &"x".repeat(129)] {
            assert!(check_level(bad).is_err(), "{bad:?}");
        }
    }
}

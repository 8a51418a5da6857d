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

/// Topic an agent forwards the records it refused on (see `agent_reject`).
pub fn rejects(warehouse: &str, agent_id: &str) -> String {
    format!("{PREFIX}/{warehouse}/rejects/{agent_id}")
}

/// Topic the collector sends one agent commands on (retry a reject).
pub fn commands(warehouse: &str, agent_id: &str) -> String {
    format!("{PREFIX}/{warehouse}/commands/{agent_id}")
}

/// Filter the collector subscribes to for every agent's refused records.
pub const REJECTS_FILTER: &str = "stocksync/v1/+/rejects/+";

/// The `(warehouse, agent)` a rejects topic names, if the topic has that shape.
pub fn of_rejects_topic(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let (warehouse, tail) = rest.split_once('/')?;
    let agent = tail.strip_prefix("rejects/")?;
    (check_level(warehouse).is_ok() && check_level(agent).is_ok()).then_some((warehouse, agent))
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
    fn rejects_topic_round_trips() {
        assert_eq!(
            of_rejects_topic(&rejects("ams", "ams-1")),
            Some(("ams", "ams-1"))
        );
        assert_eq!(of_rejects_topic("stocksync/v1/ams/rejects/a/b"), None);
        assert_eq!(of_rejects_topic("stocksync/v1/ams/movements"), None);
        assert_eq!(of_rejects_topic("stocksync/v1//rejects/a"), None);
    }

    #[test]
    fn ids_that_cannot_be_a_topic_level_are_refused() {
        assert!(check_level("ams-1").is_ok());
        for bad in ["", "a+b", "#", "a/b", "a\0b", &"x".repeat(129)] {
            assert!(check_level(bad).is_err(), "{bad:?}");
        }
    }
}

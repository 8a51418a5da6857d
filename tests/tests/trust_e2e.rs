//! Trust no sender, end to end: what a hostile or broken publisher can do to the message
//! path. A forged batch must not make another agent drop movements, a poison message must
//! not stop (or wedge) a consumer, and a rolled-back journal must not lose movements silently.

mod support;

use std::time::Duration;

use stocksync_agent::Agent;
use stocksync_collector::Collector;
use stocksync_common::model::*;
use stocksync_common::wire::{self, Ack, AckOutcome, Batch};
use support::*;

fn movement(seq: u64, warehouse: &str, sku: &str) -> Movement {
    Movement {
        seq,
        sku: Sku(sku.into()),
        location: Location {
            warehouse: warehouse.into(),
            bin: None,
        },
        source: "wms".into(),
        kind: MovementKind::Receipt,
        quantity: 1,
        unit: "each".into(),
        unit_quantity: 1,
        occurred_at: OccurredAt {
            unix_ms: 1_795_000_000_000,
            offset_seconds: 0,
        },
        references: References::default(),
        external_id: None,
        note: None,
    }
}

async fn status(a_url: &str) -> serde_json::Value {
    get(&format!("{a_url}/v1/status")).await.body
}

/// Issue 10, item 1: with its own topic (the ACL allows it), ber-1 publishes a batch that
/// claims to be ams-1's with seqs 1..10^12. Before the fix the collector answered
/// `Rejected` on ams-1's ack topic and ams-1 marked every unacknowledged movement refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_forged_by_another_warehouse_cannot_make_an_agent_drop_movements() {
    const N: usize = 2000;
    let dir = TempDir::new("forged");
    let broker = Broker::start(&dir);
    let config = collector_config(&dir, broker.port, 0);
    // Once, so that the broker keeps the collector's session while it is stopped.
    let collector = Collector::start(config.clone()).await.unwrap();
    let c_url = format!("http://{}", collector.http_addr);
    wait_for("collector connected", Duration::from_secs(10), || async {
        metric(&c_url, "stocksync_broker_connected").await == 1
    })
    .await;
    collector.stop().await.unwrap();

    // Ten movements in flight at a time: the rest are journaled, not yet sent, when the
    // forged answers arrive; those are the ones an obeyed forged ack would drop.
    let extra = "[forward]\nbatch_max = 10\nmax_inflight_batches = 1\n";
    let agent_toml = agent_toml(&dir, "ams-1", "ams", broker.port, 0, extra);
    let agent = Agent::start(toml_config(&agent_toml)).await.unwrap();
    let a_url = format!("http://{}", agent.http_addr);
    wait_for("agent connected", Duration::from_secs(10), || async {
        status(&a_url).await["broker"] == "connected"
    })
    .await;
    for body in receipt_batches(N, 500, &["F"]) {
        assert_eq!(
            post(&format!("{a_url}/v1/movements"), &body, &[])
                .await
                .status,
            202
        );
    }

    let mut attacker = MqttProbe::connect(broker.port, "ber-1").await;
    attacker.subscribe("stocksync/v1/ber/acks/ams-1").await;
    let forged = Batch {
        agent_id: "ams-1".into(),
        journal_id: 1,
        warehouse: "ams".into(),
        movements: vec![
            movement(1, "ams", "F"),
            movement(1_000_000_000_000, "ams", "F"),
        ],
    };
    attacker
        .publish("stocksync/v1/ber/movements", wire::encode_batch(&forged))
        .await;
    // The same harm sent straight to ams-1's ack topic (a broker without ACLs, or another
    // agent of the same warehouse): the agent must ignore ranges it never sent.
    for outcome in [
        AckOutcome::Rejected {
            reason: "forged".into(),
        },
        AckOutcome::Applied {
            applied: 1,
            duplicates: 0,
        },
    ] {
        let ack = Ack {
            agent_id: "ams-1".into(),
            first_seq: 1,
            last_seq: 1_000_000_000_000,
            outcome,
        };
        attacker
            .publish("stocksync/v1/ams/acks/ams-1", wire::encode_ack(&ack))
            .await;
    }
    wait_for("forged acks ignored", Duration::from_secs(10), || async {
        status(&a_url).await["acks_ignored"] == 2
    })
    .await;
    assert_eq!(
        status(&a_url).await["backlog"],
        N,
        "nothing marked acknowledged"
    );

    let collector = Collector::start(config).await.unwrap();
    let c_url = format!("http://{}", collector.http_addr);
    wait_for(
        "every movement counted",
        Duration::from_secs(60),
        || async { on_hand(&c_url, "F").await == N as i64 },
    )
    .await;
    wait_for("backlog drained", Duration::from_secs(30), || async {
        status(&a_url).await["backlog"] == 0
    })
    .await;
    let s = status(&a_url).await;
    assert_eq!(s["refused_by_collector"], 0, "{s}");

    // The forged batch is kept and answered on the topic's warehouse, where no ams agent listens.
    let rejects = get(&format!("{c_url}/v1/rejects")).await.body;
    assert!(
        rejects[0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not match topic"),
        "{rejects}"
    );
    assert_eq!(metric(&c_url, "stocksync_batches_rejected_total").await, 1);
    let answer = wire::decode_ack(&attacker.next(Duration::from_secs(10)).await.payload).unwrap();
    assert!(
        matches!(answer.outcome, AckOutcome::Rejected { .. }),
        "{answer:?}"
    );
    agent.stop().await.unwrap();
    collector.stop().await.unwrap();
}

//! The PostgreSQL outbox through the real binary: rows inserted by "the app" with psql, in
//! transactions that commit or roll back, relayed to WebSocket clients exactly once, also when
//! the relaying node is killed in the middle of a batch.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use std::collections::BTreeMap;

use common::*;
use switchboard_testkit::{Gateway, Postgres, Redis};

fn durable(pg: &Postgres) -> switchboard_testkit::GatewayBuilder {
    builder()
        .env("DATABASE_URL", pg.url())
        .env(UNLIMITED_RATE.0, UNLIMITED_RATE.1)
}

async fn rows(pg: &Postgres, sql: &str) -> String {
    pg.psql(sql).await.unwrap().trim().to_owned()
}

/// The app's own transaction: `statements`, then COMMIT or ROLLBACK.
async fn transaction(pg: &Postgres, statements: &str, commit: bool) {
    let end = if commit { "COMMIT" } else { "ROLLBACK" };
    pg.psql(&format!("BEGIN; {statements}; {end};"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_committed_row_is_delivered_once_a_rolled_back_one_never_and_a_bad_one_is_kept() {
    let pg = Postgres::start().await.unwrap();
    let gw = durable(&pg).start().await.unwrap();
    let mut bob = connect(&gw, "bob").await;
    bob.create_room("orders").await.unwrap();

    transaction(
        &pg,
        "INSERT INTO switchboard_outbox (room, content) VALUES ('orders', 'never happened')",
        false,
    )
    .await;
    transaction(
        &pg,
        "INSERT INTO switchboard_outbox (room, content, sender_id, sender_name) \
         VALUES ('orders', 'order 7 shipped', 'shop', 'The Shop'); \
         INSERT INTO switchboard_outbox (room, content) VALUES ('nowhere', 'lost?')",
        true,
    )
    .await;
    let message = next_message(&mut bob).await;
    assert_eq!(
        (
            message.seq,
            message.content.as_str(),
            message.sender.id.as_str(),
            message.sender.name.as_str()
        ),
        (1, "order 7 shipped", "shop", "The Shop")
    );
    assert!(message.client_msg_id.starts_with("outbox-"));
    assert_quiet(&mut bob).await;
    // The relayed row is gone; the one for a room that does not exist stays, marked failed.
    let left = rows(
        &pg,
        "SELECT room, failed_at IS NOT NULL, error FROM switchboard_outbox ORDER BY id",
    )
    .await;
    assert_eq!(left, "nowhere|t|room nowhere does not exist");
    assert_eq!(
        rows(&pg, "SELECT count(*) FROM messages WHERE room = 'orders'").await,
        "1"
    );
    assert_eq!(
        gw.metric("switchboard_outbox_failed_total").await.unwrap(),
        Some(1.0)
    );
}

#[tokio::test]
async fn rows_relayed_by_a_node_killed_mid_batch_are_delivered_once_each_in_order() {
    let pg = Postgres::start().await.unwrap();
    let redis = Redis::start().await.unwrap();
    let node = |name: &str, relay: bool| {
        durable(&pg)
            .name(name)
            .env("SWITCHBOARD_NODE_ID", name)
            .env("REDIS_URL", redis.url())
            .env("SWITCHBOARD_OUTBOX_RELAY", relay.to_string())
    };
    // Bob listens on a node that does not relay; the relay runs on the node that gets killed.
    let listener = node("listener", false).start().await.unwrap();
    let mut relay: Gateway = node("relay", true).start().await.unwrap();
    let mut bob = connect(&listener, "bob").await;
    bob.create_room("feed").await.unwrap();

    let total = 1_500;
    transaction(
        &pg,
        &format!(
            "INSERT INTO switchboard_outbox (room, content) \
             SELECT 'feed', 'item ' || n FROM generate_series(1, {total}) AS n"
        ),
        true,
    )
    .await;
    // Whenever the relay is under way (a message just arrived), kill it without warning and
    // start it again: three times, so that some kill lands between a batch's append and the
    // commit of its deletion, the case that would deliver twice without idempotent appends.
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    for _ in 0..3 {
        let message = next_message(&mut bob).await;
        assert!(seen.insert(message.seq, message.content).is_none());
        relay.kill_hard().await.unwrap();
        relay = relay.same_ports().start().await.unwrap();
    }

    while seen.len() < total {
        let message = next_message(&mut bob).await;
        assert!(
            seen.insert(message.seq, message.content.clone()).is_none(),
            "seq {} arrived twice",
            message.seq
        );
    }
    assert_quiet(&mut bob).await;
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=total as u64).collect::<Vec<_>>()
    );
    // Rows are appended in id order: item n has seq n.
    assert!(
        seen.iter()
            .all(|(seq, content)| *content == format!("item {seq}"))
    );
    assert_eq!(
        rows(
            &pg,
            "SELECT count(*), count(DISTINCT client_msg_id) FROM messages WHERE room = 'feed'"
        )
        .await,
        format!("{total}|{total}")
    );
    assert_eq!(
        rows(&pg, "SELECT count(*) FROM switchboard_outbox").await,
        "0"
    );
}

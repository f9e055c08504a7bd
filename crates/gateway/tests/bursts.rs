//! A client's burst of sends: the `message:send` frames a client queued up are stored together
//! (one commit on PostgreSQL) and answered exactly as if they had come one at a time — every
//! request answered in order, other requests in between in their place, every member given
//! each message once, in seq order.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use common::*;
use switchboard_protocol::{AckResult, ClientFrame, ErrorCode, ServerFrame};
use switchboard_testkit::{Gateway, Postgres, Redis};

const SENDS: u64 = 40;

/// What a reply says, in a form a test can compare: `(id, seq)` of a sent message, or the
/// refusal's code, or a pong.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Sent { id: u64, seq: u64, duplicate: bool },
    Refused { id: u64, code: ErrorCode },
    Pong { id: u64 },
}

fn reply(frame: ServerFrame) -> Reply {
    match frame {
        ServerFrame::Ack {
            id,
            result: Some(AckResult::Sent { seq, duplicate, .. }),
            ..
        } => Reply::Sent { id, seq, duplicate },
        ServerFrame::Ack {
            id,
            error: Some(error),
            ..
        } => Reply::Refused {
            id,
            code: error.code,
        },
        ServerFrame::Pong { id: Some(id) } => Reply::Pong { id },
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Alice writes 20 sends, a ping, an empty send, 20 more sends and a retry of the first, all in
/// one write; bob is a member of the room.
async fn a_burst_is_answered_in_order_with_other_requests_in_place(gw: &Gateway) {
    let mut alice = connect(gw, "alice").await;
    alice.create_room("general").await.unwrap();
    let mut bob = connect(gw, "bob").await;
    bob.join_room("general").await.unwrap();
    // alice is told bob joined; drained so that only replies follow.
    alice
        .recv_until(|f| matches!(f, ServerFrame::UserJoinedRoom { .. }))
        .await
        .unwrap();

    let key = |n: u64| format!("burst-{n}");
    let mut frames: Vec<ClientFrame> = (1..=20)
        .map(|n| message_send(100 + n, "general", &format!("m{n}"), &key(n)))
        .collect();
    frames.push(ClientFrame::Ping { id: Some(200) });
    frames.push(message_send(201, "general", "   ", &key(999)));
    frames
        .extend((21..=SENDS).map(|n| message_send(300 + n, "general", &format!("m{n}"), &key(n))));
    frames.push(message_send(400, "general", "m1", &key(1)));
    alice.send_all(&frames).await.unwrap();

    let mut replies = Vec::new();
    for _ in 0..frames.len() {
        replies.push(reply(alice.recv().await.unwrap()));
    }
    let mut expected: Vec<Reply> = (1..=20)
        .map(|n| Reply::Sent {
            id: 100 + n,
            seq: n,
            duplicate: false,
        })
        .collect();
    expected.push(Reply::Pong { id: 200 });
    expected.push(Reply::Refused {
        id: 201,
        code: ErrorCode::ContentEmpty,
    });
    expected.extend((21..=SENDS).map(|n| Reply::Sent {
        id: 300 + n,
        seq: n,
        duplicate: false,
    }));
    expected.push(Reply::Sent {
        id: 400,
        seq: 1,
        duplicate: true,
    });
    assert_eq!(replies, expected);

    for seq in 1..=SENDS {
        let message = next_message(&mut bob).await;
        assert_eq!(
            (message.seq, message.content.as_str()),
            (seq, format!("m{seq}").as_str())
        );
    }
    // The retry is published again, and bob, who has it, is not given it twice.
    assert_quiet(&mut bob).await;
}

#[tokio::test]
async fn embedded_a_burst_is_answered_in_order_with_other_requests_in_place() {
    let gw = gateway_with(&[UNLIMITED_RATE]).await;
    a_burst_is_answered_in_order_with_other_requests_in_place(&gw).await;
}

#[tokio::test]
async fn postgres_and_redis_a_burst_is_answered_in_order_and_shares_commits() {
    let pg = Postgres::start().await.unwrap();
    let redis = Redis::start().await.unwrap();
    let gw = builder()
        .env("DATABASE_URL", pg.url())
        .env("REDIS_URL", redis.url())
        .env(UNLIMITED_RATE.0, UNLIMITED_RATE.1)
        .start()
        .await
        .unwrap();
    a_burst_is_answered_in_order_with_other_requests_in_place(&gw).await;
    let stored = gw
        .metric("switchboard_messages_stored_total")
        .await
        .unwrap();
    let commits = gw.metric("switchboard_store_commits_total").await.unwrap();
    assert_eq!(stored, Some(SENDS as f64));
    // One at a time, that would be one commit per message.
    let commits = commits.unwrap();
    assert!(
        commits <= 4.0,
        "{SENDS} messages sent in one write took {commits} commits"
    );
}

//! `room:join` on a room the connection already follows answers from the store as it is now,
//! and the reply and the live stream still meet exactly: every `message:new` after the reply
//! is newer than its `lastSeq`.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use common::*;
use switchboard_protocol::{AckResult, ClientFrame, Message, ServerFrame};
use switchboard_testkit::{Gateway, Postgres, Redis, WsClient};

/// A room:join's reply: its messages' seqs, `lastSeq` and `recovered`.
async fn rejoin(
    client: &mut WsClient,
    room_id: &str,
    since_seq: Option<u64>,
) -> (Vec<u64>, u64, bool) {
    let id = client.next_id();
    let frame = ClientFrame::RoomJoin {
        id,
        room_id: room(room_id),
        password: None,
        since_seq,
    };
    match client.request_ok(&frame).await.unwrap() {
        AckResult::Room {
            room,
            messages,
            recovered,
            ..
        } => (
            messages.iter().map(|m| m.seq).collect(),
            room.last_seq,
            recovered,
        ),
        other => panic!("{other:?}"),
    }
}

/// The reproduction: bob connects at seq 30, receives 31..50 live, then joins again.
async fn a_rejoin_answers_from_the_store_as_it_is_now(gw: &Gateway) {
    let mut alice = connect(gw, "alice").await;
    alice.create_room("general").await.unwrap();
    let mut bob = connect(gw, "bob").await;
    bob.join_room("general").await.unwrap();
    bob.close().await.unwrap();
    for i in 1..=30 {
        send(&mut alice, "general", &format!("m{i}")).await;
    }
    let (mut bob, ready) = connect_ready(gw, "bob").await;
    let ServerFrame::SessionReady { rooms, .. } = ready else {
        panic!("{ready:?}")
    };
    assert_eq!(rooms[0].last_seq, 30);
    for i in 31..=50 {
        send(&mut alice, "general", &format!("m{i}")).await;
    }
    let live: Vec<u64> = {
        let mut seqs = Vec::new();
        for _ in 31..=50 {
            seqs.push(next_message(&mut bob).await.seq);
        }
        seqs
    };
    assert_eq!(live, (31..=50).collect::<Vec<_>>());

    let (seqs, last_seq, recovered) = rejoin(&mut bob, "general", Some(25)).await;
    assert_eq!(seqs, (26..=50).collect::<Vec<_>>(), "everything after 25");
    assert_eq!((last_seq, recovered), (50, true));
    let (seqs, last_seq, recovered) = rejoin(&mut bob, "general", None).await;
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>(), "the latest page");
    assert_eq!((last_seq, recovered), (50, true));
    let (seqs, last_seq, _) = rejoin(&mut bob, "general", Some(50)).await;
    assert_eq!((seqs, last_seq), (vec![], 50), "nothing missed");

    // Live delivery goes on after the reply, without repeating anything.
    send(&mut alice, "general", "m51").await;
    assert_eq!(next_message(&mut bob).await.seq, 51);
    assert_quiet(&mut bob).await;
}

/// While alice keeps sending, bob joins again: what he got live before the reply, the reply,
/// and what he gets live after it cover every seq once the overlap is dropped, and nothing
/// live after the reply is at or below its `lastSeq`.
async fn a_rejoin_under_traffic_meets_the_live_stream_exactly(gw: &Gateway) {
    let mut alice = connect(gw, "alice").await;
    alice.create_room("busy").await.unwrap();
    let mut bob = connect(gw, "bob").await;
    bob.join_room("busy").await.unwrap();
    let total = 200u64;
    let sender = {
        let mut alice = alice;
        tokio::spawn(async move {
            for i in 1..=total {
                send(&mut alice, "busy", &format!("m{i}")).await;
            }
            alice
        })
    };
    // Wait until the traffic is under way, then join again with what we hold.
    let mut held: Vec<u64> = Vec::new();
    while held.len() < 20 {
        held.push(next_message(&mut bob).await.seq);
    }
    let since = *held.last().unwrap();
    let id = bob.next_id();
    bob.send(&ClientFrame::RoomJoin {
        id,
        room_id: room("busy"),
        password: None,
        since_seq: Some(since),
    })
    .await
    .unwrap();
    let mut reply: Option<(Vec<Message>, u64)> = None;
    let mut after: Vec<u64> = Vec::new();
    let mut before_reply: Vec<u64> = Vec::new();
    while after.last().copied().max(reply.as_ref().map(|r| r.1)) < Some(total) {
        match bob.recv().await.unwrap() {
            ServerFrame::MessageNew { message } if reply.is_none() => {
                before_reply.push(message.seq)
            }
            ServerFrame::MessageNew { message } => after.push(message.seq),
            ServerFrame::Ack {
                id: reply_id,
                result:
                    Some(AckResult::Room {
                        messages,
                        room,
                        recovered,
                        ..
                    }),
                ..
            } if reply_id == id => {
                assert!(recovered);
                reply = Some((messages, room.last_seq));
            }
            _ => {}
        }
    }
    // Kept connected: its going offline would be a frame of its own.
    let _alice = sender.await.unwrap();
    let (messages, last_seq) = reply.unwrap();
    let replayed: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        replayed,
        (since + 1..=last_seq).collect::<Vec<_>>(),
        "the reply holds every message after sinceSeq up to its lastSeq"
    );
    assert!(
        after.iter().all(|&seq| seq > last_seq),
        "live after the reply is newer than its lastSeq ({last_seq}): {after:?}"
    );
    assert_eq!(
        after,
        (last_seq + 1..=total).collect::<Vec<_>>(),
        "and continues it without a gap"
    );
    assert!(
        before_reply
            .iter()
            .all(|&seq| seq > since && seq <= last_seq),
        "what came live meanwhile is inside the reply: {before_reply:?}"
    );
    assert_quiet(&mut bob).await;
}

#[tokio::test]
async fn embedded_a_rejoin_answers_from_the_store_as_it_is_now() {
    a_rejoin_answers_from_the_store_as_it_is_now(&gateway().await).await;
}

#[tokio::test]
async fn embedded_a_rejoin_under_traffic_meets_the_live_stream_exactly() {
    let gw = gateway_with(&[UNLIMITED_RATE]).await;
    a_rejoin_under_traffic_meets_the_live_stream_exactly(&gw).await;
}

async fn production() -> (Postgres, Redis, Gateway) {
    let pg = Postgres::start().await.unwrap();
    let redis = Redis::start().await.unwrap();
    let gw = builder()
        .env("DATABASE_URL", pg.url())
        .env("REDIS_URL", redis.url())
        .env(UNLIMITED_RATE.0, UNLIMITED_RATE.1)
        .start()
        .await
        .unwrap();
    (pg, redis, gw)
}

#[tokio::test]
async fn postgres_and_redis_a_rejoin_answers_from_the_store_as_it_is_now() {
    let (_pg, _redis, gw) = production().await;
    a_rejoin_answers_from_the_store_as_it_is_now(&gw).await;
}

#[tokio::test]
async fn postgres_and_redis_a_rejoin_under_traffic_meets_the_live_stream_exactly() {
    let (_pg, _redis, gw) = production().await;
    a_rejoin_under_traffic_meets_the_live_stream_exactly(&gw).await;
}

//! Typing, room events, presence, read receipts and heartbeats.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::*;
use switchboard_protocol::{AckResult, ClientFrame, PresenceStatus, ServerFrame};
use switchboard_testkit::WsClient;

/// alice and bob, both members of `general`, with the join notice consumed.
async fn pair(gw: &switchboard_testkit::Gateway) -> (WsClient, WsClient) {
    let mut alice = connect(gw, "alice").await;
    let mut bob = connect(gw, "bob").await;
    alice.create_room("general").await.unwrap();
    bob.join_room("general").await.unwrap();
    alice
        .recv_until(|f| matches!(f, ServerFrame::UserJoinedRoom { .. }))
        .await
        .unwrap();
    (alice, bob)
}

#[tokio::test]
async fn typing_goes_to_the_other_members_and_stops_by_itself_after_3_s() {
    let gw = gateway().await;
    let (mut alice, mut bob) = pair(&gw).await;
    let mut alice_laptop = connect(&gw, "alice").await;
    alice
        .send(&ClientFrame::TypingStart {
            room_id: room("general"),
        })
        .await
        .unwrap();
    let started = Instant::now();
    let frame = bob.recv().await.unwrap();
    assert!(
        matches!(frame, ServerFrame::TypingStart { ref user, .. } if user.id.as_str() == "alice"),
        "{frame:?}"
    );
    bob.set_timeout(Duration::from_secs(6));
    let frame = bob.recv().await.unwrap();
    assert!(
        matches!(frame, ServerFrame::TypingStop { ref user_id, .. } if user_id.as_str() == "alice"),
        "{frame:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(2_900),
        "stopped after {:?}",
        started.elapsed()
    );
    // Typing is for the other members only: neither of alice's connections hears it.
    assert_quiet(&mut alice).await;
    assert_quiet(&mut alice_laptop).await;

    // An explicit stop is relayed at once; typing in a room one is not in is refused.
    bob.send(&ClientFrame::TypingStart {
        room_id: room("general"),
    })
    .await
    .unwrap();
    bob.send(&ClientFrame::TypingStop {
        room_id: room("general"),
    })
    .await
    .unwrap();
    assert!(matches!(
        alice.recv().await.unwrap(),
        ServerFrame::TypingStart { .. }
    ));
    assert!(matches!(
        alice.recv().await.unwrap(),
        ServerFrame::TypingStop { .. }
    ));
    bob.send(&ClientFrame::TypingStart {
        room_id: room("elsewhere"),
    })
    .await
    .unwrap();
    assert!(
        matches!(bob.recv().await.unwrap(), ServerFrame::Error { code, .. } if code.as_str() == "NOT_A_MEMBER")
    );
}

fn emit(id: u64, room_id: &str, event: &str, data: serde_json::Value) -> ClientFrame {
    ClientFrame::RoomEmit {
        id,
        room_id: room(room_id),
        event: event.to_owned(),
        data,
    }
}

#[tokio::test]
async fn room_events_reach_every_member_connection_but_the_emitter_in_both_codecs() {
    let gw = gateway().await;
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("general").await.unwrap();
    let mut bob = connect_msgpack(&gw, "bob").await;
    bob.join_room("general").await.unwrap();
    let mut alice_laptop = connect(&gw, "alice").await;
    let mut carol = connect(&gw, "carol").await;
    alice
        .recv_until(|f| matches!(f, ServerFrame::UserJoinedRoom { .. }))
        .await
        .unwrap();

    let cursor = serde_json::json!({"x": 120, "y": -48, "path": [1.5, null, true, "a"]});
    let ack = alice
        .request_ok(&emit(1, "general", "cursor:move", cursor.clone()))
        .await
        .unwrap();
    assert_eq!(ack, AckResult::Ok);
    let expected = (
        "general".to_owned(),
        "cursor:move".to_owned(),
        cursor,
        "alice".to_owned(),
    );
    assert_eq!(next_event(&mut bob).await, expected, "MessagePack member");
    assert_eq!(
        next_event(&mut alice_laptop).await,
        expected,
        "the emitter's other connection"
    );
    // From MessagePack to JSON, with no data at all.
    let ack = bob
        .request_ok(&emit(2, "general", "game:move", serde_json::Value::Null))
        .await
        .unwrap();
    assert_eq!(ack, AckResult::Ok);
    let moved = next_event(&mut alice).await;
    assert_eq!(
        moved,
        (
            "general".to_owned(),
            "game:move".to_owned(),
            serde_json::Value::Null,
            "bob".to_owned()
        )
    );
    assert_eq!(next_event(&mut alice_laptop).await, moved);
    // Not to the emitting connection, nor to a user who is not a member.
    assert_quiet(&mut alice).await;
    assert_quiet(&mut bob).await;
    assert_quiet(&mut carol).await;
}

#[tokio::test]
async fn room_events_are_refused_with_precise_codes_and_the_connection_stays() {
    let gw = gateway_with(&[
        ("SWITCHBOARD_MAX_EVENT_BYTES", "64"),
        ("SWITCHBOARD_EVENT_RATE_PER_SEC", "1"),
        ("SWITCHBOARD_EVENT_RATE_BURST", "3"),
    ])
    .await;
    let (mut alice, mut bob) = pair(&gw).await;
    let null = serde_json::Value::Null;
    for bad in ["Cursor", "2d", "a b", "cursor.move", ""] {
        assert_eq!(
            refused_code(&mut alice, &emit(1, "general", bad, null.clone())).await,
            "INVALID_FIELD",
            "{bad:?}"
        );
    }
    let big = serde_json::json!({"text": "x".repeat(60)});
    assert_eq!(
        refused_code(&mut alice, &emit(2, "general", "note", big)).await,
        "CONTENT_TOO_LONG"
    );
    assert_eq!(
        refused_code(&mut alice, &emit(3, "elsewhere", "note", null.clone())).await,
        "NOT_A_MEMBER"
    );
    // None of those reached bob; within the burst of 3 the events do, then the bucket is empty.
    for id in 4..7 {
        let ack = alice
            .request_ok(&emit(id, "general", "tick", serde_json::json!(id)))
            .await
            .unwrap();
        assert_eq!(ack, AckResult::Ok);
    }
    assert_eq!(
        refused_code(
            &mut alice,
            &emit(7, "general", "tick", serde_json::json!(7))
        )
        .await,
        "RATE_LIMITED"
    );
    let mut ticks = Vec::new();
    for _ in 4..7 {
        ticks.push(next_event(&mut bob).await.2);
    }
    assert_eq!(ticks, [4, 5, 6].map(|n| serde_json::json!(n)));
    assert_quiet(&mut bob).await;
    // Still connected: other requests go through.
    let pong = alice
        .request(&ClientFrame::Ping { id: Some(8) })
        .await
        .unwrap();
    assert!(matches!(pong, ServerFrame::Pong { .. }), "{pong:?}");
}

#[tokio::test]
async fn presence_follows_the_first_and_last_connection_of_a_user() {
    let gw = gateway().await;
    let (mut alice, bob) = pair(&gw).await;
    drop(bob);
    let offline = alice.recv().await.unwrap();
    let ServerFrame::UserOffline { user_id, last_seen } = offline else {
        panic!("{offline:?}")
    };
    assert_eq!(user_id.as_str(), "bob");
    assert!(
        last_seen > 1_700_000_000_000,
        "lastSeen is Unix milliseconds: {last_seen}"
    );

    let bob_phone = connect(&gw, "bob").await;
    let online = alice.recv().await.unwrap();
    assert!(
        matches!(online, ServerFrame::UserOnline { ref user } if user.id.as_str() == "bob" && user.name == "Bob"),
        "{online:?}"
    );
    let bob_laptop = connect(&gw, "bob").await;
    drop(bob_phone);
    // A second device neither announces nor, closing one of two, ends presence.
    assert_quiet(&mut alice).await;
    drop(bob_laptop);
    assert!(matches!(
        alice.recv().await.unwrap(),
        ServerFrame::UserOffline { .. }
    ));
}

#[tokio::test]
async fn presence_updates_are_validated_and_relayed_to_shared_rooms() {
    let gw = gateway().await;
    let (mut alice, mut bob) = pair(&gw).await;
    let mut carol = connect(&gw, "carol").await;
    let update = ClientFrame::PresenceUpdate {
        id: Some(1),
        status: PresenceStatus::Busy,
    };
    assert_eq!(bob.request_ok(&update).await.unwrap(), AckResult::Ok);
    let frame = alice.recv().await.unwrap();
    assert!(
        matches!(frame, ServerFrame::PresenceUpdate { ref user_id, status: PresenceStatus::Busy } if user_id.as_str() == "bob"),
        "{frame:?}"
    );
    assert_quiet(&mut carol).await;
    // Status shows in the online list of a join.
    let AckResult::Room { online, .. } = alice.join_room("general").await.unwrap() else {
        panic!()
    };
    assert!(
        online
            .iter()
            .any(|m| m.user.id.as_str() == "bob" && m.status == PresenceStatus::Busy),
        "{online:?}"
    );
}

#[tokio::test]
async fn read_receipts_move_forward_only_and_reach_the_room() {
    let gw = gateway().await;
    let (mut alice, mut bob) = pair(&gw).await;
    for i in 0..5 {
        send(&mut alice, "general", &format!("m{i}")).await;
    }
    for _ in 0..5 {
        next_message(&mut bob).await;
    }
    let read = |id, seq| ClientFrame::MessageRead {
        id: Some(id),
        room_id: room("general"),
        seq,
    };
    bob.request_ok(&read(1, 3)).await.unwrap();
    let frame = alice.recv().await.unwrap();
    assert!(
        matches!(frame, ServerFrame::MessageRead { ref user_id, seq: 3, .. } if user_id.as_str() == "bob"),
        "{frame:?}"
    );
    bob.request_ok(&read(2, 2)).await.unwrap();
    assert_quiet(&mut alice).await;
    drop(bob);
    alice
        .recv_until(|f| matches!(f, ServerFrame::UserOffline { .. }))
        .await
        .unwrap();
    // Coming back, the watermark is where it was: 2 unread.
    let (_bob, ready) = connect_ready(&gw, "bob").await;
    let ServerFrame::SessionReady { rooms, .. } = ready else {
        panic!()
    };
    let general = rooms
        .iter()
        .find(|r| r.room_id.as_str() == "general")
        .expect("member of general");
    assert_eq!(
        (general.last_seq, general.last_read_seq, general.unread),
        (5, 3, 2)
    );
}

#[tokio::test]
async fn heartbeats_keep_a_live_client_and_close_a_silent_one_with_4004() {
    let gw = gateway_with(&[
        ("SWITCHBOARD_HEARTBEAT_INTERVAL_MS", "200"),
        ("SWITCHBOARD_HEARTBEAT_TIMEOUT_MS", "700"),
    ])
    .await;
    let mut live = connect(&gw, "alice").await;
    let mut silent = connect(&gw, "bob").await;
    // The live client reads (and so answers the server's pings) for longer than the timeout.
    live.expect_no_frame(Duration::from_millis(1_500))
        .await
        .unwrap();
    assert!(matches!(
        live.request(&ClientFrame::Ping { id: Some(1) })
            .await
            .unwrap(),
        ServerFrame::Pong { id: Some(1) }
    ));
    // The silent client read nothing meanwhile, so it answered no ping.
    assert_eq!(
        silent.expect_close().await.unwrap(),
        (4004, "heartbeat timeout".to_owned())
    );
}

//! Typing, presence, read receipts and heartbeats.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::*;
use switchboard_protocol::{AckResult, ClientFrame, PresenceStatus, ServerFrame};

/// alice and bob, both members of `general`, with the join notice consumed.
async fn pair(
    gw: &switchboard_testkit::Gateway,
) -> (switchboard_testkit::WsClient, switchboard_testkit::WsClient) {
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

//! Rooms and messages as two or more users see them.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use common::*;
use switchboard_protocol::{AckResult, ClientFrame, Codec, MessageKind, RoomKind, ServerFrame};
use switchboard_testkit::{ConnectOptions, WsClient};

#[tokio::test]
async fn two_users_in_a_room_see_each_others_messages_in_seq_order() {
    let gw = gateway().await;
    let mut alice = connect(&gw, "alice").await;
    let mut bob = connect(&gw, "bob").await;
    alice.create_room("general").await.unwrap();
    let AckResult::Room { room, online, .. } = bob.join_room("general").await.unwrap() else {
        panic!()
    };
    assert_eq!(room.member_count, 2);
    let online: Vec<_> = online.iter().map(|m| m.user.id.as_str()).collect();
    assert!(
        online.contains(&"alice") && online.contains(&"bob"),
        "{online:?}"
    );
    let joined = alice.recv().await.unwrap();
    assert!(
        matches!(joined, ServerFrame::UserJoinedRoom { ref user, .. } if user.id.as_str() == "bob"),
        "{joined:?}"
    );

    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(send(&mut alice, "general", &format!("a{i}")).await);
        acked.push(send(&mut bob, "general", &format!("b{i}")).await);
    }
    assert_eq!(
        acked,
        (1..=10).collect::<Vec<_>>(),
        "seq is gap-free in send order"
    );
    for (client, other) in [(&mut alice, "b"), (&mut bob, "a")] {
        let mut seen = Vec::new();
        for _ in 0..5 {
            let m = next_message(client).await;
            assert!(
                m.content.starts_with(other),
                "only the other's messages arrive: {m:?}"
            );
            seen.push(m.seq);
        }
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "in seq order: {seen:?}"
        );
        assert_quiet(client).await;
    }
}

#[tokio::test]
async fn a_message_reaches_the_senders_other_devices_but_not_the_sending_connection() {
    let gw = gateway().await;
    let mut phone = connect(&gw, "alice").await;
    phone.create_room("team").await.unwrap();
    let (mut laptop, ready) = connect_ready(&gw, "alice").await;
    let ServerFrame::SessionReady { rooms, .. } = ready else {
        panic!()
    };
    assert_eq!(
        rooms.iter().map(|r| r.room_id.as_str()).collect::<Vec<_>>(),
        vec!["team"]
    );
    let seq = send(&mut phone, "team", "from my phone").await;
    let m = next_message(&mut laptop).await;
    assert_eq!(
        (m.seq, m.content.as_str(), m.sender.id.as_str()),
        (seq, "from my phone", "alice")
    );
    assert_quiet(&mut phone).await;
}

#[tokio::test]
async fn a_retried_client_msg_id_is_acked_once_and_delivered_once() {
    let gw = gateway().await;
    let mut alice = connect(&gw, "alice").await;
    let mut bob = connect(&gw, "bob").await;
    alice.create_room("general").await.unwrap();
    bob.join_room("general").await.unwrap();
    let first = alice
        .request(&message_send(100, "general", "hello", "retry-1"))
        .await
        .unwrap();
    let again = alice
        .request(&message_send(101, "general", "hello", "retry-1"))
        .await
        .unwrap();
    let (
        ServerFrame::Ack {
            result:
                Some(AckResult::Sent {
                    seq: s1,
                    message_id: m1,
                    duplicate: false,
                    ..
                }),
            ..
        },
        ServerFrame::Ack {
            id: 101,
            result:
                Some(AckResult::Sent {
                    seq: s2,
                    message_id: m2,
                    duplicate: true,
                    ..
                }),
            ..
        },
    ) = (&first, &again)
    else {
        panic!("{first:?} / {again:?}")
    };
    assert_eq!((s1, m1), (s2, m2), "the retry gets the original ack");
    assert_eq!(next_message(&mut bob).await.content, "hello");
    assert_quiet(&mut bob).await;
    let AckResult::History { messages, .. } = alice
        .request_ok(&ClientFrame::HistoryFetch {
            id: 102,
            room_id: room("general"),
            before_seq: None,
            after_seq: None,
            limit: None,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(messages.len(), 1, "stored once");
}

#[tokio::test]
async fn private_and_password_rooms_refuse_outsiders() {
    let gw = gateway().await;
    let mut alice = connect(&gw, "alice").await;
    let mut bob = connect(&gw, "bob").await;
    for (id, kind, password) in [
        ("secret", RoomKind::Private, None),
        ("club", RoomKind::Password, Some("open sesame")),
    ] {
        let create = ClientFrame::RoomCreate {
            id: alice.next_id(),
            room_id: room(id),
            name: None,
            kind,
            password: password.map(str::to_owned),
        };
        alice.request_ok(&create).await.unwrap();
    }
    let join = |id: u64, room_id: &str, password: Option<&str>| ClientFrame::RoomJoin {
        id,
        room_id: room(room_id),
        password: password.map(str::to_owned),
        since_seq: None,
    };
    assert_eq!(
        refused_code(&mut bob, &join(1, "secret", None)).await,
        "FORBIDDEN"
    );
    assert_eq!(
        refused_code(&mut bob, &join(2, "club", None)).await,
        "WRONG_PASSWORD"
    );
    assert_eq!(
        refused_code(&mut bob, &join(3, "club", Some("guess"))).await,
        "WRONG_PASSWORD"
    );
    assert_eq!(
        refused_code(&mut bob, &join(4, "nowhere", None)).await,
        "ROOM_NOT_FOUND"
    );
    assert_eq!(
        refused_code(&mut bob, &message_send(5, "secret", "let me in", "x")).await,
        "NOT_A_MEMBER"
    );
    bob.request_ok(&join(6, "club", Some("open sesame")))
        .await
        .expect("the password opens it");
    let dup = ClientFrame::RoomCreate {
        id: 7,
        room_id: room("club"),
        name: None,
        kind: RoomKind::Public,
        password: None,
    };
    assert_eq!(refused_code(&mut bob, &dup).await, "ROOM_EXISTS");
}

#[tokio::test]
async fn joining_returns_the_last_50_messages_and_history_pages_through_the_rest() {
    let gw = gateway_with(&[UNLIMITED_RATE]).await;
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("log").await.unwrap();
    for i in 1..=120 {
        send(&mut alice, "log", &format!("m{i}")).await;
    }
    let mut bob = connect(&gw, "bob").await;
    let AckResult::Room {
        room: info,
        messages,
        recovered,
        ..
    } = bob.join_room("log").await.unwrap()
    else {
        panic!()
    };
    assert_eq!(info.last_seq, 120);
    assert!(recovered);
    assert_eq!(
        messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (71..=120).collect::<Vec<_>>()
    );
    let page = |id, before_seq, after_seq, limit| ClientFrame::HistoryFetch {
        id,
        room_id: room("log"),
        before_seq,
        after_seq,
        limit,
    };
    let AckResult::History {
        messages, has_more, ..
    } = bob
        .request_ok(&page(1, Some(71), None, Some(100)))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (
            messages.first().map(|m| m.seq),
            messages.last().map(|m| m.seq),
            has_more
        ),
        (Some(1), Some(70), false)
    );
    let AckResult::History {
        messages, has_more, ..
    } = bob
        .request_ok(&page(2, None, Some(10), Some(5)))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (messages.iter().map(|m| m.seq).collect::<Vec<_>>(), has_more),
        (vec![11, 12, 13, 14, 15], true)
    );
    assert_eq!(
        refused_code(&mut bob, &page(3, None, None, Some(101))).await,
        "INVALID_FIELD"
    );
    assert_eq!(
        refused_code(&mut bob, &page(4, Some(5), Some(1), None)).await,
        "INVALID_FIELD"
    );
}

#[tokio::test]
async fn a_client_that_resumes_gets_exactly_what_it_missed_then_live_messages() {
    let gw = gateway_with(&[("SWITCHBOARD_MAX_REPLAY", "100"), UNLIMITED_RATE]).await;
    let mut alice = connect(&gw, "alice").await;
    let mut bob = connect(&gw, "bob").await;
    alice.create_room("general").await.unwrap();
    bob.join_room("general").await.unwrap();
    for i in 1..=3 {
        send(&mut alice, "general", &format!("seen {i}")).await;
    }
    let last_seen = 3;
    drop(bob);
    for i in 1..=40 {
        send(&mut alice, "general", &format!("missed {i}")).await;
    }
    let mut bob = connect(&gw, "bob").await;
    let resume = ClientFrame::RoomJoin {
        id: 1,
        room_id: room("general"),
        password: None,
        since_seq: Some(last_seen),
    };
    let AckResult::Room {
        messages,
        recovered,
        room: info,
        ..
    } = bob.request_ok(&resume).await.unwrap()
    else {
        panic!()
    };
    assert!(recovered);
    assert_eq!(
        messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (4..=43).collect::<Vec<_>>()
    );
    assert_eq!(info.last_seq, 43);
    let live = send(&mut alice, "general", "live").await;
    assert_eq!(
        next_message(&mut bob).await.seq,
        live,
        "no gap and no duplicate after the replay"
    );
    assert_quiet(&mut bob).await;

    // Too far behind: the server says so instead of sending a partial gap.
    let mut carol = connect(&gw, "carol").await;
    carol.join_room("general").await.unwrap();
    drop(carol);
    for i in 1..=150 {
        send(&mut alice, "general", &format!("flood {i}")).await;
    }
    let mut carol = connect(&gw, "carol").await;
    let resume = ClientFrame::RoomJoin {
        id: 2,
        room_id: room("general"),
        password: None,
        since_seq: Some(44),
    };
    let AckResult::Room {
        messages,
        recovered,
        ..
    } = carol.request_ok(&resume).await.unwrap()
    else {
        panic!()
    };
    assert!(!recovered);
    assert_eq!(messages.len(), 50, "the latest page");
    assert_eq!(messages.last().map(|m| m.seq), Some(194));
}

#[tokio::test]
async fn direct_messages_reach_every_device_of_both_users() {
    let gw = gateway().await;
    let mut alice = connect(&gw, "alice").await;
    let mut alice_tablet = connect(&gw, "alice").await;
    let mut bob_phone = connect(&gw, "bob").await;
    let mut bob_laptop = connect(&gw, "bob").await;
    let dm = ClientFrame::DmSend {
        id: 1,
        recipient_id: user("bob"),
        content: "psst".into(),
        kind: MessageKind::Text,
        client_msg_id: "dm-1".into(),
    };
    let AckResult::Sent { room_id, seq, .. } = alice.request_ok(&dm).await.unwrap() else {
        panic!()
    };
    assert_eq!((room_id.as_str(), seq), ("dm:alice:bob", 1));
    for client in [&mut bob_phone, &mut bob_laptop, &mut alice_tablet] {
        let m = next_message(client).await;
        assert_eq!(
            (m.room_id.as_str(), m.content.as_str(), m.sender.id.as_str()),
            ("dm:alice:bob", "psst", "alice")
        );
    }
    assert_quiet(&mut alice).await;
    // The reply goes through the same room, in order.
    assert_eq!(send(&mut bob_phone, "dm:alice:bob", "hi!").await, 2);
    assert_eq!(next_message(&mut alice).await.seq, 2);
    let to_self = ClientFrame::DmSend {
        id: 2,
        recipient_id: user("alice"),
        content: "me".into(),
        kind: MessageKind::Text,
        client_msg_id: "s".into(),
    };
    assert_eq!(
        refused_code(&mut alice, &to_self).await,
        "INVALID_RECIPIENT"
    );
    // A third user cannot read it.
    let mut eve = connect(&gw, "eve").await;
    let join = ClientFrame::RoomJoin {
        id: 3,
        room_id: room("dm:alice:bob"),
        password: None,
        since_seq: None,
    };
    assert_eq!(refused_code(&mut eve, &join).await, "FORBIDDEN");
    // Its members are fixed: it cannot be left, and stays writable for both.
    let leave = ClientFrame::RoomLeave {
        id: 4,
        room_id: room("dm:alice:bob"),
    };
    assert_eq!(refused_code(&mut bob_phone, &leave).await, "FORBIDDEN");
    assert_eq!(send(&mut bob_phone, "dm:alice:bob", "still here").await, 3);
}

#[tokio::test]
async fn leaving_a_room_tells_the_others_and_stops_delivery() {
    let gw = gateway().await;
    let mut alice = connect(&gw, "alice").await;
    let mut bob = connect(&gw, "bob").await;
    alice.create_room("general").await.unwrap();
    bob.join_room("general").await.unwrap();
    alice
        .recv_until(|f| matches!(f, ServerFrame::UserJoinedRoom { .. }))
        .await
        .unwrap();
    bob.request_ok(&ClientFrame::RoomLeave {
        id: 9,
        room_id: room("general"),
    })
    .await
    .unwrap();
    let left = alice.recv().await.unwrap();
    assert!(
        matches!(left, ServerFrame::UserLeftRoom { ref user_id, .. } if user_id.as_str() == "bob"),
        "{left:?}"
    );
    send(&mut alice, "general", "bob is gone").await;
    assert_quiet(&mut bob).await;
    assert_eq!(
        refused_code(
            &mut bob,
            &ClientFrame::RoomLeave {
                id: 10,
                room_id: room("general")
            }
        )
        .await,
        "NOT_A_MEMBER"
    );
}

#[tokio::test]
async fn muting_is_a_member_setting_on_every_device() {
    let gw = gateway().await;
    let mut alice = connect(&gw, "alice").await;
    let mut bob = connect(&gw, "bob").await;
    alice.create_room("general").await.unwrap();
    let mute = |id, room_id: &str, muted| ClientFrame::RoomMute {
        id,
        room_id: room(room_id),
        muted,
    };
    assert_eq!(
        refused_code(&mut bob, &mute(1, "general", true)).await,
        "NOT_A_MEMBER"
    );
    assert_eq!(
        refused_code(&mut bob, &mute(2, "nowhere", true)).await,
        "ROOM_NOT_FOUND"
    );
    assert!(matches!(
        alice.request_ok(&mute(3, "general", true)).await.unwrap(),
        AckResult::Ok
    ));
    // The room still delivers live; another device sees the setting when it connects.
    bob.join_room("general").await.unwrap();
    send(&mut bob, "general", "still heard").await;
    let heard = alice
        .recv_until(|f| matches!(f, ServerFrame::MessageNew { .. }))
        .await
        .unwrap();
    assert!(
        matches!(&heard, ServerFrame::MessageNew { message } if message.content == "still heard"),
        "{heard:?}"
    );
    let (_, ready) = connect_ready(&gw, "alice").await;
    let ServerFrame::SessionReady { rooms, .. } = ready else {
        panic!("{ready:?}");
    };
    assert!(rooms[0].muted, "{rooms:?}");
}

#[tokio::test]
async fn message_content_is_validated() {
    let gw = gateway_with(&[("SWITCHBOARD_MAX_MESSAGE_CHARS", "10")]).await;
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("general").await.unwrap();
    assert_eq!(
        refused_code(&mut alice, &message_send(1, "general", "  \n\t ", "a")).await,
        "CONTENT_EMPTY"
    );
    assert_eq!(
        refused_code(&mut alice, &message_send(2, "general", "elevenchars", "b")).await,
        "CONTENT_TOO_LONG"
    );
    assert_eq!(
        refused_code(&mut alice, &message_send(3, "general", "ok", "has space")).await,
        "INVALID_FIELD"
    );
    // Ten characters, more than ten bytes: the limit counts characters.
    assert!(matches!(
        alice
            .request(&message_send(4, "general", "ééééééééé!", "c"))
            .await
            .unwrap(),
        ServerFrame::Ack {
            result: Some(AckResult::Sent { .. }),
            ..
        }
    ));
}

#[tokio::test]
async fn bad_frames_get_precise_errors_and_the_connection_keeps_working() {
    let gw = gateway().await;
    let mut alice = connect(&gw, "alice").await;
    let cases = [
        ("{not json", "MALFORMED_FRAME", None),
        (r#"{"id":5}"#, "MALFORMED_FRAME", Some(5)),
        (r#"{"type":"room:explode","id":6}"#, "UNKNOWN_TYPE", Some(6)),
        (
            r#"{"type":"message:send","id":7,"roomId":"general"}"#,
            "INVALID_FIELD",
            Some(7),
        ),
        (
            r#"{"type":"room:join","id":8,"roomId":"bad room!"}"#,
            "INVALID_IDENTIFIER",
            Some(8),
        ),
        (
            r#"{"type":"presence:update","status":"sleepy"}"#,
            "INVALID_FIELD",
            None,
        ),
    ];
    for (raw, code, id) in cases {
        alice.send_raw_text(raw).await.unwrap();
        let reply = alice.recv().await.unwrap();
        let (got_code, got_id) = match &reply {
            ServerFrame::Ack {
                id, error: Some(e), ..
            } => (e.code.as_str(), Some(*id)),
            ServerFrame::Error { code, .. } => (code.as_str(), None),
            other => panic!("{raw}: {other:?}"),
        };
        assert_eq!((got_code, got_id), (code, id), "{raw}");
    }
    alice.send_raw_binary(vec![1, 2, 3]).await.unwrap();
    assert!(
        matches!(alice.recv().await.unwrap(), ServerFrame::Error { code, .. } if code.as_str() == "MALFORMED_FRAME")
    );
    alice
        .create_room("still-works")
        .await
        .expect("the connection is still usable");
    let errors = gw
        .metric("switchboard_errors_total{code=\"MALFORMED_FRAME\"}")
        .await
        .unwrap();
    assert_eq!(errors, Some(3.0));
}

#[tokio::test]
async fn positional_array_frames_are_malformed_in_both_codecs_and_do_nothing() {
    let gw = gateway().await;
    let mut json = connect(&gw, "alice").await;
    let (mut packed, _) = WsClient::connect_session(
        &gw.ws_url(),
        ConnectOptions::bearer(token("bob")).with_codec(Codec::MsgPack),
    )
    .await
    .unwrap();
    // Serde would read each of these positionally as a ping with id 7 or a room:create.
    let not_objects = [
        serde_json::json!(["ping", 7]),
        serde_json::json!(["room:create", 8, "arr-room"]),
        serde_json::json!([["room:create", 9, "arr-room"]]),
        serde_json::json!([{"type": "ping", "id": 7}]),
        serde_json::json!("ping"),
        serde_json::json!(null),
    ];
    for value in &not_objects {
        for client in [&mut json, &mut packed] {
            let bytes = client.codec().encode(value).unwrap();
            if client.codec().is_binary() {
                client.send_raw_binary(bytes).await.unwrap();
            } else {
                client
                    .send_raw_text(&String::from_utf8(bytes).unwrap())
                    .await
                    .unwrap();
            }
            let reply = client.recv().await.unwrap();
            assert!(
                matches!(reply, ServerFrame::Error { code, .. } if code.as_str() == "MALFORMED_FRAME"),
                "{:?} {value}: {reply:?}",
                client.codec()
            );
        }
    }
    // No pong, no ack: exactly one error per frame.
    assert_quiet(&mut json).await;
    assert_quiet(&mut packed).await;
    let join = ClientFrame::RoomJoin {
        id: 10,
        room_id: room("arr-room"),
        password: None,
        since_seq: None,
    };
    assert_eq!(refused_code(&mut packed, &join).await, "ROOM_NOT_FOUND");
    json.create_room("arr-room")
        .await
        .expect("the array did not create the room");
}

#[tokio::test]
async fn msgpack_and_json_clients_talk_to_each_other() {
    let gw = gateway().await;
    let mut json = connect(&gw, "alice").await;
    json.create_room("mixed").await.unwrap();
    let (mut packed, _) = WsClient::connect_session(
        &gw.ws_url(),
        ConnectOptions::bearer(token("bob")).with_codec(Codec::MsgPack),
    )
    .await
    .unwrap();
    assert_eq!(packed.subprotocol(), Some("switchboard.v1.msgpack"));
    packed.join_room("mixed").await.unwrap();
    send(&mut json, "mixed", "to msgpack").await;
    assert_eq!(next_message(&mut packed).await.content, "to msgpack");
    send(&mut packed, "mixed", "to json").await;
    assert_eq!(next_message(&mut json).await.content, "to json");
    let status = WsClient::connect(
        &gw.ws_url(),
        ConnectOptions::bearer(token("carol")).with_subprotocols(["chat.v2"]),
    )
    .await
    .err()
    .and_then(|e| e.status());
    assert_eq!(status, Some(400), "only unknown subprotocols offered");
}

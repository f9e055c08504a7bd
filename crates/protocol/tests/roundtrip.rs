#![allow(clippy::unwrap_used)] // test helpers; a panic is the failure report
//! Every frame survives both codecs unchanged, both codecs agree on its shape, and the shape is
//! the one the protocol's JSON Schema describes.

mod schema_check;

use std::collections::HashSet;

use strum::IntoEnumIterator;
use switchboard_protocol::*;

fn user(id: &str) -> UserRef {
    UserRef {
        id: UserId::parse(id).unwrap(),
        name: id.to_uppercase(),
    }
}

fn room() -> RoomId {
    RoomId::parse("general").unwrap()
}

fn message(seq: u64) -> Message {
    Message {
        message_id: format!("0190-{seq}"),
        room_id: room(),
        seq,
        sender: user("alice"),
        kind: MessageKind::Text,
        content: "héllo 👋".into(),
        client_msg_id: format!("c-{seq}"),
        created_at: 1_763_700_000_000,
    }
}

fn notification() -> Notification {
    Notification {
        id: 77,
        kind: "friend:request".into(),
        title: "Erin wants to be friends".into(),
        body: String::new(),
        data: serde_json::json!({"userId": "erin", "nested": {"n": 1}}),
        created_at: 1_763_700_000_000,
        read_at: None,
    }
}

fn client_samples() -> Vec<ClientFrame> {
    vec![
        ClientFrame::Auth {
            token: "eyJ...".into(),
        },
        ClientFrame::AuthRefresh {
            id: 1,
            token: "eyJ.new.token".into(),
        },
        ClientFrame::Ping { id: Some(1) },
        ClientFrame::Ping { id: None },
        ClientFrame::RoomCreate {
            id: 2,
            room_id: room(),
            name: Some("General".into()),
            kind: RoomKind::Password,
            password: Some("s3cret".into()),
        },
        ClientFrame::RoomJoin {
            id: 3,
            room_id: room(),
            password: None,
            since_seq: Some(41),
        },
        ClientFrame::RoomLeave {
            id: 4,
            room_id: room(),
        },
        ClientFrame::RoomMute {
            id: 4,
            room_id: room(),
            muted: true,
        },
        ClientFrame::MessageSend {
            id: 5,
            room_id: room(),
            content: "hi".into(),
            kind: MessageKind::Image,
            client_msg_id: "c-1".into(),
        },
        ClientFrame::DmSend {
            id: 6,
            recipient_id: UserId::parse("bob").unwrap(),
            content: "psst".into(),
            kind: MessageKind::Text,
            client_msg_id: "c-2".into(),
        },
        ClientFrame::TypingStart { room_id: room() },
        ClientFrame::TypingStop { room_id: room() },
        ClientFrame::RoomEmit {
            id: 8,
            room_id: room(),
            event: "cursor:move".into(),
            data: serde_json::json!({"x": 1, "y": [2.5, null, true], "label": "here"}),
        },
        ClientFrame::PresenceUpdate {
            id: None,
            status: PresenceStatus::Away,
        },
        ClientFrame::MessageRead {
            id: Some(7),
            room_id: room(),
            seq: 42,
        },
        ClientFrame::NotificationsList {
            id: 9,
            limit: Some(20),
            before: Some(77),
        },
        ClientFrame::NotificationsRead {
            id: 10,
            ids: vec![77, 78],
        },
        ClientFrame::FriendRequest {
            id: 11,
            user_id: UserId::parse("bob").unwrap(),
        },
        ClientFrame::FriendAccept {
            id: 12,
            user_id: UserId::parse("bob").unwrap(),
        },
        ClientFrame::FriendRemove {
            id: 13,
            user_id: UserId::parse("bob").unwrap(),
        },
        ClientFrame::FriendsList { id: 14 },
        ClientFrame::Rpc {
            id: 15,
            method: "game:move".to_owned(),
            data: serde_json::json!({"from": "e2", "to": "e4"}),
        },
        ClientFrame::HistoryFetch {
            id: 8,
            room_id: room(),
            before_seq: Some(100),
            after_seq: None,
            limit: Some(20),
        },
    ]
}

fn server_samples() -> Vec<ServerFrame> {
    let info = RoomInfo {
        room_id: room(),
        name: "General".into(),
        kind: RoomKind::Public,
        created_by: UserId::parse("alice").unwrap(),
        last_seq: 2,
        member_count: 3,
    };
    vec![
        ServerFrame::ok(
            1,
            AckResult::Room {
                room: info,
                role: Role::parse("moderator").unwrap(),
                online: vec![Member {
                    user: user("bob"),
                    status: PresenceStatus::Busy,
                }],
                messages: vec![message(1), message(2)],
                recovered: true,
            },
        ),
        ServerFrame::ok(
            2,
            AckResult::Sent {
                room_id: room(),
                message_id: "0190-3".into(),
                seq: 3,
                created_at: 1,
                duplicate: false,
            },
        ),
        ServerFrame::ok(
            3,
            AckResult::History {
                room_id: room(),
                messages: vec![message(1)],
                has_more: true,
            },
        ),
        ServerFrame::ok(4, AckResult::Ok),
        ServerFrame::ok(
            5,
            AckResult::Auth {
                expires_at: 1_763_700_000_000,
            },
        ),
        ServerFrame::AuthExpiring {
            expires_at: 1_763_700_000_000,
        },
        ServerFrame::refused(5, ErrorCode::RateLimited, "slow down"),
        ServerFrame::Error {
            code: ErrorCode::MalformedFrame,
            message: "not JSON".into(),
        },
        ServerFrame::SessionReady {
            user: user("alice"),
            conn_id: "n1-7".into(),
            heartbeat_ms: 25_000,
            max_frame_bytes: 65_536,
            rooms: vec![RoomSummary {
                room_id: room(),
                name: "General".into(),
                kind: RoomKind::Public,
                last_seq: 9,
                last_read_seq: 4,
                unread: 5,
                muted: false,
                role: Role::owner(),
            }],
            unread_notifications: 2,
            epoch: "0190b2c4".into(),
        },
        ServerFrame::Pong { id: Some(1) },
        ServerFrame::MessageNew {
            message: message(3),
        },
        ServerFrame::UserJoinedRoom {
            room_id: room(),
            user: user("carol"),
        },
        ServerFrame::UserLeftRoom {
            room_id: room(),
            user_id: UserId::parse("carol").unwrap(),
        },
        ServerFrame::TypingStart {
            room_id: room(),
            user: user("bob"),
        },
        ServerFrame::TypingStop {
            room_id: room(),
            user_id: UserId::parse("bob").unwrap(),
        },
        ServerFrame::RoomEvent {
            room_id: room(),
            event: "game:move".into(),
            data: serde_json::json!({"from": "e2", "to": "e4", "n": -3}),
            from: user("bob"),
        },
        ServerFrame::UserEvent {
            event: "order:shipped".into(),
            data: serde_json::json!({"order": 7}),
            from: user("system"),
        },
        ServerFrame::UserOnline { user: user("dave") },
        ServerFrame::UserOffline {
            user_id: UserId::parse("dave").unwrap(),
            last_seen: 5,
        },
        ServerFrame::PresenceUpdate {
            user_id: UserId::parse("dave").unwrap(),
            status: PresenceStatus::Online,
        },
        ServerFrame::MessageRead {
            room_id: room(),
            user_id: UserId::parse("bob").unwrap(),
            seq: 3,
        },
        ServerFrame::ServerShutdown { reconnect: true },
        ServerFrame::NotificationNew {
            notification: notification(),
        },
        ServerFrame::FriendRequest { user: user("erin") },
        ServerFrame::FriendAccepted { user: user("erin") },
        ServerFrame::FriendRemoved {
            user_id: UserId::parse("erin").unwrap(),
        },
        ServerFrame::ok(
            6,
            AckResult::Notifications {
                notifications: vec![notification()],
                has_more: false,
            },
        ),
        ServerFrame::ok(
            7,
            AckResult::Friend {
                friend: Friend {
                    user: user("erin"),
                    status: FriendStatus::Outgoing,
                },
            },
        ),
        ServerFrame::ok(
            8,
            AckResult::Friends {
                friends: vec![Friend {
                    user: user("erin"),
                    status: FriendStatus::Accepted,
                }],
            },
        ),
        ServerFrame::ok(
            9,
            AckResult::Rpc {
                data: serde_json::json!({"valid": true}),
            },
        ),
    ]
}

fn assert_round_trips<T>(
    samples: &[T],
    schema: &'static str,
    wire_name: impl Fn(&T) -> &'static str,
) where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    for frame in samples {
        for codec in [Codec::Json, Codec::MsgPack] {
            let bytes = codec.encode(frame).unwrap();
            let back: T = codec.decode(&bytes).unwrap();
            assert_eq!(&back, frame, "{codec:?} round trip");
        }
        // Same shape: the MessagePack map equals the JSON object.
        let json: serde_json::Value = serde_json::to_value(frame).unwrap();
        let packed = rmp_serde::to_vec_named(frame).unwrap();
        let unpacked: serde_json::Value = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(json, unpacked);
        assert_eq!(json["type"], wire_name(frame), "type field");
        if let Some(errors) = schema_check::schema_errors(schema, &json) {
            panic!("{errors}");
        }
    }
}

#[test]
fn every_client_frame_round_trips_in_both_codecs() {
    let samples = client_samples();
    assert_round_trips(&samples, "ClientFrame", |f| f.kind().wire_name());
    let covered: HashSet<_> = samples.iter().map(ClientFrame::kind).collect();
    for kind in ClientFrameKind::iter() {
        assert!(covered.contains(&kind), "no sample for {kind:?}");
    }
    for frame in &samples {
        let bytes = Codec::Json.encode(frame).unwrap();
        assert_eq!(Codec::Json.decode_client(&bytes).as_ref(), Ok(frame));
    }
}

#[test]
fn every_server_frame_round_trips_in_both_codecs() {
    let samples = server_samples();
    assert_round_trips(&samples, "ServerFrame", |f| f.kind().wire_name());
    let covered: HashSet<_> = samples.iter().map(ServerFrame::kind).collect();
    for kind in ServerFrameKind::iter() {
        assert!(covered.contains(&kind), "no sample for {kind:?}");
    }
}

#[test]
fn optional_fields_take_their_defaults() {
    let frame = Codec::Json
        .decode_client(br#"{"type":"message:send","id":1,"roomId":"general","content":"hi","clientMsgId":"a"}"#)
        .unwrap();
    let ClientFrame::MessageSend { kind, .. } = frame else {
        panic!("{frame:?}")
    };
    assert_eq!(kind, MessageKind::Text);
    let frame = Codec::Json
        .decode_client(br#"{"type":"room:create","id":1,"roomId":"r"}"#)
        .unwrap();
    let ClientFrame::RoomCreate {
        kind,
        name,
        password,
        ..
    } = frame
    else {
        panic!()
    };
    assert_eq!((kind, name, password), (RoomKind::Public, None, None));
}

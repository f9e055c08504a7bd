//! The hub's scenarios, driven through its inbox as the broker would.

use std::convert::Infallible;
use std::sync::Arc;

use switchboard_protocol::{CloseCode, Codec, RoomId, ServerFrame, UserId};

use super::{Hub, HubInbox, LivePosition, SessionHandle};
use crate::broker::memory::MemoryBroker;
use crate::broker::{ConnId, Envelope, Event, Inbox, Topic};
use crate::outbound::Outbound;
use crate::outbound::{Next, QueueRx};
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::{NewMessage, NewRoom};
use switchboard_protocol::RoomKind;
use switchboard_protocol::{Message, MessageKind, UserRef};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn session(user: &str, codec: Codec) -> (SessionHandle, QueueRx) {
    let (tx, rx) = crate::outbound::queue(8, std::time::Duration::from_secs(2));
    let user = UserId::parse(user).unwrap();
    (SessionHandle { user, codec, tx }, rx)
}

/// Follows `room` from `floor`, as a session does after reading it from the store.
async fn live(hub: &Hub, conn: &ConnId, room: &RoomId, floor: u64) -> Option<u64> {
    let read = async { Ok::<_, Infallible>(()) };
    let (_, floors) = hub
        .follow(conn, std::slice::from_ref(room), read, |_, _| Some(floor))
        .await
        .unwrap_or_else(|never| match never {});
    floors[0]
}

fn message_new(room: &RoomId, seq: u64) -> Envelope {
    let message = Message {
        message_id: format!("m{seq}"),
        room_id: room.clone(),
        seq,
        sender: UserRef {
            id: UserId::parse("alice").unwrap(),
            name: "Alice".into(),
        },
        kind: MessageKind::Text,
        content: "hi".into(),
        client_msg_id: format!("c{seq}"),
        created_at: 0,
    };
    Envelope::frame(
        vec![Topic::Room(room.clone())],
        ServerFrame::MessageNew { message },
    )
}

fn payload(message: &Outbound) -> (*const u8, usize) {
    match &**message {
        WsMessage::Text(text) => (text.as_str().as_ptr(), text.len()),
        WsMessage::Binary(bytes) => (bytes.as_ptr(), bytes.len()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_broadcast_is_encoded_once_per_codec_and_delivered_in_seq_order() {
    let hub = Arc::new(Hub::new(
        Arc::new(MemoryBroker::new()),
        Arc::new(MemoryStore::new(100)),
    ));
    let inbox = HubInbox(Arc::clone(&hub));
    let room = RoomId::parse("general").unwrap();
    let mut receivers = Vec::new();
    for (i, codec) in [Codec::Json, Codec::Json, Codec::MsgPack, Codec::MsgPack]
        .into_iter()
        .enumerate()
    {
        let conn = ConnId::new("n", i as u64);
        let (handle, rx) = session(&format!("u{i}"), codec);
        hub.register(&conn, handle).await;
        assert_eq!(live(&hub, &conn, &room, 0).await, Some(0));
        receivers.push(rx);
    }
    // 2 arrives before 1: held, then both delivered in order.
    inbox.deliver(&message_new(&room, 2));
    assert!(receivers[0].try_pop().is_none(), "2 waits for 1");
    inbox.deliver(&message_new(&room, 1));
    let mut firsts = Vec::new();
    for rx in &mut receivers {
        let one = rx.try_pop().expect("seq 1");
        let two = rx.try_pop().expect("seq 2");
        assert_ne!(payload(&one), payload(&two));
        firsts.push(payload(&one));
    }
    assert_eq!(firsts[0], firsts[1], "JSON sessions share one buffer");
    assert_eq!(
        firsts[2], firsts[3],
        "MessagePack sessions share one buffer"
    );
    assert_ne!(firsts[0], firsts[2]);
    inbox.deliver(&message_new(&room, 1));
    assert!(receivers[0].try_pop().is_none(), "a repeat is dropped");
}

#[tokio::test(start_paused = true)]
async fn a_gap_that_does_not_close_by_itself_is_repaired_from_the_store() {
    let store = Arc::new(MemoryStore::new(100));
    let hub = Arc::new(Hub::new(Arc::new(MemoryBroker::new()), store.clone()));
    let inbox = HubInbox(Arc::clone(&hub));
    let room = RoomId::parse("general").unwrap();
    let alice = UserRef {
        id: UserId::parse("alice").unwrap(),
        name: "Alice".into(),
    };
    let new_room = NewRoom {
        id: room.clone(),
        name: "G".into(),
        kind: RoomKind::Public,
        password_hash: None,
        creator: alice.clone(),
        creator_role: switchboard_protocol::Role::owner(),
    };
    store.create_room(new_room).await.unwrap();
    let conn = ConnId::new("n", 1);
    let (handle, mut rx) = session("bob", Codec::Json);
    hub.register(&conn, handle).await;
    live(&hub, &conn, &room, 0).await;
    let mut appended = Vec::new();
    for i in 1..=3 {
        let message = NewMessage {
            room: room.clone(),
            sender: alice.clone(),
            kind: MessageKind::Text,
            content: format!("m{i}"),
            client_msg_id: format!("c{i}"),
        };
        appended.push(store.append(message).await.unwrap().message);
    }
    // Only 3 is published (1 and 2 were lost on the way): it waits, then the store fills in.
    let three = appended[2].clone();
    inbox.deliver(&Envelope::frame(
        vec![Topic::Room(room.clone())],
        ServerFrame::MessageNew { message: three },
    ));
    assert!(rx.try_pop().is_none());
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let Next::Frame(frame) = rx.next().await else {
            panic!("kicked")
        };
        let WsMessage::Text(text) = &*frame else {
            panic!()
        };
        let frame: ServerFrame = serde_json::from_str(text.as_str()).unwrap();
        let ServerFrame::MessageNew { message } = frame else {
            panic!("{frame:?}")
        };
        seqs.push(message.seq);
    }
    assert_eq!(seqs, vec![1, 2, 3]);
    assert!(rx.try_pop().is_none(), "each once");
}

#[tokio::test]
async fn a_full_queue_kicks_its_session_as_a_slow_consumer() {
    let hub = Arc::new(Hub::new(
        Arc::new(MemoryBroker::new()),
        Arc::new(MemoryStore::new(100)),
    ));
    let inbox = HubInbox(Arc::clone(&hub));
    let room = RoomId::parse("general").unwrap();
    let conn = ConnId::new("n", 1);
    let (handle, mut rx) = session("bob", Codec::Json);
    hub.register(&conn, handle).await;
    live(&hub, &conn, &room, 0).await;
    for seq in 1..=9 {
        inbox.deliver(&message_new(&room, seq));
    }
    assert_eq!(rx.next().await, Next::Kicked(CloseCode::SlowConsumer));
}

fn seqs(rx: &mut QueueRx) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Some(frame) = rx.try_pop() {
        let WsMessage::Text(text) = &*frame else {
            panic!("{frame:?}")
        };
        let frame: ServerFrame = serde_json::from_str(text.as_str()).unwrap();
        if let ServerFrame::MessageNew { message } = frame {
            seqs.push(message.seq);
        }
    }
    seqs
}

#[tokio::test]
async fn a_member_added_while_early_messages_are_held_gets_them_at_once() {
    let hub = Arc::new(Hub::new(
        Arc::new(MemoryBroker::new()),
        Arc::new(MemoryStore::new(100)),
    ));
    let inbox = HubInbox(Arc::clone(&hub));
    let room = RoomId::parse("general").unwrap();
    // Bob's session is attached but still reading its position: the room's order on this node
    // is not known yet, so what arrives is held.
    let starting = ConnId::new("n", 1);
    let (handle, _bob) = session("bob", Codec::Json);
    hub.register(&starting, handle).await;
    hub.lock().attach(&starting, &room);
    inbox.deliver(&message_new(&room, 4));
    inbox.deliver(&message_new(&room, 5));
    // Carol joins on another node at seq 3; her session here follows the room from there.
    let carol_conn = ConnId::new("n", 2);
    let (handle, mut carol) = session("carol", Codec::Json);
    hub.register(&carol_conn, handle).await;
    inbox.deliver(&Envelope {
        topics: vec![Topic::User(UserId::parse("carol").unwrap())],
        event: Event::MemberJoined {
            user: UserId::parse("carol").unwrap(),
            room: room.clone(),
            since_seq: 3,
            skip_conn: None,
            feed: false,
        },
    });
    assert_eq!(
        seqs(&mut carol),
        vec![4, 5],
        "held messages wait for nothing"
    );
    inbox.deliver(&message_new(&room, 6));
    assert_eq!(seqs(&mut carol), vec![6]);
}

#[tokio::test]
async fn a_live_session_keeps_its_floor_when_its_user_joins_elsewhere() {
    let hub = Arc::new(Hub::new(
        Arc::new(MemoryBroker::new()),
        Arc::new(MemoryStore::new(100)),
    ));
    let inbox = HubInbox(Arc::clone(&hub));
    let room = RoomId::parse("general").unwrap();
    // Bob has been live since 5; Carol read the room at 7 while 6 and 7 were on their way here.
    let bob = ConnId::new("n", 0);
    let (handle, _bob_rx) = session("bob", Codec::Json);
    hub.register(&bob, handle).await;
    assert_eq!(live(&hub, &bob, &room, 5).await, Some(5));
    let conn = ConnId::new("n", 1);
    let (handle, mut rx) = session("carol", Codec::Json);
    hub.register(&conn, handle).await;
    assert_eq!(live(&hub, &conn, &room, 7).await, Some(7));
    inbox.deliver(&Envelope {
        topics: vec![Topic::User(UserId::parse("carol").unwrap())],
        event: Event::MemberJoined {
            user: UserId::parse("carol").unwrap(),
            room: room.clone(),
            since_seq: 2,
            skip_conn: None,
            feed: false,
        },
    });
    assert_eq!(hub.live_position(&conn, &room).map(|p| p.seq), Some(7));
    for seq in 6..=8 {
        inbox.deliver(&message_new(&room, seq));
    }
    assert_eq!(seqs(&mut rx), vec![8], "what it read is not repeated");
    for seq in 9..=10 {
        inbox.deliver(&message_new(&room, seq));
    }
    assert_eq!(
        hub.live_position(&conn, &room),
        Some(LivePosition { seq: 10, queued: 2 }),
        "a rejoin answers up to 10 after writing the two frames queued so far"
    );
}

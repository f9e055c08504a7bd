//! The Rust client (`crates/client`) against the real gateway binary: what an app built on it
//! would see through restarts, lost acks, token expiry and close codes.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use switchboard_client::{
    Client, ClientOptions, ConnectError, ConnectionState, Error, Event, Events, Hs256Minter,
    JsonFileStore, PendingSend, TokenSource,
};
use switchboard_protocol::{ClientFrame, Codec, Message, MessageKind, RoomKind, ServerFrame};
use switchboard_testkit::{Gateway, Postgres};

const WAIT: Duration = Duration::from_secs(20);

fn options(gw: &Gateway, user: &str) -> ClientOptions {
    let mut options = ClientOptions::new(gw.ws_url(), token(user));
    options.backoff_base = Duration::from_millis(50);
    options.backoff_max = Duration::from_millis(500);
    options
}

async fn connect(gw: &Gateway, user: &str) -> (Client, Events) {
    let (client, events, ready) = Client::connect(options(gw, user)).await.unwrap();
    assert_eq!(ready.user.id.as_str(), user);
    (client, events)
}

/// A gateway on a private PostgreSQL (keep the `Postgres` alive as long as the gateway).
async fn durable_gateway() -> (Postgres, Gateway) {
    let pg = Postgres::start().await.unwrap();
    let gw = builder()
        .env("DATABASE_URL", pg.url())
        .start()
        .await
        .unwrap();
    (pg, gw)
}

fn create(room_id: &str) -> ClientFrame {
    ClientFrame::RoomCreate {
        id: 0,
        room_id: room(room_id),
        name: None,
        kind: RoomKind::Public,
        password: None,
    }
}

/// Reads events until `done` holds for the messages handed over, collecting them and every
/// other event; fails after WAIT.
async fn messages_until(
    events: &mut Events,
    seen: &mut Vec<Event>,
    done: impl Fn(&[Message]) -> bool,
) -> Vec<Message> {
    let messages = |seen: &[Event]| -> Vec<Message> {
        seen.iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    };
    tokio::time::timeout(WAIT, async {
        while !done(&messages(seen)) {
            seen.push(events.next().await.expect("the client is running"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not within {WAIT:?}; events: {seen:#?}"));
    messages(seen)
}

fn contents(messages: &[Message]) -> Vec<(u64, String)> {
    messages
        .iter()
        .map(|m| (m.seq, m.content.clone()))
        .collect()
}

#[tokio::test]
async fn two_users_chat_each_message_handed_over_once_and_each_send_answered_once() {
    let gw = gateway().await;
    let (alice, mut alice_events) = connect(&gw, "alice").await;
    let (bob, mut bob_events) = connect(&gw, "bob").await;
    alice.join_with(create("lobby")).await.unwrap();
    let joined = bob.join(&room("lobby")).await.unwrap();
    assert_eq!(joined.room.room_id, room("lobby"));
    let sent = alice.send(&room("lobby"), "hello bob").await.unwrap();
    assert_eq!((sent.seq, sent.duplicate), (1, false));
    let answer = bob.send(&room("lobby"), "hi alice").await.unwrap();
    assert_eq!(answer.seq, 2);

    let mut seen = Vec::new();
    let got = messages_until(&mut bob_events, &mut seen, |m| !m.is_empty()).await;
    assert_eq!(contents(&got), [(1, "hello bob".to_owned())]);
    assert_eq!(got[0].sender.id.as_str(), "alice");
    let states: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            Event::State(s) => Some(*s),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [ConnectionState::Connecting, ConnectionState::Connected]
    );
    let mut seen = Vec::new();
    let got = messages_until(&mut alice_events, &mut seen, |m| !m.is_empty()).await;
    assert_eq!(
        contents(&got),
        [(2, "hi alice".to_owned())],
        "her own message is not handed back to her"
    );
}

#[tokio::test]
async fn after_a_kill_9_and_restart_every_room_resumes_and_the_outbox_is_sent_once() {
    let (_pg, mut gw) = durable_gateway().await;
    let (alice, mut alice_events) = connect(&gw, "alice").await;
    let (bob, mut bob_events) = connect(&gw, "bob").await;
    for name in ["team", "random"] {
        alice.join_with(create(name)).await.unwrap();
        bob.join(&room(name)).await.unwrap();
    }
    for text in ["one", "two", "three"] {
        alice.send(&room("team"), text).await.unwrap();
    }
    alice.send(&room("random"), "r1").await.unwrap();
    let mut bob_seen = Vec::new();
    messages_until(&mut bob_events, &mut bob_seen, |m| m.len() == 4).await;

    gw.kill_hard().await.unwrap();
    assert_eq!(
        alice.wait_for(ConnectionState::Reconnecting).await,
        ConnectionState::Reconnecting
    );
    // Typed while the server is gone: kept in the outbox, sent after the reconnect.
    let offline: Vec<_> = ["four", "five", "six"]
        .into_iter()
        .map(|text| {
            let alice = alice.clone();
            tokio::spawn(async move { alice.send(&room("team"), text).await })
        })
        .collect();
    let random = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.send(&room("random"), "r2").await })
    };
    tokio::time::timeout(WAIT, async {
        while alice.unsent().await.len() < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let _gw = gw.same_ports().start().await.unwrap();

    let mut seqs = Vec::new();
    for send in offline {
        seqs.push(send.await.unwrap().unwrap().seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, [4, 5, 6]);
    assert_eq!(random.await.unwrap().unwrap().seq, 2);
    assert!(alice.unsent().await.is_empty());

    let got = messages_until(&mut bob_events, &mut bob_seen, |m| m.len() == 8).await;
    let team: Vec<_> = got.iter().filter(|m| m.room_id == room("team")).collect();
    assert_eq!(
        team.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6],
        "every team message once, in order"
    );
    let random: Vec<_> = got.iter().filter(|m| m.room_id == room("random")).collect();
    assert_eq!(
        random
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["r1", "r2"]
    );
    assert!(
        bob_seen.contains(&Event::State(ConnectionState::Reconnecting)),
        "bob reconnected too"
    );
    assert!(
        !bob_seen.iter().any(|e| matches!(e, Event::Gap { .. })),
        "nothing was lost: no gap"
    );
    // Alice's own sends were never handed back to her: a replay would have come before the
    // acks her sends resolved with.
    let handed: Vec<_> = std::iter::from_fn(|| alice_events.try_next())
        .filter(|e| matches!(e, Event::Message(_)))
        .collect();
    assert_eq!(handed, [], "alice's own messages handed back to her");
}

#[tokio::test]
async fn the_same_client_msg_id_is_one_send_and_a_lost_ack_is_answered_by_the_duplicate() {
    let gw = gateway().await;
    let (alice, _events) = connect(&gw, "alice").await;
    alice.join_with(create("notes")).await.unwrap();
    let note = PendingSend::Room {
        room_id: room("notes"),
        content: "once".into(),
        kind: MessageKind::Text,
        client_msg_id: "note-1".into(),
    };
    let (first, same) = tokio::join!(
        alice.send_pending(note.clone()),
        alice.send_pending(note.clone())
    );
    let (first, same) = (first.unwrap(), same.unwrap());
    assert_eq!(
        same, first,
        "sent twice while pending: one send, one answer"
    );
    // The same clientMsgId again, as after a lost ack: the original answer, stored once.
    let again = alice.send_pending(note).await.unwrap();
    assert!(again.duplicate);
    assert_eq!((again.message_id, again.seq), (first.message_id, first.seq));
    let page = alice.history(&room("notes"), None, None).await.unwrap();
    assert_eq!(page.messages.len(), 1);
}

#[tokio::test]
async fn the_token_is_refreshed_before_it_expires_and_the_connection_lives_on() {
    let gw = gateway_with(&[("SWITCHBOARD_TOKEN_REFRESH_NOTICE_MS", "2000")]).await;
    let minted = Arc::new(AtomicUsize::new(0));
    let minter = Arc::new(Hs256Minter::new(SECRET).unwrap());
    let source = {
        let minted = Arc::clone(&minted);
        TokenSource::provider(move || {
            minted.fetch_add(1, Ordering::SeqCst);
            let token = minter.token("alice", "Alice", Duration::from_secs(3));
            async move { token.map_err(Into::into) }
        })
    };
    let mut options = options(&gw, "alice");
    options.token = source;
    let started = std::time::Instant::now();
    let (alice, mut events, _) = Client::connect(options).await.unwrap();
    alice.join_with(create("long")).await.unwrap();
    // Past the first token's expiry (3 s) and then some: refreshed at least twice.
    tokio::time::timeout(WAIT, async {
        while minted.load(Ordering::SeqCst) < 3 || started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(
        alice.send(&room("long"), "still here").await.unwrap().seq,
        1
    );
    let mut states = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(100), events.next()).await
    {
        if let Event::State(state) = event {
            states.push(state);
        }
    }
    assert_eq!(
        states,
        [ConnectionState::Connecting, ConnectionState::Connected],
        "one connection all along"
    );
}

#[tokio::test]
async fn a_connection_replaced_by_a_newer_one_does_not_come_back_and_a_bad_token_is_refused() {
    let gw = gateway_with(&[("SWITCHBOARD_MAX_CONNECTIONS_PER_USER", "1")]).await;
    let (first, mut first_events) = connect(&gw, "alice").await;
    let (_second, _) = connect(&gw, "alice").await;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::Closed { code, .. }) = first_events.next().await {
                return code;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, 4007);
    assert_eq!(first.state(), ConnectionState::Closed);
    assert!(matches!(
        first.send(&room("x"), "late").await,
        Err(Error::Closed)
    ));

    let mut bad = options(&gw, "mallory");
    bad.token = TokenSource::Fixed("not-a-jwt".into());
    match Client::connect(bad).await {
        Err(Error::Connect(ConnectError::Refused { status: 401, .. })) => {}
        other => panic!("expected a 401 refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_messagepack_client_and_the_outbox_on_disk_survive_a_client_restart() {
    let (_pg, mut gw) = durable_gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonFileStore::new(dir.path().join("outbox.json")));
    let packed = |gw: &Gateway| {
        let mut options = options(gw, "alice");
        options.connect.codec = Codec::MsgPack;
        options.outbox_store = Some(store.clone());
        options.outbox_limit = 2;
        options
    };
    let (alice, _events, _) = Client::connect(packed(&gw)).await.unwrap();
    alice.join_with(create("drafts")).await.unwrap();
    assert_eq!(alice.send(&room("drafts"), "packed").await.unwrap().seq, 1);

    gw.kill_hard().await.unwrap();
    alice.wait_for(ConnectionState::Reconnecting).await;
    let mut pending = Vec::new();
    for (n, text) in ["later 1", "later 2"].into_iter().enumerate() {
        let sender = alice.clone();
        pending.push(tokio::spawn(async move {
            sender.send(&room("drafts"), text).await
        }));
        // One at a time, so the outbox holds them in this order.
        tokio::time::timeout(WAIT, async {
            while alice.unsent().await.len() <= n {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    }
    assert!(
        matches!(
            alice.send(&room("drafts"), "one too many").await,
            Err(Error::OutboxFull(2))
        ),
        "a full outbox refuses, keeping what it holds"
    );
    // The app quits before the server is back: the sends stay on disk.
    alice.close().await;
    for send in pending {
        assert!(matches!(send.await.unwrap(), Err(Error::Closed)));
    }

    let gw = gw.same_ports().start().await.unwrap();
    let (again, mut events) = Client::start(packed(&gw));
    let mut acked = Vec::new();
    tokio::time::timeout(WAIT, async {
        while acked.len() < 2 {
            if let Some(Event::Sent { sent, send }) = events.next().await {
                acked.push((sent.seq, send.content().to_owned()));
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        acked,
        [(2, "later 1".to_owned()), (3, "later 2".to_owned())]
    );
    assert!(again.unsent().await.is_empty());
    let bob = Client::connect(options(&gw, "bob")).await.unwrap().0;
    bob.join(&room("drafts")).await.unwrap();
    let page = bob.history(&room("drafts"), None, None).await.unwrap();
    assert_eq!(
        contents(&page.messages),
        [
            (1, "packed".to_owned()),
            (2, "later 1".to_owned()),
            (3, "later 2".to_owned())
        ]
    );
}

#[tokio::test]
async fn custom_events_and_typing_reach_the_other_client_as_frames() {
    let gw = gateway().await;
    let (alice, _) = connect(&gw, "alice").await;
    let (bob, mut bob_events) = connect(&gw, "bob").await;
    alice.join_with(create("game")).await.unwrap();
    bob.join(&room("game")).await.unwrap();
    alice.typing(&room("game")).await;
    alice
        .request(ClientFrame::RoomEmit {
            id: 0,
            room_id: room("game"),
            event: "move".into(),
            data: serde_json::json!({"x": 1}),
        })
        .await
        .unwrap();
    alice.stop_typing(&room("game")).await;
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while seen.len() < 3 {
            match bob_events.next().await {
                Some(Event::Frame(
                    frame @ (ServerFrame::TypingStart { .. }
                    | ServerFrame::TypingStop { .. }
                    | ServerFrame::RoomEvent { .. }),
                )) => seen.push(frame),
                Some(_) => {}
                None => panic!("bob's client stopped"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("frames so far: {seen:?}"));
    let kinds: Vec<_> = seen.iter().map(|f| f.kind().wire_name()).collect();
    assert_eq!(kinds, ["typing:start", "room:event", "typing:stop"]);
    match &seen[1] {
        ServerFrame::RoomEvent {
            event, data, from, ..
        } => {
            assert_eq!(
                (event.as_str(), data, from.id.as_str()),
                ("move", &serde_json::json!({"x": 1}), "alice")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn after_an_embedded_store_restarts_old_seqs_do_not_hide_new_messages() {
    let mut gw = gateway().await;
    let (alice, _) = connect(&gw, "alice").await;
    let (bob, mut bob_events) = connect(&gw, "bob").await;
    alice.join_with(create("r")).await.unwrap();
    bob.join(&room("r")).await.unwrap();
    for text in ["old 1", "old 2"] {
        alice.send(&room("r"), text).await.unwrap();
    }
    let mut seen = Vec::new();
    messages_until(&mut bob_events, &mut seen, |m| m.len() == 2).await;

    // In memory, the restarted node has a new history: the room and its seqs are gone.
    gw.kill_hard().await.unwrap();
    let _gw = gw.same_ports().start().await.unwrap();
    for client in [&alice, &bob] {
        tokio::time::timeout(WAIT, async {
            while client
                .join(&room("nowhere"))
                .await
                .is_err_and(|e| matches!(e, Error::Disconnected))
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
    }
    alice.join_with(create("r")).await.unwrap();
    bob.join(&room("r")).await.unwrap();
    assert_eq!(alice.send(&room("r"), "new 1").await.unwrap().seq, 1);
    let got = messages_until(&mut bob_events, &mut seen, |m| m.len() == 3).await;
    assert_eq!(contents(&got[2..]), [(1, "new 1".to_owned())]);
}

#[tokio::test]
async fn a_room_left_on_another_device_is_not_joined_again_by_a_resume() {
    let (_pg, mut gw) = durable_gateway().await;
    let (phone, _) = connect(&gw, "alice").await;
    let (laptop, _) = connect(&gw, "alice").await;
    phone.join_with(create("x")).await.unwrap();
    laptop.join(&room("x")).await.unwrap();
    laptop.leave(&room("x")).await.unwrap();

    gw.kill_hard().await.unwrap();
    phone.wait_for(ConnectionState::Reconnecting).await;
    let _gw = gw.same_ports().start().await.unwrap();
    phone.wait_for(ConnectionState::Connected).await;
    // Had the phone joined `x` again on its resume (sent before anything else), this would be
    // stored; the user left it, so it is refused.
    match phone.send(&room("x"), "still here?").await {
        Err(Error::Refused {
            code: switchboard_protocol::ErrorCode::NotAMember,
            ..
        }) => {}
        other => panic!("expected NOT_A_MEMBER, got {other:?}"),
    }
}

//! `/sse`: one-way streams of rooms over Server-Sent Events, through the real binary. What a
//! listener sees, how it resumes with `Last-Event-ID` (also on another node after its node was
//! killed), and what is refused.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard_protocol::ClientFrame;
use switchboard_testkit::{Gateway, Postgres, Redis, SseClient, SseEvent};

/// Opens `/sse?rooms=…` for `user` with a bearer token, resuming from `last_id` if given.
async fn stream(gw: &Gateway, user: &str, rooms: &str, last_id: Option<&str>) -> SseClient {
    let auth = format!("Bearer {}", token(user));
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(id) = last_id {
        headers.push(("Last-Event-ID", id));
    }
    let (mut client, _) = SseClient::connect(gw.addr(), &format!("/sse?rooms={rooms}"), &headers)
        .await
        .unwrap()
        .unwrap_or_else(|refused| panic!("refused: {refused:?}"));
    let ready = client.next().await.unwrap();
    assert_eq!(ready.event, "session:ready");
    client
}

/// Waits for the `joined` event of each of `rooms`, in order; returns the last one's id.
async fn joined(client: &mut SseClient, rooms: &[&str]) -> String {
    let mut id = String::new();
    for room in rooms {
        let event = client.next_named("joined").await.unwrap();
        assert_eq!(event.json().unwrap()["roomId"], *room);
        id = event.id.expect("joined has an id");
    }
    id
}

/// The next `message:new`: its id and (seq, content).
async fn next_message_event(client: &mut SseClient) -> (String, u64, String) {
    let event: SseEvent = client.next_named("message:new").await.unwrap();
    let data = event.json().unwrap();
    (
        event.id.expect("a message event has an id"),
        data["message"]["seq"].as_u64().unwrap(),
        data["message"]["content"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_stream_carries_its_rooms_and_resumes_exactly_from_last_event_id() {
    let gw = gateway_with(&[
        UNLIMITED_RATE,
        // Heartbeats every 200 ms, and silence closing a WebSocket after 600 ms: a stream
        // whose client never speaks must stay open all the same.
        ("SWITCHBOARD_HEARTBEAT_INTERVAL_MS", "200"),
        ("SWITCHBOARD_HEARTBEAT_TIMEOUT_MS", "600"),
    ])
    .await;
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("dash").await.unwrap();
    alice.create_room("news").await.unwrap();
    alice.create_room("other").await.unwrap();
    let mut bob = stream(&gw, "bob", "dash,news", None).await;
    assert_eq!(joined(&mut bob, &["dash", "news"]).await, "dash:0,news:0");

    send(&mut alice, "dash", "d1").await;
    send(&mut alice, "other", "not listed").await;
    send(&mut alice, "news", "n1").await;
    send(&mut alice, "dash", "d2").await;
    assert_eq!(
        next_message_event(&mut bob).await,
        ("dash:1,news:0".to_owned(), 1, "d1".to_owned())
    );
    assert_eq!(
        next_message_event(&mut bob).await,
        ("dash:1,news:1".to_owned(), 1, "n1".to_owned())
    );
    let (last_id, seq, _) = next_message_event(&mut bob).await;
    assert_eq!((last_id.as_str(), seq), ("dash:2,news:1", 2));
    let id = alice.next_id();
    alice
        .request(&ClientFrame::RoomEmit {
            id,
            room_id: room("dash"),
            event: "chart:update".into(),
            data: json!({ "points": [1, 2, 3] }),
        })
        .await
        .unwrap();
    let event = bob.next().await.unwrap();
    assert_eq!(event.event, "room:event");
    assert_eq!(
        event.json().unwrap()["data"],
        json!({ "points": [1, 2, 3] })
    );
    // Idle for longer than the silence that closes a WebSocket: still open, pinged. (Alice,
    // whose test client answers pings only when it writes, is closed meanwhile; she comes back.)
    drop(alice);
    bob.expect_quiet(Duration::from_millis(1_500))
        .await
        .unwrap();
    assert!(
        bob.comments.iter().any(|c| c == "ping"),
        "{:?}",
        bob.comments
    );
    let mut alice = connect(&gw, "alice").await;
    drop(bob);

    // Away: two more in dash, one in news. Back with the last id: exactly those, in order,
    // then live ones.
    send(&mut alice, "dash", "d3").await;
    send(&mut alice, "news", "n2").await;
    send(&mut alice, "dash", "d4").await;
    let mut bob = stream(&gw, "bob", "dash,news", Some(&last_id)).await;
    // Room by room, in the order listed: each room's replay, then its `joined`.
    let mut replayed = Vec::new();
    while replayed.len() < 5 {
        let event = bob.next().await.unwrap();
        replayed.push((event.event.clone(), event.id.clone().unwrap_or_default()));
    }
    assert_eq!(
        replayed,
        [
            ("message:new", "dash:3,news:1"),
            ("message:new", "dash:4,news:1"),
            ("joined", "dash:4,news:1"),
            ("message:new", "dash:4,news:2"),
            ("joined", "dash:4,news:2"),
        ]
        .map(|(e, id)| (e.to_owned(), id.to_owned()))
    );
    send(&mut alice, "dash", "d5").await;
    assert_eq!(
        next_message_event(&mut bob).await,
        ("dash:5,news:2".to_owned(), 5, "d5".to_owned())
    );
    bob.expect_quiet(Duration::from_millis(300)).await.unwrap();
}

#[tokio::test]
async fn streams_are_refused_precisely() {
    let gw = gateway_with(&[("SWITCHBOARD_MAX_REPLAY", "3")]).await;
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("open").await.unwrap();
    let id = alice.next_id();
    alice
        .request_ok(&ClientFrame::RoomCreate {
            id,
            room_id: room("secret"),
            name: None,
            kind: switchboard_protocol::RoomKind::Private,
            password: None,
        })
        .await
        .unwrap();
    let refused = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let addr = gw.addr();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            SseClient::connect(addr, path, &headers)
                .await
                .unwrap()
                .err()
                .unwrap_or_else(|| panic!("{path} was not refused"))
        }
    };
    let bearer = format!("Bearer {}", token("bob"));
    let no_token = refused("/sse?rooms=open", vec![]).await;
    assert_eq!(no_token.status, 401);
    let bad_token = refused("/sse?rooms=open&token=nonsense", vec![]).await;
    assert_eq!(bad_token.status, 401);
    let bad_room = refused(
        "/sse?rooms=open,no%20such",
        vec![("Authorization", bearer.clone())],
    )
    .await;
    assert_eq!(bad_room.status, 400);
    assert!(
        bad_room.body.contains("INVALID_IDENTIFIER"),
        "{}",
        bad_room.body
    );
    let bad_id = refused(
        "/sse?rooms=open",
        vec![
            ("Authorization", bearer.clone()),
            ("Last-Event-ID", "open:many".to_owned()),
        ],
    )
    .await;
    assert_eq!(bad_id.status, 400);

    // A token in the query (what EventSource can send); a private room it may not join is
    // refused in an event, and the stream goes on for the other room.
    let path = format!("/sse?rooms=secret,open&token={}", token("bob"));
    let (mut bob, _) = SseClient::connect(gw.addr(), &path, &[])
        .await
        .unwrap()
        .unwrap();
    bob.next_named("session:ready").await.unwrap();
    let error = bob.next().await.unwrap();
    assert_eq!(error.event, "error");
    let error = error.json().unwrap();
    assert_eq!(
        (error["roomId"].as_str(), error["code"].as_str()),
        (Some("secret"), Some("FORBIDDEN"))
    );
    joined(&mut bob, &["open"]).await;
    send(&mut alice, "secret", "hidden").await;
    send(&mut alice, "open", "visible").await;
    assert_eq!(next_message_event(&mut bob).await.2, "visible");
    drop(bob);

    // Beyond the replay limit a resume says so, then goes on from the latest page.
    for i in 2..=10 {
        send(&mut alice, "open", &format!("m{i}")).await;
    }
    let mut bob = stream(&gw, "bob", "open", Some("open:1")).await;
    let resync = bob.next().await.unwrap();
    assert_eq!(resync.event, "resync");
    assert_eq!(
        (
            resync.json().unwrap()["sinceSeq"].as_u64(),
            resync.json().unwrap()["lastSeq"].as_u64()
        ),
        (Some(1), Some(10))
    );
    // Then the latest page, without what the stream had.
    let mut seqs = Vec::new();
    for _ in 2..=10 {
        seqs.push(next_message_event(&mut bob).await.1);
    }
    assert_eq!(seqs, (2..=10).collect::<Vec<_>>());
    assert_eq!(joined(&mut bob, &["open"]).await, "open:10");
}

#[tokio::test]
async fn a_stream_resumes_on_another_node_after_its_node_is_killed() {
    let pg = Postgres::start().await.unwrap();
    let redis = Redis::start().await.unwrap();
    let node = |name: &str| {
        builder()
            .name(name)
            .env("SWITCHBOARD_NODE_ID", name)
            .env("DATABASE_URL", pg.url())
            .env("REDIS_URL", redis.url())
            .env(UNLIMITED_RATE.0, UNLIMITED_RATE.1)
    };
    let mut a = node("node-a").start().await.unwrap();
    let b = node("node-b").start().await.unwrap();
    let mut alice = connect(&b, "alice").await;
    alice.create_room("ops").await.unwrap();
    let mut bob = stream(&a, "bob", "ops", None).await;
    joined(&mut bob, &["ops"]).await;
    for i in 1..=3 {
        send(&mut alice, "ops", &format!("o{i}")).await;
    }
    let mut last = String::new();
    for i in 1..=3 {
        let (id, seq, _) = next_message_event(&mut bob).await;
        assert_eq!(seq, i);
        last = id;
    }
    a.kill_hard().await.unwrap();
    assert!(bob.next().await.is_err(), "the stream ends with its node");
    for i in 4..=6 {
        send(&mut alice, "ops", &format!("o{i}")).await;
    }
    let mut bob = stream(&b, "bob", "ops", Some(&last)).await;
    send(&mut alice, "ops", "o7").await;
    let mut seen = Vec::new();
    for _ in 4..=7 {
        let (_, seq, content) = next_message_event(&mut bob).await;
        seen.push((seq, content));
    }
    assert_eq!(
        seen,
        (4..=7).map(|i| (i, format!("o{i}"))).collect::<Vec<_>>(),
        "nothing missing, nothing repeated"
    );
    bob.expect_quiet(Duration::from_millis(300)).await.unwrap();
}

#[tokio::test]
async fn a_stream_counts_as_a_connection_and_one_not_read_is_cut_off() {
    let gw = gateway_with(&[
        UNLIMITED_RATE,
        ("SWITCHBOARD_MAX_CONNECTIONS", "2"),
        ("SWITCHBOARD_WRITE_TIMEOUT_MS", "300"),
    ])
    .await;
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("firehose").await.unwrap();
    let mut bob = stream(&gw, "bob", "firehose", None).await;
    joined(&mut bob, &["firehose"]).await;
    // Two connections open, one of them a stream: the node is full.
    let auth = format!("Bearer {}", token("carol"));
    let full = SseClient::connect(
        gw.addr(),
        "/sse?rooms=firehose",
        &[("Authorization", &auth)],
    )
    .await
    .unwrap()
    .expect_err("refused");
    assert_eq!(full.status, 503);
    assert!(full.body.contains("NODE_FULL"), "{}", full.body);

    // Bob stops reading while far more than his socket and queue hold is sent.
    let filler = "x".repeat(4_000);
    let total = 3_000;
    for i in 0..total {
        send(&mut alice, "firehose", &format!("{i} {filler}")).await;
    }
    let mut received = 0;
    while let Ok(event) = bob.next().await {
        if event.event == "message:new" {
            received += 1;
        }
    }
    assert!(received < total, "cut off: {received} of {total}");
    assert_eq!(
        gw.metric("switchboard_slow_consumers_total").await.unwrap(),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_stream_of_no_room_carries_the_users_own_events() {
    const KEY: &str = "sse-test-api-key-0123456789";
    let gw = gateway_with(&[UNLIMITED_RATE, ("SWITCHBOARD_API_KEYS", KEY)]).await;
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("lobby").await.unwrap();
    let mut bob = stream(&gw, "bob", "", None).await;
    let api = |path: &'static str, body: serde_json::Value| {
        let addr = gw.addr();
        async move {
            let auth = format!("Bearer {KEY}");
            let body = body.to_string();
            let headers = [
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ];
            switchboard_testkit::http_request(addr, "POST", path, &headers, body.as_bytes())
                .await
                .unwrap()
        }
    };
    // Sent first: were it on the stream, it would come before the notification.
    send(&mut alice, "lobby", "not for the stream").await;
    let notified = api(
        "/api/v1/users/bob/notifications",
        json!({ "kind": "order:shipped", "title": "Your order shipped" }),
    )
    .await;
    assert_eq!(notified.status, 201, "{}", notified.text());
    let broadcast = api(
        "/api/v1/broadcast",
        json!({ "users": ["bob"], "event": { "event": "wave", "data": { "from": "ops" } } }),
    )
    .await;
    assert_eq!(broadcast.status, 202, "{}", broadcast.text());

    let notification = bob.next().await.unwrap();
    assert_eq!(notification.event, "notification:new");
    assert_eq!(
        notification.json().unwrap()["notification"]["title"],
        "Your order shipped"
    );
    let event = bob.next().await.unwrap();
    assert_eq!(event.event, "user:event");
    let event = event.json().unwrap();
    assert_eq!(
        (&event["event"], &event["data"]["from"]),
        (&json!("wave"), &json!("ops"))
    );
}

#[tokio::test]
async fn a_stream_asked_for_on_a_kept_alive_connection_is_served_the_same() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = gateway_with(&[UNLIMITED_RATE]).await;
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("dash").await.unwrap();
    // A first request on the connection, its answer read to the end: the connection stays.
    let mut socket = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(socket.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    socket.read_exact(&mut body).await.unwrap();

    let auth = format!("Bearer {}", token("bob"));
    let (mut bob, response) = SseClient::connect_on(
        socket,
        gw.addr(),
        "/sse?rooms=dash",
        &[("Authorization", &auth)],
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    bob.next_named("session:ready").await.unwrap();
    joined(&mut bob, &["dash"]).await;
    send(&mut alice, "dash", "d1").await;
    assert_eq!(
        next_message_event(&mut bob).await,
        ("dash:1".to_owned(), 1, "d1".to_owned())
    );
}

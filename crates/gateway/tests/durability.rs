//! Durability on PostgreSQL: what the server acknowledged survives restarts and outages, and a
//! client that comes back catches up exactly.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use switchboard_protocol::{AckResult, ClientFrame, ServerFrame};
use switchboard_testkit::{Gateway, GatewayBuilder, Postgres, WsClient};

async fn postgres() -> Postgres {
    Postgres::start().await.expect("postgres starts")
}

fn durable(pg: &Postgres) -> GatewayBuilder {
    builder()
        .env("DATABASE_URL", pg.url())
        .env(UNLIMITED_RATE.0, UNLIMITED_RATE.1)
}

async fn rows(pg: &Postgres, sql: &str) -> Vec<String> {
    pg.psql(sql)
        .await
        .unwrap()
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Alice creates `general` and Bob joins it.
async fn alice_and_bob_in_general(gw: &Gateway) -> (WsClient, WsClient) {
    let mut alice = connect(gw, "alice").await;
    alice.create_room("general").await.unwrap();
    let mut bob = connect(gw, "bob").await;
    bob.join_room("general").await.unwrap();
    (alice, bob)
}

#[tokio::test]
async fn acknowledged_messages_survive_a_gateway_restart() {
    let pg = postgres().await;
    let mut gw = durable(&pg).start().await.unwrap();
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("general").await.unwrap();
    for i in 1..=5 {
        assert_eq!(
            send(&mut alice, "general", &format!("before restart {i}")).await,
            i
        );
    }
    let (_, epoch_before) = epoch(&gw, "alice").await;
    drop(alice);
    gw.kill_hard().await.unwrap();

    let gw = gw.same_ports().start().await.unwrap();
    let (mut alice, epoch_after) = epoch(&gw, "alice").await;
    assert_eq!(
        epoch_before, epoch_after,
        "same history, so resuming is valid"
    );
    let AckResult::Room { messages, .. } = alice.join_room("general").await.unwrap() else {
        panic!()
    };
    let contents: Vec<_> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        contents,
        (1..=5)
            .map(|i| format!("before restart {i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        send(&mut alice, "general", "after restart").await,
        6,
        "seq continues"
    );
}

async fn epoch(gw: &Gateway, user: &str) -> (WsClient, String) {
    let (client, ready) = connect_ready(gw, user).await;
    let ServerFrame::SessionReady { epoch, .. } = ready else {
        panic!()
    };
    (client, epoch)
}

#[tokio::test]
async fn a_client_that_missed_200_messages_gets_exactly_those_then_live_ones() {
    let pg = postgres().await;
    let gw = durable(&pg)
        .env("SWITCHBOARD_MAX_REPLAY", "500")
        .start()
        .await
        .unwrap();
    let mut alice = connect(&gw, "alice").await;
    let mut bob = connect(&gw, "bob").await;
    alice.create_room("general").await.unwrap();
    bob.join_room("general").await.unwrap();
    let seen = send(&mut alice, "general", "seen").await;
    assert_eq!(next_message(&mut bob).await.seq, seen);
    drop(bob);
    for i in 1..=200 {
        send(&mut alice, "general", &format!("missed {i}")).await;
    }
    let (mut bob, ready) = connect_ready(&gw, "bob").await;
    let ServerFrame::SessionReady { rooms, .. } = ready else {
        panic!()
    };
    assert_eq!(rooms[0].last_seq, seen + 200);
    let resume = ClientFrame::RoomJoin {
        id: 1,
        room_id: room("general"),
        password: None,
        since_seq: Some(seen),
    };
    let AckResult::Room {
        messages,
        recovered,
        ..
    } = bob.request_ok(&resume).await.unwrap()
    else {
        panic!()
    };
    assert!(recovered);
    assert_eq!(
        messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (seen + 1..=seen + 200).collect::<Vec<_>>()
    );
    assert_eq!(messages[0].content, "missed 1");
    for i in 1..=3 {
        let live = send(&mut alice, "general", &format!("live {i}")).await;
        assert_eq!(next_message(&mut bob).await.seq, live);
    }
    assert_quiet(&mut bob).await;

    // Too far behind for one reply: the server says so.
    let resume = ClientFrame::RoomJoin {
        id: 2,
        room_id: room("general"),
        password: None,
        since_seq: Some(0),
    };
    let gw2 = durable(&pg)
        .env("SWITCHBOARD_MAX_REPLAY", "100")
        .start()
        .await
        .unwrap();
    let mut carol = connect(&gw2, "bob").await;
    let AckResult::Room {
        messages,
        recovered,
        ..
    } = carol.request_ok(&resume).await.unwrap()
    else {
        panic!()
    };
    assert!(!recovered);
    assert_eq!(messages.last().map(|m| m.seq), Some(seen + 203));
    assert_eq!(messages.len(), 50);
}

#[tokio::test]
async fn a_retried_client_msg_id_is_stored_once() {
    let pg = postgres().await;
    let gw = durable(&pg).start().await.unwrap();
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("general").await.unwrap();
    let first = alice
        .request(&message_send(10, "general", "once", "retry-me"))
        .await
        .unwrap();
    // The retry comes on a new connection, as after a reconnect.
    drop(alice);
    let mut alice = connect(&gw, "alice").await;
    let again = alice
        .request(&message_send(11, "general", "once", "retry-me"))
        .await
        .unwrap();
    let seq = |f: &ServerFrame| match f {
        ServerFrame::Ack {
            result: Some(AckResult::Sent { seq, duplicate, .. }),
            ..
        } => (*seq, *duplicate),
        other => panic!("{other:?}"),
    };
    assert_eq!((seq(&first), seq(&again)), ((1, false), (1, true)));
    let stored = rows(
        &pg,
        "SELECT count(*) FROM messages WHERE client_msg_id = 'retry-me'",
    )
    .await;
    assert_eq!(stored, vec!["1"]);
}

#[tokio::test]
async fn concurrent_senders_in_one_room_produce_a_gap_free_seq() {
    let pg = postgres().await;
    // Nine clients on the test's one thread read 400 frames each while they wait for acks; on a
    // machine busy with other suites they can stall for seconds, which the default queue delay
    // (2 s) would rightly call a slow consumer. That rule has tests of its own.
    let gw = durable(&pg)
        .env("SWITCHBOARD_MAX_QUEUE_DELAY_MS", "60000")
        .start()
        .await
        .unwrap();
    let mut owner = connect(&gw, "owner").await;
    owner.create_room("busy").await.unwrap();
    let mut tasks = Vec::new();
    for s in 0..8 {
        let url = gw.ws_url();
        tasks.push(tokio::spawn(async move {
            let name = format!("sender{s}");
            let (mut client, _) = WsClient::connect_session(
                &url,
                switchboard_testkit::ConnectOptions::bearer(token(&name)),
            )
            .await
            .unwrap();
            client.join_room("busy").await.unwrap();
            let mut seqs = Vec::new();
            for i in 0..50 {
                seqs.push(send(&mut client, "busy", &format!("{name} {i}")).await);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=400).collect::<Vec<_>>(),
        "every ack has its own seq, none missing"
    );
    let stored = rows(&pg, "SELECT min(seq), max(seq), count(*), count(DISTINCT seq) FROM messages WHERE room = 'busy'").await;
    assert_eq!(stored, vec!["1|400|400|400"]);
    // The room's owner saw all 400 live, in order.
    let mut seen = Vec::new();
    for _ in 0..400 {
        seen.push(next_message(&mut owner).await.seq);
    }
    assert_eq!(seen, (1..=400).collect::<Vec<_>>());
}

#[tokio::test]
async fn postgres_down_means_clear_errors_then_recovery_and_nothing_acknowledged_is_lost() {
    let mut pg = postgres().await;
    let gw = durable(&pg)
        .env("SWITCHBOARD_DB_TIMEOUT_MS", "1000")
        .start()
        .await
        .unwrap();
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("general").await.unwrap();
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut refused = 0;
    let mut i = 0;
    let mut send_one =
        async |alice: &mut WsClient, acked: &mut HashMap<String, u64>, refused: &mut u32| {
            i += 1;
            let id = format!("m{i}");
            match alice
                .request(&message_send(i, "general", &id, &id))
                .await
                .unwrap()
            {
                ServerFrame::Ack {
                    result: Some(AckResult::Sent { seq, .. }),
                    ..
                } => {
                    acked.insert(id, seq);
                }
                ServerFrame::Ack { error: Some(e), .. } => {
                    assert_eq!(e.code.as_str(), "STORE_UNAVAILABLE", "{e:?}");
                    *refused += 1;
                }
                other => panic!("{other:?}"),
            }
        };
    for _ in 0..20 {
        send_one(&mut alice, &mut acked, &mut refused).await;
    }
    pg.stop().await.unwrap();
    for _ in 0..5 {
        send_one(&mut alice, &mut acked, &mut refused).await;
    }
    assert!(
        refused >= 5,
        "every send while the database is down is refused ({refused})"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gw.http_get("/readyz").await.unwrap().status != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never reported the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection stayed open through it.
    assert!(matches!(
        alice
            .request(&ClientFrame::Ping { id: Some(999) })
            .await
            .unwrap(),
        ServerFrame::Pong { .. }
    ));

    pg.restart().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while gw.http_get("/readyz").await.unwrap().status != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node never became ready again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = refused;
    for _ in 0..20 {
        send_one(&mut alice, &mut acked, &mut refused).await;
    }
    assert_eq!(
        refused, before,
        "sends succeed again once the database is back"
    );
    let stored = rows(
        &pg,
        "SELECT client_msg_id || '=' || seq FROM messages WHERE room = 'general'",
    )
    .await;
    for (id, seq) in &acked {
        assert!(
            stored.contains(&format!("{id}={seq}")),
            "acknowledged {id} (seq {seq}) is missing"
        );
    }
    let seqs = rows(
        &pg,
        "SELECT max(seq) = count(*) FROM messages WHERE room = 'general'",
    )
    .await;
    assert_eq!(seqs, vec!["t"], "gap-free after the outage");
}

/// What one sending connection saw through the freezes.
#[derive(Debug, Default)]
struct Sender {
    acked: HashMap<String, u64>,
    unknown: Vec<String>,
    unavailable: Vec<String>,
    /// `message:new` frames for this connection's own messages: `(clientMsgId, seq)`.
    echoed: Vec<(String, u64)>,
}

/// Sends `key` and waits for its answer, noting `message:new` frames for its own keys.
async fn send_keyed(
    client: &mut WsClient,
    key: &str,
    prefix: &str,
    echoed: &mut Vec<(String, u64)>,
) -> Result<(u64, bool), String> {
    let id = client.next_id();
    client
        .send(&message_send(id, "general", key, key))
        .await
        .unwrap();
    loop {
        match client.recv().await.unwrap() {
            ServerFrame::MessageNew { message } if message.client_msg_id.starts_with(prefix) => {
                echoed.push((message.client_msg_id, message.seq));
            }
            ServerFrame::Ack {
                id: reply,
                result: Some(AckResult::Sent { seq, duplicate, .. }),
                ..
            } if reply == id => return Ok((seq, duplicate)),
            ServerFrame::Ack {
                id: reply,
                error: Some(error),
                ..
            } if reply == id => return Err(error.code.as_str().to_owned()),
            _ => {}
        }
    }
}

/// PostgreSQL frozen (SIGSTOP, every process) for longer than the store timeout, three times,
/// under traffic from three connections. A send answered `STORE_UNAVAILABLE` stored nothing:
/// its retry is new. A send answered `OUTCOME_UNKNOWN` may have been stored: its retry settles
/// it. A message of its own that reaches the sending connection as `message:new` (a gap filled
/// from the store) is the acknowledged one: same seq. Every seq reaches the other member once,
/// in order, and every acknowledged message is stored once.
#[tokio::test]
async fn a_frozen_database_answers_what_a_retry_can_settle() {
    let pg = postgres().await;
    let gw = durable(&pg)
        .env("SWITCHBOARD_DB_TIMEOUT_MS", "400")
        .start()
        .await
        .unwrap();
    let (mut alice, mut bob) = alice_and_bob_in_general(&gw).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for n in 0..3 {
        let mut client = connect(&gw, "alice").await;
        let stop = stop.clone();
        senders.push(tokio::spawn(async move {
            let prefix = format!("s{n}-");
            let mut seen = Sender::default();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let key = format!("{prefix}{i}");
                match send_keyed(&mut client, &key, &prefix, &mut seen.echoed).await {
                    Ok((seq, _)) => {
                        seen.acked.insert(key, seq);
                    }
                    Err(code) if code == "OUTCOME_UNKNOWN" => seen.unknown.push(key),
                    Err(code) if code == "STORE_UNAVAILABLE" => seen.unavailable.push(key),
                    Err(code) => panic!("{key}: {code}"),
                }
            }
            // The retries settle every failed send; STORE_UNAVAILABLE ones were never stored.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            for key in seen.unknown.iter().chain(&seen.unavailable) {
                let (seq, duplicate) = loop {
                    match send_keyed(&mut client, key, &prefix, &mut seen.echoed).await {
                        Ok(settled) => break settled,
                        Err(code) => {
                            assert!(
                                tokio::time::Instant::now() < deadline,
                                "{key}: still {code}"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                if seen.unavailable.contains(key) {
                    assert!(
                        !duplicate,
                        "{key} was answered STORE_UNAVAILABLE, yet it was stored"
                    );
                }
                seen.acked.insert(key.clone(), seq);
            }
            (client, seen)
        }));
    }
    for _ in 0..3 {
        wait_for_acks(&pg, 20).await;
        pg.freeze().unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        pg.thaw().unwrap();
    }
    wait_for_acks(&pg, 20).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut clients = Vec::new();
    let (mut unknown, mut unavailable) = (0, 0);
    for sender in senders {
        let (client, seen) = sender.await.unwrap();
        for (key, seq) in &seen.echoed {
            assert_eq!(
                seen.acked.get(key),
                Some(seq),
                "{key} came back to its sender with another seq than its ack's"
            );
        }
        unknown += seen.unknown.len();
        unavailable += seen.unavailable.len();
        acked.extend(seen.acked);
        clients.push(client);
    }
    assert!(unknown + unavailable > 0, "the freezes made sends fail");
    // One more message closes any gap a stored-but-unpublished message left.
    let last = send(&mut alice, "general", "after the freezes").await;
    let mut received = Vec::new();
    while received.last() != Some(&last) {
        received.push(next_message(&mut bob).await.seq);
    }
    assert_eq!(
        received,
        (1..=last).collect::<Vec<_>>(),
        "bob gets every seq once, in order ({unknown} unknown, {unavailable} unavailable)"
    );
    let stored = rows(
        &pg,
        "SELECT client_msg_id || '=' || seq FROM messages WHERE room = 'general'",
    )
    .await;
    assert_eq!(stored.len() as u64, last, "one row per seq");
    for (key, seq) in &acked {
        assert!(
            stored.contains(&format!("{key}={seq}")),
            "acknowledged {key} (seq {seq}) is not stored"
        );
    }
}

/// A send that waits seconds for a frozen store holds its session up: it cannot write what the
/// room sends meanwhile. That is the node's delay, not a slow client: the connection is not
/// cut off as a slow consumer (4005) however short the queue delay, gets what was queued, then
/// its answer, and carries on.
#[tokio::test]
async fn a_session_waiting_on_its_own_send_is_not_a_slow_consumer() {
    let pg = postgres().await;
    let gw = durable(&pg)
        .env("SWITCHBOARD_DB_TIMEOUT_MS", "3000")
        .env("SWITCHBOARD_MAX_QUEUE_DELAY_MS", "100")
        .start()
        .await
        .unwrap();
    let (mut alice, mut bob) = alice_and_bob_in_general(&gw).await;
    pg.freeze().unwrap();
    let id = alice.next_id();
    alice
        .send(&message_send(id, "general", "stuck", "stuck"))
        .await
        .unwrap();
    let typing = |start: bool| {
        let room_id = room("general");
        if start {
            ClientFrame::TypingStart { room_id }
        } else {
            ClientFrame::TypingStop { room_id }
        }
    };
    bob.send(&typing(true)).await.unwrap();
    // Three times the queue delay between two frames for alice, both while her send waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.send(&typing(false)).await.unwrap();
    let (mut answer, mut seen) = (None, Vec::new());
    while answer.is_none() || seen.len() < 2 {
        match alice.recv().await.expect("alice stays connected") {
            ServerFrame::Ack {
                id: reply,
                error: Some(error),
                ..
            } if reply == id => answer = Some(error.code.as_str().to_owned()),
            ServerFrame::TypingStart { user, .. } => seen.push(format!("start {}", user.id)),
            ServerFrame::TypingStop { user_id, .. } => seen.push(format!("stop {user_id}")),
            _ => {}
        }
    }
    let answer = answer.unwrap_or_default();
    assert!(
        ["STORE_UNAVAILABLE", "OUTCOME_UNKNOWN"].contains(&answer.as_str()),
        "{answer}"
    );
    assert_eq!(seen, ["start bob", "stop bob"]);
    pg.thaw().unwrap();
    let seq = send(&mut alice, "general", "after the thaw").await;
    assert!(seq >= 1);
}

/// 50 users connect at once to a node whose PostgreSQL pool has one connection, while
/// PostgreSQL is frozen. Four sessions (four per pool connection, the default) make their
/// start-up calls and wait on the store; the other 46 wait for their turn in the gateway, where
/// no store timeout runs, as `switchboard_session_starts_waiting` shows. Once PostgreSQL
/// answers again every one gets `session:ready`: none is closed with 1011.
#[tokio::test]
async fn a_connect_storm_waits_its_turn_and_every_session_starts() {
    const STORM: usize = 50;
    let pg = postgres().await;
    let gw = durable(&pg)
        .env("SWITCHBOARD_DB_POOL_SIZE", "1")
        .env("SWITCHBOARD_DB_TIMEOUT_MS", "20000")
        .start()
        .await
        .unwrap();
    pg.freeze().unwrap();
    let storm: Vec<_> = (0..STORM)
        .map(|n| {
            let url = gw.ws_url();
            tokio::spawn(async move {
                let options = switchboard_testkit::ConnectOptions::bearer(token(&format!("s{n}")))
                    .with_timeout(Duration::from_secs(60));
                WsClient::connect_session(&url, options)
                    .await
                    .map(|(client, _)| client)
                    .map_err(|error| format!("s{n}: {error:#}"))
            })
        })
        .collect();
    let waiting = format!("switchboard_session_starts_waiting {}", STORM - 4);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = gw.metrics().await.unwrap();
        if metrics.lines().any(|line| line == waiting) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {waiting:?}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg.thaw().unwrap();
    let mut clients = Vec::new();
    let mut failed = Vec::new();
    for task in storm {
        match task.await.unwrap() {
            Ok(client) => clients.push(client),
            Err(error) => failed.push(error),
        }
    }
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    let users = rows(&pg, "SELECT count(*) FROM users WHERE id LIKE 's%'").await;
    assert_eq!(users, vec![STORM.to_string()]);
    let metrics = gw.metrics().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line == "switchboard_session_starts_waiting 0"),
        "{metrics}"
    );
}

/// Waits until `more` messages were committed since the call: traffic is flowing.
async fn wait_for_acks(pg: &Postgres, more: usize) {
    let count = async || {
        rows(pg, "SELECT count(*) FROM messages").await[0]
            .parse::<usize>()
            .unwrap()
    };
    let start = count().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count().await < start + more {
        assert!(tokio::time::Instant::now() < deadline, "no traffic");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! Webhooks through the real binary to a real HTTP receiver (testkit's `Receiver`): every event
//! signed as Standard Webhooks says and shaped as docs/webhooks.md says; a receiver that fails
//! gets the webhook again under the same id until it answers; one out of retries is kept as
//! failed, listed and sent again through the server API; with PostgreSQL the webhook commits
//! with its message, and a node killed while delivering leaves its webhooks to another node;
//! presence webhooks are debounced across a reload and across a node's death.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_testkit::receiver::{Receiver, Recorded, Reply};
use switchboard_testkit::{Gateway, GatewayBuilder, Postgres, Redis, http_request};

use common::{builder, connect};

const SIGNING_SECRET: &str = "whsec_c3dpdGNoYm9hcmQtaG9va3MtdGVzdC1rZXktMzJieSE=";
const API_KEY: &str = "webhook-test-api-key-0123456789";
const WAIT: Duration = Duration::from_secs(20);

fn with_webhooks(receiver: &Receiver, extra: &[(&str, &str)]) -> GatewayBuilder {
    extra.iter().fold(
        builder()
            .env("SWITCHBOARD_WEBHOOK_URL", receiver.url("/webhooks"))
            .env("SWITCHBOARD_SIGNING_SECRETS", SIGNING_SECRET)
            .env("SWITCHBOARD_API_KEYS", API_KEY),
        |b, (k, v)| b.env(*k, *v),
    )
}

async fn api(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let auth = format!("Bearer {API_KEY}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = http_request(
        gw.addr(),
        method,
        path,
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await
    .unwrap();
    (response.status, response.json().unwrap_or(Value::Null))
}

/// The app's backend creates a notification for `user` (a `notification.created` event).
async fn notify(gw: &Gateway, user: &str, kind: &str, title: &str) {
    let path = format!("/api/v1/users/{user}/notifications");
    let (status, answer) = api(
        gw,
        "POST",
        &path,
        Some(json!({"kind": kind, "title": title})),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
}

fn payload(request: &Recorded) -> Value {
    request.json().unwrap()
}

/// Waits until the metric `series` reads `expected`: a delivery is counted once its answer is
/// read, after the receiver has recorded the request.
async fn metric_reaches(gw: &Gateway, series: &str, expected: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = gw.metric(series).await.unwrap();
        if value == Some(expected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is {value:?}, expected {expected}"
        );
        // Polled: nothing tells a test that a metric moved.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every webhook in PostgreSQL's outbox was delivered and its row deleted.
async fn outbox_drains(pg: &Postgres) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = pg
            .psql("SELECT count(*) FROM switchboard_webhooks")
            .await
            .unwrap();
        if left.trim() == "0" {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{left} rows left");
        // Polled: nothing tells a test that a row was deleted.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `done` holds for the failed webhooks the server API lists.
async fn failed_until(gw: &Gateway, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, answer) = api(gw, "GET", "/api/v1/webhooks/failed", None).await;
        assert_eq!(status, 200, "{answer}");
        let list = answer["webhooks"].as_array().cloned().unwrap_or_default();
        if done(&list) {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "failed webhooks never became as expected: {list:?}"
        );
        // The API is polled: nothing tells a test that a retry window ran out.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_event_arrives_signed_once_with_the_documented_shape() {
    let receiver = Receiver::start(|_: &Recorded| Reply::status(204))
        .await
        .unwrap();
    let events = "message.created,room.member_joined,room.member_left,notification.created";
    let gw = with_webhooks(
        &receiver,
        &[
            ("SWITCHBOARD_WEBHOOK_ROOMS", "lobby"),
            ("SWITCHBOARD_WEBHOOK_EVENTS", events),
        ],
    )
    .start()
    .await
    .unwrap();
    let mut alice = connect(&gw, "alice").await;
    let mut bob = connect(&gw, "bob").await;

    // A room outside SWITCHBOARD_WEBHOOK_ROOMS: its events are not sent.
    alice.create_room("backstage").await.unwrap();
    alice
        .send_text("backstage", "not for the app", "m-0")
        .await
        .unwrap();

    alice.create_room("lobby").await.unwrap();
    bob.join_room("lobby").await.unwrap();
    let sent = alice.send_text("lobby", "hello", "m-1").await.unwrap();
    assert!(matches!(
        sent,
        switchboard_protocol::ServerFrame::Ack { error: None, .. }
    ));
    notify(&gw, "bob", "order:shipped", "Your order shipped").await;
    let leave = switchboard_protocol::ClientFrame::RoomLeave {
        id: bob.next_id(),
        room_id: common::room("lobby"),
    };
    bob.request_ok(&leave).await.unwrap();

    let requests = receiver.wait_for(4, WAIT).await.unwrap();
    let by_type: BTreeMap<String, &Recorded> = requests
        .iter()
        .map(|r| (payload(r)["type"].as_str().unwrap().to_owned(), r))
        .collect();
    assert_eq!(
        by_type.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "message.created",
            "notification.created",
            "room.member_joined",
            "room.member_left"
        ],
        "one of each, and nothing from backstage: {requests:?}"
    );
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/webhooks");
        assert!(request.signed_with(SIGNING_SECRET), "{request:?}");
        let body = payload(request);
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'), "{body}");
        assert!(request.header("webhook-id").unwrap().starts_with("evt_"));
    }
    let ids: BTreeSet<&str> = requests
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "a distinct id per event");

    let message = &payload(by_type["message.created"])["data"]["message"];
    assert_eq!(message["roomId"], "lobby");
    assert_eq!(message["seq"], 1);
    assert_eq!(message["content"], "hello");
    assert_eq!(message["sender"], json!({"id": "alice", "name": "Alice"}));
    assert_eq!(message["clientMsgId"], "m-1");
    assert_eq!(
        payload(by_type["room.member_joined"])["data"],
        json!({"roomId": "lobby", "userId": "bob", "role": "member"})
    );
    assert_eq!(
        payload(by_type["room.member_left"])["data"],
        json!({"roomId": "lobby", "userId": "bob"})
    );
    let notification = &payload(by_type["notification.created"])["data"];
    assert_eq!(notification["userId"], "bob");
    assert_eq!(notification["notification"]["kind"], "order:shipped");
    assert_eq!(notification["notification"]["title"], "Your order shipped");
    assert!(notification["notification"]["id"].as_u64().is_some());
    metric_reaches(
        &gw,
        "switchboard_webhook_attempts_total{outcome=\"delivered\"}",
        4.0,
    )
    .await;
}

#[tokio::test]
async fn a_failing_receiver_gets_the_webhook_again_under_the_same_id_until_it_answers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    // The first two attempts fail (an error status, then a hang past the timeout).
    let receiver =
        Receiver::start(
            move |_: &Recorded| match counted.fetch_add(1, Ordering::SeqCst) {
                0 => Reply::status(500),
                1 => Reply::status(200).after(Duration::from_secs(30)),
                _ => Reply::status(200),
            },
        )
        .await
        .unwrap();
    let gw = with_webhooks(
        &receiver,
        &[
            ("SWITCHBOARD_WEBHOOK_EVENTS", "message.created"),
            ("SWITCHBOARD_WEBHOOK_TIMEOUT_MS", "300"),
            ("SWITCHBOARD_WEBHOOK_BACKOFF_MS", "20"),
            ("SWITCHBOARD_WEBHOOK_BACKOFF_MAX_MS", "100"),
        ],
    )
    .start()
    .await
    .unwrap();
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("lobby").await.unwrap();
    alice.send_text("lobby", "hello", "m-1").await.unwrap();

    let requests = receiver.wait_for(3, WAIT).await.unwrap();
    let first = &requests[0];
    for again in &requests[1..3] {
        assert_eq!(again.header("webhook-id"), first.header("webhook-id"));
        assert_eq!(again.body, first.body, "the same bytes every attempt");
        assert!(again.signed_with(SIGNING_SECRET));
    }
    let attempts =
        |outcome: &str| format!("switchboard_webhook_attempts_total{{outcome=\"{outcome}\"}}");
    metric_reaches(&gw, &attempts("delivered"), 1.0).await;
    assert_eq!(gw.metric(&attempts("retry")).await.unwrap(), Some(2.0));
    // Delivered: no fourth attempt is made (a second message's webhook is the next request).
    alice.send_text("lobby", "again", "m-2").await.unwrap();
    let requests = receiver.wait_for(4, WAIT).await.unwrap();
    assert_ne!(requests[3].header("webhook-id"), first.header("webhook-id"));
    assert_eq!(payload(&requests[3])["data"]["message"]["content"], "again");
}

#[tokio::test]
async fn a_webhook_out_of_retries_is_kept_as_failed_listed_and_sent_again() {
    let up = Arc::new(AtomicBool::new(false));
    let receiving = Arc::clone(&up);
    let receiver = Receiver::start(move |_: &Recorded| {
        if receiving.load(Ordering::SeqCst) {
            Reply::status(200)
        } else {
            Reply::status(503)
        }
    })
    .await
    .unwrap();
    let gw = with_webhooks(
        &receiver,
        &[
            ("SWITCHBOARD_WEBHOOK_RETRY_FOR_MS", "300"),
            ("SWITCHBOARD_WEBHOOK_BACKOFF_MS", "20"),
            ("SWITCHBOARD_WEBHOOK_BACKOFF_MAX_MS", "50"),
        ],
    )
    .start()
    .await
    .unwrap();
    notify(&gw, "bob", "reminder", "Stand-up in 5").await;

    let failed = failed_until(&gw, |list| !list.is_empty()).await;
    assert_eq!(failed.len(), 1);
    let webhook = &failed[0];
    assert_eq!(webhook["type"], "notification.created");
    assert_eq!(webhook["lastError"], "HTTP 503");
    assert!(webhook["attempts"].as_u64().unwrap() >= 2, "{webhook}");
    assert_eq!(
        webhook["payload"]["data"]["notification"]["title"],
        "Stand-up in 5"
    );
    assert_eq!(
        gw.metric("switchboard_webhooks_failed_total")
            .await
            .unwrap(),
        Some(1.0)
    );
    let id = webhook["id"].as_str().unwrap().to_owned();
    let seen = receiver.requests().len();

    up.store(true, Ordering::SeqCst);
    let (status, answer) = api(
        &gw,
        "POST",
        &format!("/api/v1/webhooks/failed/{id}/retry"),
        None,
    )
    .await;
    assert_eq!(
        (status, &answer["retrying"]),
        (200, &json!(true)),
        "{answer}"
    );
    let requests = receiver.wait_for(seen + 1, WAIT).await.unwrap();
    assert_eq!(requests[seen].header("webhook-id"), Some(id.as_str()));
    failed_until(&gw, <[Value]>::is_empty).await;
    let (status, answer) = api(
        &gw,
        "POST",
        &format!("/api/v1/webhooks/failed/{id}/retry"),
        None,
    )
    .await;
    assert_eq!(status, 404, "delivered, so no longer failed: {answer}");
    let (status, _) = api(&gw, "POST", "/api/v1/webhooks/failed/nope/retry", None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn with_postgresql_webhooks_commit_with_their_messages_and_survive_a_killed_node() {
    let pg = Postgres::start().await.unwrap();
    let stalled = Arc::new(AtomicBool::new(true));
    let stall = Arc::clone(&stalled);
    // While stalled the receiver holds every request far past the webhook timeout: the node
    // that claimed them is mid-delivery when it is killed.
    let receiver = Receiver::start(move |_: &Recorded| {
        if stall.load(Ordering::SeqCst) {
            Reply::status(200).after(Duration::from_secs(60))
        } else {
            Reply::status(200)
        }
    })
    .await
    .unwrap();
    let node = |name: &str| {
        with_webhooks(
            &receiver,
            &[
                ("SWITCHBOARD_WEBHOOK_EVENTS", "message.created"),
                ("SWITCHBOARD_WEBHOOK_TIMEOUT_MS", "2000"),
                ("SWITCHBOARD_WEBHOOK_POLL_MS", "100"),
            ],
        )
        .env("DATABASE_URL", pg.url())
        .name(name)
    };
    let mut a = node("gateway-a").start().await.unwrap();
    let mut alice = connect(&a, "alice").await;
    alice.create_room("orders").await.unwrap();
    for i in 1..=5 {
        let ack = alice
            .send_text("orders", &format!("order {i}"), &format!("o-{i}"))
            .await
            .unwrap();
        assert!(
            matches!(
                ack,
                switchboard_protocol::ServerFrame::Ack { error: None, .. }
            ),
            "{ack:?}"
        );
    }
    // Acknowledged means committed, and each message's webhook with it.
    let rows = pg
        .psql("SELECT count(*) FROM switchboard_webhooks WHERE type = 'message.created'")
        .await
        .unwrap();
    let stalled_requests = receiver.wait_for(5, WAIT).await.unwrap();
    assert!(rows.trim() == "5", "rows: {rows}");
    let ids: BTreeSet<String> = stalled_requests
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        5,
        "node A claimed all five and is delivering them"
    );

    a.kill_hard().await.unwrap();
    stalled.store(false, Ordering::SeqCst);
    let b = node("gateway-b").start().await.unwrap();
    // B takes them once A's leases run out, and delivers each.
    let requests = receiver.wait_for(10, WAIT).await.unwrap();
    let redelivered: BTreeSet<String> = requests[5..]
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(redelivered, ids, "every webhook, under its own id");
    let contents: BTreeSet<String> = requests[5..]
        .iter()
        .map(|r| {
            payload(r)["data"]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(contents.len(), 5, "{contents:?}");
    outbox_drains(&pg).await;
    assert_eq!(
        b.metric("switchboard_webhook_attempts_total{outcome=\"delivered\"}")
            .await
            .unwrap(),
        Some(5.0)
    );
}

/// Unix milliseconds now, as `lastSeen` counts.
fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::try_from(since.unwrap().as_millis()).unwrap()
}

/// The `type` of each webhook, in arrival order.
fn presence_kinds(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| payload(r)["type"].as_str().unwrap().to_owned())
        .collect()
}

/// `(type, userId)` of each presence webhook, in arrival order.
fn presence_events(requests: &[Recorded]) -> Vec<(String, String)> {
    requests
        .iter()
        .map(|r| {
            let body = payload(r);
            let kind = body["type"].as_str().unwrap().to_owned();
            (kind, body["data"]["userId"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_reload_within_the_grace_sends_no_offline_online_pair() {
    let receiver = Receiver::start(|_: &Recorded| Reply::status(204))
        .await
        .unwrap();
    let gw = with_webhooks(
        &receiver,
        &[("SWITCHBOARD_WEBHOOK_EVENTS", "user.online,user.offline")],
    )
    .start()
    .await
    .unwrap();
    let mut alice = connect(&gw, "alice").await;
    let online = receiver.wait_for(1, WAIT).await.unwrap();
    assert_eq!(
        presence_events(&online),
        [("user.online".to_owned(), "alice".to_owned())]
    );
    assert!(online[0].signed_with(SIGNING_SECRET), "{:?}", online[0]);
    assert_eq!(payload(&online[0])["data"], json!({"userId": "alice"}));

    // Two page reloads: the connection goes and a new one comes, well within the 5 s grace.
    for _ in 0..2 {
        alice.close().await.unwrap();
        alice = connect(&gw, "alice").await;
    }
    // Bob comes and goes for good; his pair is the only one before Alice's offline.
    let mut bob = connect(&gw, "bob").await;
    bob.close().await.unwrap();
    let alice_left = unix_ms();
    alice.close().await.unwrap();

    let requests = receiver.wait_for(4, WAIT).await.unwrap();
    // Deliveries run side by side: the order holds per user.
    let events = presence_events(&requests);
    for user in ["alice", "bob"] {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|(_, u)| u == user)
            .map(|(kind, _)| kind.as_str())
            .collect();
        assert_eq!(
            kinds,
            ["user.online", "user.offline"],
            "{user}: no offline/online pair for the reloads: {events:?}"
        );
    }
    let offline = requests
        .iter()
        .map(payload)
        .find(|p| p["type"] == "user.offline" && p["data"]["userId"] == "alice")
        .unwrap();
    let last_seen = offline["data"]["lastSeen"].as_u64().unwrap();
    assert!(
        last_seen >= alice_left,
        "{offline}: she left at {alice_left}"
    );
    assert!(requests.iter().all(|r| r.signed_with(SIGNING_SECRET)));
    metric_reaches(
        &gw,
        "switchboard_webhook_attempts_total{outcome=\"delivered\"}",
        4.0,
    )
    .await;
    assert_eq!(receiver.requests().len(), 4, "nothing else was sent");
}

#[tokio::test]
async fn a_user_back_on_another_node_after_their_node_died_was_never_offline() {
    let pg = Postgres::start().await.unwrap();
    let redis = Redis::start().await.unwrap();
    let receiver = Receiver::start(|_: &Recorded| Reply::status(204))
        .await
        .unwrap();
    let node = |name: &str| {
        with_webhooks(
            &receiver,
            &[
                ("SWITCHBOARD_WEBHOOK_EVENTS", "user.online,user.offline"),
                ("SWITCHBOARD_WEBHOOK_POLL_MS", "100"),
                // A's claims run out 5 s after it died.
                ("SWITCHBOARD_WEBHOOK_TIMEOUT_MS", "2000"),
                ("SWITCHBOARD_PRESENCE_TTL_MS", "2000"),
                ("SWITCHBOARD_PRESENCE_REFRESH_MS", "500"),
                ("SWITCHBOARD_PRESENCE_GRACE_MS", "8000"),
            ],
        )
        .env("DATABASE_URL", pg.url())
        .env("REDIS_URL", redis.url())
        .name(name)
    };
    let mut a = node("gateway-a").start().await.unwrap();
    let b = node("gateway-b").start().await.unwrap();
    let _alice_on_a = connect(&a, "alice").await;
    let online = receiver.wait_for(1, WAIT).await.unwrap();
    assert_eq!(
        presence_events(&online),
        [("user.online".to_owned(), "alice".to_owned())]
    );

    // Her node dies; B finds it dead and her gone, and she reconnects to B within the grace.
    a.kill_hard().await.unwrap();
    metric_reaches(&b, "switchboard_presence_departed_total", 1.0).await;
    let mut alice = connect(&b, "alice").await;
    let left = unix_ms();
    alice.close().await.unwrap();

    // At least once: A may have died after the receiver had the online webhook but before it
    // recorded the delivery, and B sends it again under its id. The app dedupes by id.
    let requests = distinct(&receiver, 2).await;
    assert_eq!(
        presence_events(&requests),
        [
            ("user.online".to_owned(), "alice".to_owned()),
            ("user.offline".to_owned(), "alice".to_owned()),
        ],
        "the failover was no offline/online pair"
    );
    let offline = payload(&requests[1]);
    assert!(
        offline["data"]["lastSeen"].as_u64().unwrap() >= left,
        "{offline}"
    );
    outbox_drains(&pg).await;
    let sent: BTreeSet<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(sent.len(), 2, "nothing else was sent");
}

/// The first `n` webhooks with distinct ids, each as first received.
async fn distinct(receiver: &Receiver, n: usize) -> Vec<Recorded> {
    let mut wanted = n;
    loop {
        let requests = receiver.wait_for(wanted, WAIT).await.unwrap();
        let mut seen = BTreeSet::new();
        let firsts: Vec<Recorded> = requests
            .into_iter()
            .filter(|r| seen.insert(r.header("webhook-id").unwrap().to_owned()))
            .collect();
        if firsts.len() >= n {
            return firsts;
        }
        wanted += n - firsts.len();
    }
}

#[tokio::test]
async fn a_room_is_vacated_only_when_no_member_is_connected_on_any_node() {
    let pg = Postgres::start().await.unwrap();
    let redis = Redis::start().await.unwrap();
    let receiver = Receiver::start(|_: &Recorded| Reply::status(204))
        .await
        .unwrap();
    let node = |name: &str| {
        with_webhooks(
            &receiver,
            &[
                (
                    "SWITCHBOARD_WEBHOOK_EVENTS",
                    "user.online,user.offline,room.occupied,room.vacated",
                ),
                ("SWITCHBOARD_WEBHOOK_POLL_MS", "100"),
                ("SWITCHBOARD_PRESENCE_GRACE_MS", "1000"),
            ],
        )
        .env("DATABASE_URL", pg.url())
        .env("REDIS_URL", redis.url())
        .name(name)
    };
    let a = node("gateway-a").start().await.unwrap();
    let b = node("gateway-b").start().await.unwrap();
    let mut alice = connect(&a, "alice").await;
    let online = distinct(&receiver, 1).await;
    assert_eq!(presence_kinds(&online), ["user.online"]);
    alice.create_room("lobby").await.unwrap();
    let occupied = distinct(&receiver, 2).await;
    assert_eq!(payload(&occupied[1])["type"], "room.occupied");
    assert_eq!(payload(&occupied[1])["data"], json!({"roomId": "lobby"}));

    // Bob, online through node B before he joins, keeps the room occupied after Alice is gone.
    let mut bob = connect(&b, "bob").await;
    let bob_online = distinct(&receiver, 3).await;
    assert_eq!(
        presence_events(&bob_online[2..]),
        [("user.online".to_owned(), "bob".to_owned())]
    );
    bob.join_room("lobby").await.unwrap();
    alice.close().await.unwrap();
    let alice_gone = distinct(&receiver, 4).await;
    assert_eq!(
        presence_events(&alice_gone[3..]),
        [("user.offline".to_owned(), "alice".to_owned())]
    );
    bob.close().await.unwrap();

    let requests = distinct(&receiver, 6).await;
    let mut events = presence_kinds(&requests);
    events.sort();
    assert_eq!(
        events,
        [
            "room.occupied",
            "room.vacated",
            "user.offline",
            "user.offline",
            "user.online",
            "user.online"
        ],
        "each once"
    );
    let bodies: Vec<Value> = requests.iter().map(payload).collect();
    let bob_offline = bodies
        .iter()
        .find(|p| p["type"] == "user.offline" && p["data"]["userId"] == "bob")
        .expect("bob's user.offline");
    let vacated = bodies
        .iter()
        .find(|p| p["type"] == "room.vacated")
        .expect("room.vacated");
    assert_eq!(vacated["data"], json!({"roomId": "lobby"}));
    let vacated_at = switchboard_gateway::rfc3339::parse(vacated["timestamp"].as_str().unwrap())
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    // Bob counts until he is announced offline, the grace after his last connection went.
    let bob_gone = u128::from(bob_offline["data"]["lastSeen"].as_u64().unwrap()) + 1_000;
    assert!(
        vacated_at >= bob_gone,
        "vacated at {vacated_at}, while Bob counted until {bob_gone}"
    );
}

/// Waits, by the clock, until early in a push window of `delay`: windows are aligned to the
/// clock (docs/webhooks.md#push), and what a test does in the next moments then falls in one.
async fn early_in_a_window(delay: Duration) {
    let window = u64::try_from(delay.as_millis()).unwrap();
    let into = unix_ms() % window;
    if into > window / 10 {
        tokio::time::sleep(Duration::from_millis(window - into + 20)).await;
    }
}

#[tokio::test]
async fn a_push_collapses_what_a_user_did_not_read_and_spares_who_read_in_time_or_muted() {
    let pg = Postgres::start().await.unwrap();
    let receiver = Receiver::start(|_: &Recorded| Reply::status(204))
        .await
        .unwrap();
    let delay = Duration::from_secs(3);
    let gw = with_webhooks(
        &receiver,
        &[
            ("SWITCHBOARD_WEBHOOK_EVENTS", "push"),
            ("SWITCHBOARD_PUSH_DELAY_MS", "3000"),
            ("SWITCHBOARD_WEBHOOK_POLL_MS", "100"),
        ],
    )
    .env("DATABASE_URL", pg.url())
    .start()
    .await
    .unwrap();
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("team").await.unwrap();
    let [mut bob, mut carol, mut dave] = [
        connect(&gw, "bob").await,
        connect(&gw, "carol").await,
        connect(&gw, "dave").await,
    ];
    for member in [&mut bob, &mut carol, &mut dave] {
        member.join_room("team").await.unwrap();
    }
    let team = common::room("team");
    let mute = switchboard_protocol::ClientFrame::RoomMute {
        id: dave.next_id(),
        room_id: team.clone(),
        muted: true,
    };
    dave.request_ok(&mute).await.unwrap();
    carol.close().await.unwrap();
    dave.close().await.unwrap();

    early_in_a_window(delay).await;
    for (i, text) in ["one", "two", "three"].into_iter().enumerate() {
        alice
            .send_text("team", text, &format!("t-{i}"))
            .await
            .unwrap();
    }
    let dm = switchboard_protocol::ClientFrame::DmSend {
        id: alice.next_id(),
        recipient_id: common::user("carol"),
        content: "psst".into(),
        kind: switchboard_protocol::MessageKind::Text,
        client_msg_id: "dm-1".into(),
    };
    alice.request_ok(&dm).await.unwrap();
    notify(&gw, "carol", "friend:request", "Bob wants to be friends").await;
    // Bob reads everything at once, on this device: nothing is pushed to him.
    bob.recv_until(|f| {
        matches!(f, switchboard_protocol::ServerFrame::MessageNew { message } if message.seq == 3)
    })
    .await
    .unwrap();
    let read = switchboard_protocol::ClientFrame::MessageRead {
        id: Some(bob.next_id()),
        room_id: team.clone(),
        seq: 3,
    };
    bob.request_ok(&read).await.unwrap();

    let first = receiver.wait_for(1, WAIT).await.unwrap();
    // Every push of a pass commits together: once the outbox is empty, all were delivered.
    outbox_drains(&pg).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "Carol's push alone: {requests:?}");
    assert_eq!(
        requests[0].header("webhook-id"),
        first[0].header("webhook-id")
    );
    assert!(requests[0].signed_with(SIGNING_SECRET));
    let body = payload(&requests[0]);
    assert_eq!(body["type"], "push");
    let data = &body["data"];
    assert_eq!(data["userId"], "carol");
    assert_eq!(
        data["unread"], 5,
        "three in the room, one DM, one notification"
    );
    let direct =
        switchboard_protocol::RoomId::direct(&common::user("alice"), &common::user("carol"))
            .unwrap();
    let alice_ref = json!({"id": "alice", "name": common::display_name("alice")});
    let rooms = data["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 2, "{rooms:?}");
    assert_eq!(rooms[0]["roomId"], direct.as_str());
    assert_eq!(rooms[0]["unread"], 1);
    assert_eq!(rooms[0]["message"]["preview"], "psst");
    assert_eq!(rooms[0]["message"]["sender"], alice_ref);
    assert_eq!(rooms[1]["roomId"], "team");
    assert_eq!(rooms[1]["name"], "team");
    assert_eq!(rooms[1]["unread"], 3);
    assert_eq!(rooms[1]["message"]["seq"], 3);
    assert_eq!(rooms[1]["message"]["preview"], "three");
    assert_eq!(rooms[1]["message"]["kind"], "text");
    assert_eq!(data["notifications"]["unread"], 1);
    assert_eq!(
        data["notifications"]["latest"]["title"],
        "Bob wants to be friends"
    );
    let marks = pg
        .psql("SELECT user_id || '=' || pushed_seq FROM room_members WHERE room = 'team' ORDER BY user_id")
        .await
        .unwrap();
    assert_eq!(
        marks, "alice=3\nbob=0\ncarol=3\ndave=0",
        "pushed to Carol, looked at for Alice (her own owe nothing), Bob read them, Dave muted"
    );

    // The setting through the server API, and as `session:ready` reports it.
    let (status, answer) = api(
        &gw,
        "PUT",
        "/api/v1/rooms/team/members/dave",
        Some(json!({"muted": false})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"roomId": "team", "userId": "dave", "added": false, "muted": false})
    );
    let (status, answer) = api(
        &gw,
        "PUT",
        "/api/v1/rooms/team/members/bob",
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["role"], "admin");
    let (status, answer) = api(
        &gw,
        "PUT",
        "/api/v1/rooms/team/members/bob",
        Some(json!({"role": "not a role"})),
    )
    .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("INVALID_FIELD"))
    );
    let (_, ready) = common::connect_ready(&gw, "bob").await;
    let switchboard_protocol::ServerFrame::SessionReady { rooms, .. } = ready else {
        panic!("{ready:?}");
    };
    assert_eq!(rooms[0].role.as_str(), "admin");
    let dm_path = format!("/api/v1/rooms/{direct}/members/carol");
    let (status, answer) = api(&gw, "PUT", &dm_path, Some(json!({"muted": true}))).await;
    assert_eq!((status, &answer["muted"]), (200, &json!(true)), "{answer}");
    let stranger = format!("/api/v1/rooms/{direct}/members/bob");
    let (status, answer) = api(&gw, "PUT", &stranger, Some(json!({"muted": true}))).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("NOT_A_MEMBER"))
    );
    let (_, ready) = common::connect_ready(&gw, "carol").await;
    let switchboard_protocol::ServerFrame::SessionReady { rooms, .. } = ready else {
        panic!("{ready:?}");
    };
    let muted: Vec<(String, bool)> = rooms
        .iter()
        .map(|r| (r.room_id.as_str().to_owned(), r.muted))
        .collect();
    assert_eq!(
        muted,
        [
            (direct.as_str().to_owned(), true),
            ("team".to_owned(), false)
        ]
    );
}

#[tokio::test]
async fn an_https_receiver_is_reached_when_its_authority_is_trusted_and_never_otherwise() {
    let receiver = Receiver::start_tls(|_: &Recorded| Reply::status(204))
        .await
        .unwrap();
    assert!(receiver.url("/").starts_with("https://"));
    let events = ("SWITCHBOARD_WEBHOOK_EVENTS", "notification.created");
    let trusting = with_webhooks(
        &receiver,
        &[
            events,
            (
                "SWITCHBOARD_OUTCALL_CA_FILE",
                switchboard_testkit::tls::CA_FILE,
            ),
        ],
    )
    .start()
    .await
    .unwrap();
    notify(&trusting, "bob", "friend:request", "over TLS").await;
    let requests = receiver.wait_for(1, WAIT).await.unwrap();
    assert!(requests[0].signed_with(SIGNING_SECRET));
    assert_eq!(
        payload(&requests[0])["data"]["notification"]["title"],
        "over TLS"
    );

    // Without the authority the certificate is refused: the webhook fails, kept with why.
    let wary = with_webhooks(
        &receiver,
        &[events, ("SWITCHBOARD_WEBHOOK_RETRY_FOR_MS", "0")],
    )
    .start()
    .await
    .unwrap();
    notify(&wary, "carol", "friend:request", "not over TLS").await;
    let failed = failed_until(&wary, |list| !list.is_empty()).await;
    let error = failed[0]["lastError"].as_str().unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(receiver.requests().len(), 1, "nothing reached it untrusted");
}

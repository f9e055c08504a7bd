//! The server API through the real binary: keys, limits and errors on one node; publishing,
//! members, events, notifications and disconnects across a cluster of two nodes sharing
//! PostgreSQL and Redis, observed by WebSocket clients.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchboard_protocol::{AckResult, ClientFrame, ServerFrame};
use switchboard_testkit::{
    ConnectOptions, Gateway, GatewayBuilder, HttpResponse, Postgres, Redis, WsClient, http_request,
};

const KEY: &str = "api-key-current-0123456789";
const OLD_KEY: &str = "api-key-previous-0123456789";

/// The app's backend: calls the server API of one node with one key.
struct Backend<'a> {
    gw: &'a Gateway,
    key: &'a str,
}

impl Backend<'_> {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> HttpResponse {
        let auth = format!("Bearer {}", self.key);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        http_request(
            self.gw.addr(),
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await
        .unwrap()
    }

    /// Calls and expects `status`; returns the JSON answer.
    async fn expect(&self, status: u16, method: &str, path: &str, body: Option<Value>) -> Value {
        let response = self.call(method, path, body).await;
        assert_eq!(
            response.status,
            status,
            "{method} {path}: {}",
            response.text()
        );
        response.json().unwrap()
    }

    /// Calls and expects a refusal with `status` and `code`.
    async fn refused(
        &self,
        status: u16,
        code: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) {
        let answer = self.expect(status, method, path, body).await;
        assert_eq!(answer["error"]["code"], code, "{method} {path}: {answer}");
    }
}

fn with_keys(builder: GatewayBuilder) -> GatewayBuilder {
    builder.env("SWITCHBOARD_API_KEYS", format!("{KEY},{OLD_KEY}"))
}

async fn node(pg: &Postgres, redis: &Redis, name: &str) -> Gateway {
    node_with(pg, redis, name, builder()).await
}

async fn node_with(pg: &Postgres, redis: &Redis, name: &str, builder: GatewayBuilder) -> Gateway {
    with_keys(builder)
        .name(name)
        .env("SWITCHBOARD_NODE_ID", name)
        .env("DATABASE_URL", pg.url())
        .env("REDIS_URL", redis.url())
        .env(UNLIMITED_RATE.0, UNLIMITED_RATE.1)
        .start()
        .await
        .unwrap()
}

/// Two nodes sharing PostgreSQL and Redis.
struct Cluster {
    pg: Postgres,
    _redis: Redis,
    a: Gateway,
    b: Gateway,
}

async fn cluster() -> Cluster {
    let pg = Postgres::start().await.unwrap();
    let redis = Redis::start().await.unwrap();
    let a = node(&pg, &redis, "node-a").await;
    let b = node(&pg, &redis, "node-b").await;
    Cluster {
        pg,
        _redis: redis,
        a,
        b,
    }
}

fn message_of(frame: &ServerFrame) -> Option<(u64, String, String)> {
    match frame {
        ServerFrame::MessageNew { message } => Some((
            message.seq,
            message.sender.id.to_string(),
            message.content.clone(),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn a_missing_wrong_or_revoked_key_is_refused_and_no_key_is_logged() {
    let gw = with_keys(builder()).start().await.unwrap();
    let api = Backend { gw: &gw, key: KEY };
    let path = "/api/v1/rooms/lobby";
    let body = json!({ "kind": "public" });

    let anonymous = http_request(gw.addr(), "PUT", path, &[], body.to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    assert_eq!(anonymous.json().unwrap()["error"]["code"], "UNAUTHORIZED");
    for wrong in [
        "api-key-current-012345678",
        "api-key-current-01234567890",
        "Basic x",
    ] {
        let wrong = Backend {
            gw: &gw,
            key: wrong,
        };
        wrong
            .refused(401, "UNAUTHORIZED", "PUT", path, Some(body.clone()))
            .await;
    }
    api.expect(201, "PUT", path, Some(body.clone())).await;
    let old = Backend {
        gw: &gw,
        key: OLD_KEY,
    };
    old.expect(200, "PUT", path, Some(body.clone())).await;

    for (series, count) in [
        (
            r#"switchboard_api_requests_total{operation="none",status="401"}"#,
            4.0,
        ),
        (
            r#"switchboard_api_requests_total{operation="putRoom",status="201"}"#,
            1.0,
        ),
        (
            r#"switchboard_api_requests_total{operation="putRoom",status="200"}"#,
            1.0,
        ),
    ] {
        assert_eq!(gw.metric(series).await.unwrap(), Some(count), "{series}");
    }

    // Rotated: the old key is gone from the configuration.
    drop(gw);
    let gw = builder()
        .env("SWITCHBOARD_API_KEYS", KEY)
        .start()
        .await
        .unwrap();
    let old = Backend {
        gw: &gw,
        key: OLD_KEY,
    };
    old.refused(401, "UNAUTHORIZED", "GET", "/api/v1/openapi.json", None)
        .await;
    let api = Backend { gw: &gw, key: KEY };
    let doc = api.expect(200, "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let logs = gw.logs();
    assert!(!logs.contains(KEY) && !logs.contains(OLD_KEY), "{logs}");

    // With no key configured (and not in dev mode) the API is not there at all.
    let off = builder().start().await.unwrap();
    let answer = Backend { gw: &off, key: KEY }
        .expect(404, "GET", "/api/v1/openapi.json", None)
        .await;
    assert_eq!(answer["error"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn each_key_is_rate_limited_on_its_own_and_bad_requests_get_precise_codes() {
    let gw = with_keys(builder())
        .env("SWITCHBOARD_API_RATE_PER_SEC", "1")
        .env("SWITCHBOARD_API_RATE_BURST", "12")
        .env("SWITCHBOARD_API_MAX_BODY_BYTES", "2048")
        .env("SWITCHBOARD_MAX_EVENT_BYTES", "64")
        .start()
        .await
        .unwrap();
    let api = Backend { gw: &gw, key: KEY };
    api.expect(
        201,
        "PUT",
        "/api/v1/rooms/lobby",
        Some(json!({ "kind": "feed" })),
    )
    .await;
    // Eleven more requests, each refused for its own reason.
    let cases: [(u16, &str, &str, &str, Option<Value>); 10] = [
        (
            404,
            "ROOM_NOT_FOUND",
            "POST",
            "/api/v1/rooms/nowhere/messages",
            Some(json!({ "content": "hi" })),
        ),
        (
            400,
            "INVALID_IDENTIFIER",
            "PUT",
            "/api/v1/rooms/bad%20id",
            Some(json!({ "kind": "public" })),
        ),
        (
            400,
            "INVALID_FIELD",
            "PUT",
            "/api/v1/rooms/lobby",
            Some(json!({ "kind": "direct" })),
        ),
        (
            400,
            "INVALID_FIELD",
            "PUT",
            "/api/v1/rooms/lobby",
            Some(json!({ "kind": "public", "colour": "red" })),
        ),
        (
            400,
            "CONTENT_EMPTY",
            "POST",
            "/api/v1/rooms/lobby/messages",
            Some(json!({ "content": "  " })),
        ),
        (
            400,
            "INVALID_FIELD",
            "POST",
            "/api/v1/rooms/lobby/events",
            Some(json!({ "event": "Bad Name" })),
        ),
        (
            400,
            "CONTENT_TOO_LONG",
            "POST",
            "/api/v1/rooms/lobby/events",
            Some(json!({ "event": "move", "data": "x".repeat(100) })),
        ),
        (
            413,
            "CONTENT_TOO_LONG",
            "POST",
            "/api/v1/rooms/lobby/messages",
            Some(json!({ "content": "x".repeat(3000) })),
        ),
        (404, "NOT_FOUND", "GET", "/api/v1/rooms", None),
        (405, "NOT_FOUND", "DELETE", "/api/v1/rooms/lobby", None),
    ];
    for (status, code, method, path, body) in cases {
        api.refused(status, code, method, path, body).await;
    }
    let not_json = http_request(
        gw.addr(),
        "POST",
        "/api/v1/rooms/lobby/messages",
        &[("Authorization", &format!("Bearer {KEY}"))],
        b"{not json",
    )
    .await
    .unwrap();
    assert_eq!(not_json.status, 400);
    assert_eq!(not_json.json().unwrap()["error"]["code"], "MALFORMED_FRAME");
    // The burst of 12 is spent: the next is refused, with a hint when to retry.
    let limited = api.call("GET", "/api/v1/openapi.json", None).await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.json().unwrap()["error"]["code"], "RATE_LIMITED");
    // Another key has a bucket of its own.
    Backend {
        gw: &gw,
        key: OLD_KEY,
    }
    .expect(200, "GET", "/api/v1/openapi.json", None)
    .await;
}

#[tokio::test]
async fn an_api_publish_on_one_node_reaches_clients_on_another_in_order_exactly_once() {
    let Cluster { pg, _redis, a, b } = cluster().await;
    let api = Backend { gw: &a, key: KEY };
    api.expect(
        201,
        "PUT",
        "/api/v1/rooms/orders",
        Some(json!({ "name": "Orders", "kind": "public" })),
    )
    .await;
    let mut bob = connect(&b, "bob").await;
    bob.join_room("orders").await.unwrap();
    let mut json_client = connect(&b, "carol").await;
    json_client.join_room("orders").await.unwrap();
    let mut packed = connect_msgpack(&b, "dave").await;
    packed.join_room("orders").await.unwrap();

    let path = "/api/v1/rooms/orders/messages";
    let first = api
        .expect(
            201,
            "POST",
            path,
            Some(json!({ "content": "order 1 shipped", "idempotencyKey": "order-1" })),
        )
        .await;
    assert_eq!(
        (first["seq"].as_u64(), first["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    // A retry (say, the answer was lost) is stored once and answered with the original.
    let retry = api
        .expect(
            200,
            "POST",
            path,
            Some(json!({ "content": "order 1 shipped", "idempotencyKey": "order-1" })),
        )
        .await;
    assert_eq!(
        (retry["id"].clone(), retry["seq"].as_u64()),
        (first["id"].clone(), Some(1))
    );
    assert_eq!(retry["duplicate"], true);
    for i in 2..=5 {
        let key = format!("order-{i}");
        let answer = api
            .expect(201, "POST", path, Some(json!({ "content": format!("order {i}"), "from": { "id": "alice", "name": "Alice" }, "idempotencyKey": key })))
            .await;
        assert_eq!(answer["seq"].as_u64(), Some(i));
    }
    for client in [&mut bob, &mut json_client, &mut packed] {
        let mut seen = Vec::new();
        while seen.len() < 5 {
            if let Some(m) = message_of(&client.recv().await.unwrap()) {
                seen.push(m);
            }
        }
        assert_eq!(
            seen[0],
            (1, "system".to_owned(), "order 1 shipped".to_owned())
        );
        assert_eq!(
            seen.iter().map(|m| (m.0, m.1.as_str())).collect::<Vec<_>>(),
            vec![
                (1, "system"),
                (2, "alice"),
                (3, "alice"),
                (4, "alice"),
                (5, "alice")
            ],
            "in seq order, the retry not repeated"
        );
        assert_quiet(client).await;
    }

    // Bob is away while three more are published; his resume brings exactly those.
    bob.close().await.unwrap();
    for i in 6..=8 {
        api.expect(
            201,
            "POST",
            path,
            Some(
                json!({ "content": format!("order {i}"), "idempotencyKey": format!("order-{i}") }),
            ),
        )
        .await;
    }
    let mut bob = connect(&b, "bob").await;
    let id = bob.next_id();
    let resumed = bob
        .request_ok(&ClientFrame::RoomJoin {
            id,
            room_id: room("orders"),
            password: None,
            since_seq: Some(5),
        })
        .await
        .unwrap();
    let AckResult::Room {
        messages,
        recovered,
        ..
    } = resumed
    else {
        panic!("{resumed:?}")
    };
    assert!(recovered);
    assert_eq!(
        messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    let stored = pg
        .psql("SELECT count(*), count(DISTINCT client_msg_id), max(seq) FROM messages WHERE room = 'orders'")
        .await
        .unwrap();
    assert_eq!(stored.trim(), "8|8|8");

    // History pages from the API as well.
    let page = api
        .expect(
            200,
            "GET",
            "/api/v1/rooms/orders/messages?after=2&limit=3",
            None,
        )
        .await;
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        (seqs, page["hasMore"].as_bool()),
        (vec![3, 4, 5], Some(true))
    );
    let latest = api
        .expect(200, "GET", "/api/v1/rooms/orders/messages?limit=2", None)
        .await;
    assert_eq!(latest["messages"][1]["seq"], 8);
    api.refused(
        400,
        "INVALID_FIELD",
        "GET",
        "/api/v1/rooms/orders/messages?before=3&after=1",
        None,
    )
    .await;
}

#[tokio::test]
async fn members_set_by_the_backend_follow_private_and_feed_rooms_on_every_node() {
    let Cluster {
        pg: _pg,
        _redis,
        a,
        b,
    } = cluster().await;
    let api = Backend { gw: &a, key: KEY };
    // Carol is connected on node B before she is made a member.
    let mut carol = connect(&b, "carol").await;
    api.expect(
        201,
        "PUT",
        "/api/v1/rooms/vip",
        Some(json!({ "kind": "private" })),
    )
    .await;
    assert_eq!(
        refused_code(
            &mut carol,
            &ClientFrame::RoomJoin {
                id: 1,
                room_id: room("vip"),
                password: None,
                since_seq: None
            }
        )
        .await,
        "FORBIDDEN"
    );
    let added = api
        .expect(
            201,
            "PUT",
            "/api/v1/rooms/vip/members/carol",
            Some(json!({ "name": "Carol" })),
        )
        .await;
    assert_eq!(added["added"], true);
    api.expect(200, "PUT", "/api/v1/rooms/vip/members/carol", None)
        .await;
    match carol.recv().await.unwrap() {
        ServerFrame::UserJoinedRoom { room_id, user } => {
            assert_eq!(
                (room_id.as_str(), user.id.as_str(), user.name.as_str()),
                ("vip", "carol", "Carol")
            );
        }
        other => panic!("{other:?}"),
    }
    api.expect(
        201,
        "POST",
        "/api/v1/rooms/vip/messages",
        Some(json!({ "content": "welcome" })),
    )
    .await;
    assert_eq!(next_message(&mut carol).await.content, "welcome");
    // She may write there (a private room), and now join it for its history.
    send(&mut carol, "vip", "thanks").await;
    carol.join_room("vip").await.unwrap();

    // A feed: she reads, only the backend writes.
    api.expect(
        201,
        "PUT",
        "/api/v1/rooms/news",
        Some(json!({ "name": "News", "kind": "feed" })),
    )
    .await;
    carol.join_room("news").await.unwrap();
    api.expect(
        201,
        "POST",
        "/api/v1/rooms/news/messages",
        Some(json!({ "content": "headline" })),
    )
    .await;
    assert_eq!(next_message(&mut carol).await.content, "headline");
    let send_frame = message_send(carol.next_id(), "news", "me too", &fresh_client_msg_id());
    assert_eq!(refused_code(&mut carol, &send_frame).await, "FORBIDDEN");
    let emit = ClientFrame::RoomEmit {
        id: carol.next_id(),
        room_id: room("news"),
        event: "cheer".into(),
        data: json!(1),
    };
    assert_eq!(refused_code(&mut carol, &emit).await, "FORBIDDEN");
    // Her other connection, on node A, follows the feed too, and may not write either.
    let mut carol_a = connect(&a, "carol").await;
    let send_frame = message_send(carol_a.next_id(), "news", "from a", &fresh_client_msg_id());
    assert_eq!(refused_code(&mut carol_a, &send_frame).await, "FORBIDDEN");
    // Changed into a public room, it takes client messages: the change travels the room's
    // channel ahead of the next message, so once that message is here, so is the change.
    api.expect(
        200,
        "PUT",
        "/api/v1/rooms/news",
        Some(json!({ "kind": "public" })),
    )
    .await;
    api.expect(
        201,
        "POST",
        "/api/v1/rooms/news/messages",
        Some(json!({ "content": "open now" })),
    )
    .await;
    assert_eq!(next_message(&mut carol).await.content, "open now");
    send(&mut carol, "news", "hello news").await;

    // Removed: she hears it, and the room's next message does not reach her.
    api.expect(200, "DELETE", "/api/v1/rooms/vip/members/carol", None)
        .await;
    match carol
        .recv_until(|f| matches!(f, ServerFrame::UserLeftRoom { .. }))
        .await
        .unwrap()
    {
        ServerFrame::UserLeftRoom { room_id, user_id } => {
            assert_eq!((room_id.as_str(), user_id.as_str()), ("vip", "carol"));
        }
        other => panic!("{other:?}"),
    }
    api.refused(
        404,
        "NOT_A_MEMBER",
        "DELETE",
        "/api/v1/rooms/vip/members/carol",
        None,
    )
    .await;
    api.expect(
        201,
        "POST",
        "/api/v1/rooms/vip/messages",
        Some(json!({ "content": "members only" })),
    )
    .await;
    api.expect(
        201,
        "POST",
        "/api/v1/rooms/news/messages",
        Some(json!({ "content": "marker" })),
    )
    .await;
    let next = carol
        .recv_until(|f| matches!(f, ServerFrame::MessageNew { .. }))
        .await
        .unwrap();
    assert_eq!(
        message_of(&next).unwrap().2,
        "marker",
        "nothing from vip came first"
    );
}

#[tokio::test]
async fn events_notifications_presence_and_disconnects_reach_every_node() {
    let Cluster {
        pg: _pg,
        _redis,
        a,
        b,
    } = cluster().await;
    let api = Backend { gw: &a, key: KEY };
    api.expect(
        201,
        "PUT",
        "/api/v1/rooms/game",
        Some(json!({ "kind": "public" })),
    )
    .await;
    let mut bob = connect(&b, "bob").await;
    bob.join_room("game").await.unwrap();
    let mut packed = connect_msgpack(&a, "dave").await;
    packed.join_room("game").await.unwrap();
    let mut outsider = connect(&b, "eve").await;

    api.expect(202, "POST", "/api/v1/rooms/game/events", Some(json!({ "event": "move", "data": { "from": "e2", "to": "e4" }, "from": { "id": "referee" } })))
        .await;
    for client in [&mut bob, &mut packed] {
        assert_eq!(
            next_event(client).await,
            (
                "game".to_owned(),
                "move".to_owned(),
                json!({ "from": "e2", "to": "e4" }),
                "referee".to_owned()
            )
        );
    }
    outsider
        .expect_no_frame(Duration::from_millis(300))
        .await
        .unwrap();

    // Presence of a room and of a user, wherever they are connected.
    let presence = api
        .expect(200, "GET", "/api/v1/rooms/game/presence", None)
        .await;
    let mut online: Vec<&str> = presence["online"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"]["id"].as_str().unwrap())
        .collect();
    online.sort_unstable();
    assert_eq!(
        (online, presence["members"].as_u64()),
        (vec!["bob", "dave"], Some(2))
    );
    let bob_presence = api
        .expect(200, "GET", "/api/v1/users/bob/presence", None)
        .await;
    assert_eq!(
        (
            bob_presence["online"].as_bool(),
            bob_presence["status"].as_str()
        ),
        (Some(true), Some("online"))
    );
    let nobody = api
        .expect(200, "GET", "/api/v1/users/nobody/presence", None)
        .await;
    assert_eq!(nobody["online"], false);

    // A notification: live to every connection, counted for the next connect.
    let mut bob_a = connect(&a, "bob").await;
    let created = api
        .expect(201, "POST", "/api/v1/users/bob/notifications", Some(json!({ "kind": "order:shipped", "title": "Your order shipped", "data": { "order": 7 } })))
        .await;
    let id = created["notification"]["id"].as_u64().unwrap();
    for client in [&mut bob, &mut bob_a] {
        match client
            .recv_until(|f| matches!(f, ServerFrame::NotificationNew { .. }))
            .await
            .unwrap()
        {
            ServerFrame::NotificationNew { notification } => {
                assert_eq!(
                    (
                        notification.id,
                        notification.kind.as_str(),
                        notification.title.as_str()
                    ),
                    (id, "order:shipped", "Your order shipped")
                );
                assert_eq!(notification.data, json!({ "order": 7 }));
            }
            other => panic!("{other:?}"),
        }
    }
    api.expect(
        201,
        "POST",
        "/api/v1/users/frank/notifications",
        Some(json!({ "kind": "welcome", "title": "Hello" })),
    )
    .await;
    let (_frank, ready) = connect_ready(&b, "frank").await;
    let ServerFrame::SessionReady {
        unread_notifications,
        ..
    } = ready
    else {
        panic!("{ready:?}")
    };
    assert_eq!(unread_notifications, 1);

    // Disconnect: every connection of the user, on both nodes, closes with 4008.
    let answer = api
        .expect(202, "DELETE", "/api/v1/users/bob/connections", None)
        .await;
    assert_eq!(answer["closeCode"], 4008);
    for client in [&mut bob, &mut bob_a] {
        let (code, reason) = client.expect_close().await.unwrap();
        assert_eq!(
            (code, reason.as_str()),
            (4008, "disconnected by the server")
        );
    }
}

#[tokio::test]
async fn a_ban_closes_the_users_connections_on_every_node_and_refuses_new_ones_until_it_ends() {
    let Cluster {
        pg: _pg,
        _redis,
        a,
        b,
    } = cluster().await;
    let api = Backend { gw: &a, key: KEY };
    let mut mallory_a = connect(&a, "mallory").await;
    let mut mallory_b = connect(&b, "mallory").await;
    let mut bystander = connect(&b, "bob").await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let until = now + 3_000;
    let banned = api
        .expect(
            200,
            "PUT",
            "/api/v1/bans/mallory",
            Some(json!({ "until": until, "reason": "spam" })),
        )
        .await;
    assert_eq!(
        (banned["until"].as_u64(), banned["reason"].as_str()),
        (Some(until), Some("spam"))
    );
    for client in [&mut mallory_a, &mut mallory_b] {
        assert_eq!(
            client.expect_close().await.unwrap(),
            (4009, "banned".to_owned())
        );
    }
    // New connections, on either node, close with 4009 right after the upgrade.
    for gw in [&a, &b] {
        let mut refused = WsClient::connect(&gw.ws_url(), ConnectOptions::bearer(token("mallory")))
            .await
            .unwrap();
        assert_eq!(refused.expect_close().await.unwrap().0, 4009);
    }
    bystander
        .expect_no_frame(Duration::from_millis(200))
        .await
        .unwrap();
    api.refused(
        400,
        "INVALID_FIELD",
        "PUT",
        "/api/v1/bans/mallory",
        Some(json!({ "seconds": 5, "until": until })),
    )
    .await;
    api.refused(
        400,
        "INVALID_FIELD",
        "PUT",
        "/api/v1/bans/mallory",
        Some(json!({ "until": now - 1 })),
    )
    .await;

    // The ban ends by itself at its time...
    let ends = std::time::UNIX_EPOCH + Duration::from_millis(until);
    if let Ok(left) = ends.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    let mut back = connect(&b, "mallory").await;
    back.close().await.unwrap();
    // ...or when lifted.
    api.expect(
        200,
        "PUT",
        "/api/v1/bans/mallory",
        Some(json!({ "seconds": 3600 })),
    )
    .await;
    let mut refused = WsClient::connect(&a.ws_url(), ConnectOptions::bearer(token("mallory")))
        .await
        .unwrap();
    assert_eq!(refused.expect_close().await.unwrap().0, 4009);
    let lifted = api
        .expect(200, "DELETE", "/api/v1/bans/mallory", None)
        .await;
    assert_eq!(lifted["lifted"], true);
    let again = api
        .expect(200, "DELETE", "/api/v1/bans/mallory", None)
        .await;
    assert_eq!(again["lifted"], false);
    connect(&a, "mallory").await;
}

#[tokio::test]
async fn a_broadcast_stores_one_message_per_room_and_sends_one_event_per_connection() {
    let Cluster { pg, _redis, a, b } = cluster().await;
    let api = Backend { gw: &a, key: KEY };
    for room in ["east", "west"] {
        api.expect(
            201,
            "PUT",
            &format!("/api/v1/rooms/{room}"),
            Some(json!({ "kind": "public" })),
        )
        .await;
    }
    let mut bob = connect(&b, "bob").await;
    bob.join_room("east").await.unwrap();
    bob.join_room("west").await.unwrap();
    let mut carol = connect_msgpack(&a, "carol").await;
    carol.join_room("west").await.unwrap();

    let body = json!({
        "rooms": ["east", "west", "nowhere", "east"],
        "message": { "content": "maintenance at noon", "idempotencyKey": "notice-1" },
    });
    let answer = api
        .expect(200, "POST", "/api/v1/broadcast", Some(body.clone()))
        .await;
    let results = answer["messages"].as_array().unwrap();
    assert_eq!(results.len(), 3, "each room once: {answer}");
    let by_room = |room: &str| {
        results
            .iter()
            .find(|r| r["roomId"] == room)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            by_room("east")["seq"].as_u64(),
            by_room("west")["seq"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(by_room("nowhere")["error"]["code"], "ROOM_NOT_FOUND");
    // A retry stores nothing new.
    let again = api
        .expect(200, "POST", "/api/v1/broadcast", Some(body))
        .await;
    assert!(
        again["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["roomId"] != "nowhere")
            .all(|r| r["duplicate"] == true)
    );
    let mut rooms_seen: Vec<String> = Vec::new();
    while rooms_seen.len() < 2 {
        let message = next_message(&mut bob).await;
        assert_eq!(
            (message.seq, message.content.as_str()),
            (1, "maintenance at noon")
        );
        rooms_seen.push(message.room_id.to_string());
    }
    rooms_seen.sort();
    assert_eq!(rooms_seen, ["east", "west"]);
    assert_eq!(next_message(&mut carol).await.room_id.as_str(), "west");
    assert_quiet(&mut bob).await;
    assert_eq!(
        pg.psql("SELECT count(*) FROM messages")
            .await
            .unwrap()
            .trim(),
        "2"
    );

    // An event: each room's connections get room:event, each named user's connections one
    // user:event, whichever other rooms or users they are in.
    let mut bob_again = connect(&a, "bob").await;
    api.expect(
        202,
        "POST",
        "/api/v1/broadcast",
        Some(json!({
            "rooms": ["east", "west"],
            "users": ["bob", "dave"],
            "event": { "event": "deploy:done", "data": { "version": 42 } },
        })),
    )
    .await;
    let mut frames = Vec::new();
    while frames.len() < 3 {
        match bob.recv().await.unwrap() {
            ServerFrame::RoomEvent { room_id, event, .. } => {
                frames.push(format!("room:{room_id}:{event}"))
            }
            ServerFrame::UserEvent { event, data, from } => {
                assert_eq!(
                    (data, from.id.as_str()),
                    (json!({ "version": 42 }), "system")
                );
                frames.push(format!("user:{event}"));
            }
            _ => {}
        }
    }
    frames.sort();
    assert_eq!(
        frames,
        [
            "room:east:deploy:done",
            "room:west:deploy:done",
            "user:deploy:done"
        ]
    );
    assert_quiet(&mut bob).await;
    match bob_again
        .recv_until(|f| matches!(f, ServerFrame::UserEvent { .. }))
        .await
        .unwrap()
    {
        ServerFrame::UserEvent { event, .. } => assert_eq!(event, "deploy:done"),
        other => panic!("{other:?}"),
    }
    assert_eq!(next_event(&mut carol).await.1, "deploy:done");
    assert_quiet(&mut carol).await;

    api.refused(
        400,
        "INVALID_FIELD",
        "POST",
        "/api/v1/broadcast",
        Some(json!({ "users": ["bob"], "message": { "content": "x" } })),
    )
    .await;
    api.refused(
        400,
        "INVALID_FIELD",
        "POST",
        "/api/v1/broadcast",
        Some(json!({ "rooms": [], "event": { "event": "x" } })),
    )
    .await;
    let too_many: Vec<String> = (0..1_001).map(|i| format!("u{i}")).collect();
    api.refused(
        400,
        "INVALID_FIELD",
        "POST",
        "/api/v1/broadcast",
        Some(json!({ "users": too_many, "event": { "event": "x" } })),
    )
    .await;
}

#[tokio::test]
async fn stats_count_this_node_now_and_the_cluster_as_its_nodes_report() {
    let pg = Postgres::start().await.unwrap();
    let redis = Redis::start().await.unwrap();
    let quick = || builder().env("SWITCHBOARD_PRESENCE_REFRESH_MS", "200");
    let a = node_with(&pg, &redis, "node-a", quick()).await;
    let b = node_with(&pg, &redis, "node-b", quick()).await;
    let api = Backend { gw: &a, key: KEY };
    let mut alice = connect(&a, "alice").await;
    alice.create_room("shared").await.unwrap();
    let mut bob_a = connect(&a, "bob").await;
    bob_a.join_room("shared").await.unwrap();
    let _bob_b = connect(&b, "bob").await;
    let mut carol = connect(&b, "carol").await;
    carol.create_room("b-only").await.unwrap();

    // Node B reports every 200 ms: wait for a report made after its last change.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let b_now = json!({ "id": "node-b", "connections": 2, "users": 2, "rooms": 2 });
    let stats = loop {
        let stats = api.expect(200, "GET", "/api/v1/stats", None).await;
        let nodes = stats["cluster"]["nodes"].as_array().unwrap();
        if nodes.contains(&b_now) {
            break stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node-b never reported: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        stats["node"],
        json!({ "id": "node-a", "connections": 2, "users": 2, "rooms": 1 })
    );
    let cluster = &stats["cluster"];
    assert_eq!(
        cluster["nodes"][0]["id"], "node-a",
        "this node first: {stats}"
    );
    assert_eq!(cluster["nodes"][1], b_now);
    // Bob is on both nodes but one user; "shared" is followed on both but one room.
    assert_eq!(
        (
            cluster["connections"].as_u64(),
            cluster["users"].as_u64(),
            cluster["rooms"].as_u64()
        ),
        (Some(4), Some(3), Some(2))
    );
}

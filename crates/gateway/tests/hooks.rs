//! Hooks against a real HTTP backend (testkit's `Receiver`): the join hook allows and refuses
//! with the app's reason, rpc round trips, the connect hook refuses, renames and grants rooms;
//! a backend that fails or is slow answers `HOOK_UNAVAILABLE` within the timeout and the
//! connection stays; the breaker stops calling a failing backend; every call is signed as
//! Standard Webhooks says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_protocol::{AckResult, ClientFrame, ErrorCode, RoomKind, ServerFrame};
use switchboard_testkit::receiver::{Receiver, Recorded, Reply};
use switchboard_testkit::{ConnectOptions, Gateway, WsClient, metric_value};

use common::{builder, connect, connect_ready, room, token};

const SIGNING_SECRET: &str = "whsec_c3dpdGNoYm9hcmQtaG9va3MtdGVzdC1rZXktMzJieSE=";
/// Long enough for any request here; a hook that takes longer is broken.
const WAIT: Duration = Duration::from_secs(10);

async fn gateway_with_hooks(hooks: &[(&str, String)]) -> Gateway {
    hooks
        .iter()
        .fold(
            builder()
                .env("SWITCHBOARD_SIGNING_SECRETS", SIGNING_SECRET)
                .env("SWITCHBOARD_NODE_ID", "hooked"),
            |b, (k, v)| b.env(*k, v.clone()),
        )
        .start()
        .await
        .expect("gateway starts")
}

fn field<'a>(call: &'a Value, name: &str) -> &'a str {
    call[name].as_str().unwrap_or_default()
}

fn error_code(reply: &ServerFrame) -> Option<(ErrorCode, String)> {
    match reply {
        ServerFrame::Ack {
            error: Some(error), ..
        } => Some((error.code, error.message.clone())),
        _ => None,
    }
}

fn join(client: &mut WsClient, room_id: &str) -> ClientFrame {
    ClientFrame::RoomJoin {
        id: client.next_id(),
        room_id: room(room_id),
        password: None,
        since_seq: None,
    }
}

fn create(client: &mut WsClient, room_id: &str) -> ClientFrame {
    ClientFrame::RoomCreate {
        id: client.next_id(),
        room_id: room(room_id),
        name: None,
        kind: RoomKind::Public,
        password: None,
    }
}

fn rpc(client: &mut WsClient, method: &str, data: Value) -> ClientFrame {
    ClientFrame::Rpc {
        id: client.next_id(),
        method: method.to_owned(),
        data,
    }
}

/// The connection is still open and answering.
async fn still_serving(client: &mut WsClient) {
    let ping = ClientFrame::Ping {
        id: Some(client.next_id()),
    };
    assert!(matches!(
        client.request(&ping).await.expect("pong"),
        ServerFrame::Pong { .. }
    ));
}

#[tokio::test]
async fn the_join_hook_decides_for_matching_rooms_with_the_apps_reason_and_signed_calls() {
    let backend = Receiver::start(|call: &Recorded| {
        let body = call.json().unwrap_or_default();
        if field(&body["user"], "id") == "bob" && field(&body, "roomId") == "game-vip" {
            Reply::json(&json!({"allow": false, "reason": "the table is full"}))
        } else {
            Reply::json(&json!({"allow": true}))
        }
    })
    .await
    .unwrap();
    let gw = gateway_with_hooks(&[
        ("SWITCHBOARD_HOOK_JOIN_URL", backend.url("/hooks/join")),
        ("SWITCHBOARD_HOOK_JOIN_ROOMS", "game-*".to_owned()),
    ])
    .await;
    let mut alice = connect(&gw, "alice").await;
    let mut bob = connect(&gw, "bob").await;

    // A room outside the patterns: no call.
    alice.create_room("lobby").await.unwrap();
    bob.join_room("lobby").await.unwrap();

    let frame = create(&mut alice, "game-vip");
    alice.request_ok(&frame).await.expect("alice may create it");
    let frame = join(&mut bob, "game-vip");
    let refused = bob.request(&frame).await.unwrap();
    assert_eq!(
        error_code(&refused),
        Some((ErrorCode::Denied, "the table is full".to_owned()))
    );
    still_serving(&mut bob).await;
    // Refused means not a member: nothing of the room reaches bob.
    let send = alice.send_text("game-vip", "hello", "m-1").await.unwrap();
    assert!(error_code(&send).is_none(), "{send:?}");
    bob.expect_no_frame(Duration::from_millis(300))
        .await
        .unwrap();

    let calls = backend.wait_for(2, WAIT).await.unwrap();
    assert_eq!(calls.len(), 2, "only the game- rooms were asked about");
    let bodies: Vec<Value> = calls.iter().map(|c| c.json().unwrap()).collect();
    assert_eq!(bodies[0]["hook"], "join");
    assert_eq!(bodies[0]["action"], "create");
    assert_eq!(bodies[0]["roomId"], "game-vip");
    assert_eq!(bodies[0]["user"], json!({"id": "alice", "name": "Alice"}));
    assert_eq!(bodies[0]["node"], "hooked");
    assert!(
        field(&bodies[0], "connId").starts_with("hooked"),
        "{}",
        bodies[0]
    );
    assert_eq!(bodies[1]["action"], "join");
    assert_eq!(bodies[1]["user"]["id"], "bob");
    for call in &calls {
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, "/hooks/join");
        assert_eq!(call.header("content-type"), Some("application/json"));
        assert!(call.signed_with(SIGNING_SECRET), "signature of {call:?}");
        assert!(!call.signed_with("whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA=="));
    }
    assert_ne!(calls[0].header("webhook-id"), calls[1].header("webhook-id"));
}

/// The role in a `room` reply.
fn role_in(reply: AckResult) -> String {
    match reply {
        AckResult::Room { role, .. } => role.to_string(),
        other => panic!("not a room reply: {other:?}"),
    }
}

#[tokio::test]
async fn the_join_hook_gives_roles_that_stay_with_the_membership() {
    let backend = Receiver::start(|call: &Recorded| {
        let body = call.json().unwrap_or_default();
        let answer = match field(&body["user"], "id") {
            "alice" => json!({"allow": true, "role": "dealer"}),
            "carol" => json!({"allow": true, "role": "moderator"}),
            "dave" => json!({"allow": true, "role": "not a role"}),
            _ => json!({"allow": true}),
        };
        Reply::json(&answer)
    })
    .await
    .unwrap();
    let gw = gateway_with_hooks(&[("SWITCHBOARD_HOOK_JOIN_URL", backend.url("/hooks/join"))]).await;
    let mut alice = connect(&gw, "alice").await;
    let frame = create(&mut alice, "table-1");
    assert_eq!(role_in(alice.request_ok(&frame).await.unwrap()), "dealer");
    let mut bob = connect(&gw, "bob").await;
    assert_eq!(role_in(bob.join_room("table-1").await.unwrap()), "member");
    let mut carol = connect(&gw, "carol").await;
    assert_eq!(
        role_in(carol.join_room("table-1").await.unwrap()),
        "moderator"
    );
    // An answer with an invalid role is a bad answer: nothing is decided.
    let mut dave = connect(&gw, "dave").await;
    let frame = join(&mut dave, "table-1");
    let refused = dave.request(&frame).await.unwrap();
    assert_eq!(
        error_code(&refused).map(|e| e.0),
        Some(ErrorCode::HookUnavailable)
    );
    assert_eq!(backend.wait_for(4, WAIT).await.unwrap().len(), 4);

    // Kept with the membership: on another device, and joining again asks nobody.
    let (mut phone, ready) = connect_ready(&gw, "carol").await;
    let ServerFrame::SessionReady { rooms, .. } = ready else {
        panic!("{ready:?}");
    };
    assert_eq!(rooms[0].role.as_str(), "moderator");
    assert_eq!(
        role_in(phone.join_room("table-1").await.unwrap()),
        "moderator"
    );
    still_serving(&mut dave).await;
    assert_eq!(backend.requests().len(), 4, "a member is not asked again");
}

#[tokio::test]
async fn a_failing_hook_is_hook_unavailable_and_the_breaker_stops_calling_it() {
    // First an answer that is not the documented JSON (an empty 200), then an error status:
    // both are failures.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let backend = Receiver::start(move |_: &Recorded| {
        match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Reply::status(200),
            _ => Reply::status(500),
        }
    })
    .await
    .unwrap();
    let gw = gateway_with_hooks(&[
        ("SWITCHBOARD_HOOK_JOIN_URL", backend.url("/join")),
        ("SWITCHBOARD_HOOK_BREAKER_FAILURES", "2".to_owned()),
        ("SWITCHBOARD_HOOK_BREAKER_COOLDOWN_MS", "600000".to_owned()),
    ])
    .await;
    let mut alice = connect(&gw, "alice").await;
    for attempt in 0..3 {
        let frame = create(&mut alice, "arena");
        let reply = alice.request(&frame).await.unwrap();
        let (code, _) = error_code(&reply).unwrap_or_else(|| panic!("refused: {reply:?}"));
        assert_eq!(code, ErrorCode::HookUnavailable, "attempt {attempt}");
        assert!(code.retryable());
    }
    still_serving(&mut alice).await;
    assert_eq!(
        backend.requests().len(),
        2,
        "the third attempt met the open breaker"
    );
    let metrics = gw.metrics().await.unwrap();
    let calls = |outcome: &str| {
        metric_value(
            &metrics,
            &format!("switchboard_hook_calls_total{{hook=\"join\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(calls("error"), Some(2.0), "{metrics}");
    assert_eq!(calls("breaker_open"), Some(1.0), "{metrics}");
    assert!(
        metrics.contains("switchboard_hook_duration_seconds"),
        "{metrics}"
    );
    // Nothing was created on the app's behalf.
    let mut bob = connect(&gw, "bob").await;
    let frame = ClientFrame::HistoryFetch {
        id: bob.next_id(),
        room_id: room("arena"),
        before_seq: None,
        after_seq: None,
        limit: None,
    };
    let reply = bob.request(&frame).await.unwrap();
    assert!(error_code(&reply).is_some(), "{reply:?}");
}

#[tokio::test]
async fn rpc_round_trips_to_the_backend_and_a_slow_one_times_out_with_the_connection_kept() {
    let backend = Receiver::start(|call: &Recorded| {
        let body = call.json().unwrap_or_default();
        match field(&body, "method") {
            "move" => Reply::json(&json!({"result": {"valid": true, "echo": body["data"]}})),
            "slow" => Reply::json(&json!({"result": null})).after(Duration::from_secs(30)),
            _ => Reply::json(&json!({"error": "illegal move"})),
        }
    })
    .await
    .unwrap();
    let gw = gateway_with_hooks(&[
        ("SWITCHBOARD_HOOK_RPC_URL", backend.url("/rpc")),
        ("SWITCHBOARD_HOOK_TIMEOUT_MS", "300".to_owned()),
    ])
    .await;
    let mut alice = connect(&gw, "alice").await;

    let data = json!({"from": "e2", "to": "e4"});
    let frame = rpc(&mut alice, "move", data.clone());
    assert_eq!(
        alice.request_ok(&frame).await.unwrap(),
        AckResult::Rpc {
            data: json!({"valid": true, "echo": data})
        }
    );
    let call = backend.wait_for(1, WAIT).await.unwrap().remove(0);
    let body = call.json().unwrap();
    assert_eq!(body["hook"], "rpc");
    assert_eq!(body["method"], "move");
    assert_eq!(body["data"], data);
    assert_eq!(body["user"]["id"], "alice");
    assert!(call.signed_with(SIGNING_SECRET));

    let frame = rpc(&mut alice, "castle", json!(null));
    let reply = alice.request(&frame).await.unwrap();
    assert_eq!(
        error_code(&reply),
        Some((ErrorCode::Denied, "illegal move".to_owned()))
    );

    // The backend holds this one for 30 s; the client hears within the 300 ms hook timeout (its
    // own wait is 10 s), and the connection goes on.
    let frame = rpc(&mut alice, "slow", json!(1));
    let reply = alice.request(&frame).await.unwrap();
    assert_eq!(
        error_code(&reply).map(|(code, _)| code),
        Some(ErrorCode::HookUnavailable)
    );
    still_serving(&mut alice).await;

    let frame = rpc(&mut alice, "Bad Name", json!(null));
    let reply = alice.request(&frame).await.unwrap();
    assert_eq!(
        error_code(&reply).map(|(code, _)| code),
        Some(ErrorCode::InvalidField)
    );
    let metrics = gw.metrics().await.unwrap();
    assert_eq!(
        metric_value(
            &metrics,
            "switchboard_hook_calls_total{hook=\"rpc\",outcome=\"timeout\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn rpc_without_a_hook_is_refused_as_not_supported() {
    let gw = gateway_with_hooks(&[]).await;
    let mut alice = connect(&gw, "alice").await;
    let frame = rpc(&mut alice, "move", json!(null));
    let reply = alice.request(&frame).await.unwrap();
    assert_eq!(
        error_code(&reply).map(|(code, _)| code),
        Some(ErrorCode::NotSupported)
    );
}

#[tokio::test]
async fn the_connect_hook_refuses_renames_and_grants_rooms() {
    let backend = Receiver::start(|call: &Recorded| {
        let body = call.json().unwrap_or_default();
        match field(&body["user"], "id") {
            "mallory" => Reply::json(&json!({"allow": false, "reason": "not in the beta"})),
            "flaky" => Reply::status(503),
            "alice" => Reply::json(&json!({
                "allow": true,
                "name": "Alice Liddell",
                "rooms": ["welcome", "no-such-room"],
            })),
            _ => Reply::json(&json!({"allow": true})),
        }
    })
    .await
    .unwrap();
    let gw = gateway_with_hooks(&[("SWITCHBOARD_HOOK_CONNECT_URL", backend.url("/connect"))]).await;

    let mut carol = connect(&gw, "carol").await;
    carol.create_room("welcome").await.unwrap();

    let (_alice, ready) = connect_ready(&gw, "alice").await;
    let ServerFrame::SessionReady { user, rooms, .. } = ready else {
        panic!("session:ready first: {ready:?}")
    };
    assert_eq!(user.name, "Alice Liddell");
    let rooms: Vec<&str> = rooms.iter().map(|r| r.room_id.as_str()).collect();
    assert_eq!(rooms, ["welcome"], "the granted room that exists");
    let joined = carol
        .recv_until(|f| matches!(f, ServerFrame::UserJoinedRoom { .. }))
        .await
        .unwrap();
    assert_eq!(
        joined,
        ServerFrame::UserJoinedRoom {
            room_id: room("welcome"),
            user: user.clone(),
        }
    );

    for (who, code) in [("mallory", 4010), ("flaky", 1013)] {
        let mut client = WsClient::connect(&gw.ws_url(), ConnectOptions::bearer(token(who)))
            .await
            .unwrap();
        let (got, _) = client.expect_close().await.unwrap();
        assert_eq!(got, code, "{who}");
    }
    let calls = backend.wait_for(4, WAIT).await.unwrap();
    let users: Vec<String> = calls
        .iter()
        .map(|c| c.json().unwrap()["user"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(users, ["carol", "alice", "mallory", "flaky"]);
    assert!(calls.iter().all(|c| c.json().unwrap()["hook"] == "connect"));
}

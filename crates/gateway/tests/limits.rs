//! Limits: every one has a documented error or close code, and none lets a node run out of memory.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use std::time::Duration;

use common::*;
use switchboard_protocol::{ClientFrame, ServerFrame};
use switchboard_testkit::{ConnectOptions, WsClient};

#[tokio::test]
async fn an_oversized_frame_closes_the_connection_with_1009() {
    let gw = gateway_with(&[("SWITCHBOARD_MAX_FRAME_BYTES", "4096")]).await;
    let mut alice = connect(&gw, "alice").await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(10_000));
    alice.send_raw_text(&big).await.unwrap();
    assert_eq!(alice.expect_close().await.unwrap().0, 1009);
    let closes = gw
        .metric("switchboard_closes_total{code=\"1009\"}")
        .await
        .unwrap();
    assert_eq!(closes, Some(1.0));
}

#[tokio::test]
async fn a_flooding_client_is_rate_limited_then_closed() {
    let gw = gateway_with(&[
        ("SWITCHBOARD_RATE_PER_SEC", "1"),
        ("SWITCHBOARD_RATE_BURST", "5"),
        ("SWITCHBOARD_RATE_STRIKES", "4"),
    ])
    .await;
    let mut alice = connect(&gw, "alice").await;
    for id in 1..=5 {
        assert!(matches!(
            alice
                .request(&ClientFrame::Ping { id: Some(id) })
                .await
                .unwrap(),
            ServerFrame::Pong { .. }
        ));
    }
    // A frame without an id is refused with an error frame, a request with an ack.
    alice.send(&ClientFrame::Ping { id: None }).await.unwrap();
    let reply = alice.recv().await.unwrap();
    assert!(
        matches!(reply, ServerFrame::Error { code, .. } if code.as_str() == "RATE_LIMITED"),
        "{reply:?}"
    );
    alice
        .send(&ClientFrame::Ping { id: Some(7) })
        .await
        .unwrap();
    let reply = alice.recv().await.unwrap();
    assert!(
        matches!(reply, ServerFrame::Ack { id: 7, error: Some(ref e), .. } if e.code.as_str() == "RATE_LIMITED"),
        "{reply:?}"
    );
    assert_eq!(
        refused_code(&mut alice, &message_send(8, "general", "hi", "x")).await,
        "RATE_LIMITED"
    );
    alice
        .send(&ClientFrame::Ping { id: Some(9) })
        .await
        .unwrap();
    assert_eq!(
        alice.expect_close().await.unwrap(),
        (4006, "rate limit exceeded".to_owned())
    );
}

#[tokio::test]
async fn opening_one_connection_too_many_closes_the_users_oldest() {
    let gw = gateway_with(&[("SWITCHBOARD_MAX_CONNECTIONS_PER_USER", "2")]).await;
    let mut first = connect(&gw, "alice").await;
    let mut second = connect(&gw, "alice").await;
    let _third = connect(&gw, "alice").await;
    assert_eq!(
        first.expect_close().await.unwrap(),
        (4007, "too many connections for this user".to_owned())
    );
    assert!(matches!(
        second
            .request(&ClientFrame::Ping { id: Some(1) })
            .await
            .unwrap(),
        ServerFrame::Pong { .. }
    ));
    let _bob = connect(&gw, "bob").await;
}

#[tokio::test]
async fn a_full_node_refuses_upgrades_with_503() {
    let gw = gateway_with(&[("SWITCHBOARD_MAX_CONNECTIONS", "2")]).await;
    let _a = connect(&gw, "alice").await;
    let b = connect(&gw, "bob").await;
    let refused = WsClient::connect(&gw.ws_url(), ConnectOptions::bearer(token("carol"))).await;
    assert_eq!(refused.err().and_then(|e| e.status()), Some(503));
    drop(b);
    // The slot comes back once the server has seen the session end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gw.metric("switchboard_connections").await.unwrap() != Some(1.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob's session never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    WsClient::connect_session(&gw.ws_url(), ConnectOptions::bearer(token("carol")))
        .await
        .expect("slot is free");
}

#[tokio::test]
async fn only_allowed_origins_may_upgrade() {
    let gw = gateway_with(&[(
        "SWITCHBOARD_ALLOWED_ORIGINS",
        "https://chat.example,https://app.example",
    )])
    .await;
    let evil = WsClient::connect(
        &gw.ws_url(),
        ConnectOptions::bearer(token("alice")).with_origin("https://evil.example"),
    )
    .await;
    assert_eq!(evil.err().and_then(|e| e.status()), Some(403));
    WsClient::connect_session(
        &gw.ws_url(),
        ConnectOptions::bearer(token("alice")).with_origin("https://app.example"),
    )
    .await
    .expect("allowed origin");
    // Non-browser clients send no Origin at all.
    connect(&gw, "bob").await;
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer_and_memory_stays_bounded() {
    let gw = gateway_with(&[
        UNLIMITED_RATE,
        ("SWITCHBOARD_OUTBOUND_QUEUE", "64"),
        ("SWITCHBOARD_MAX_FRAME_BYTES", "65536"),
    ])
    .await;
    let mut alice = connect(&gw, "alice").await;
    let mut bob = connect(&gw, "bob").await;
    alice.create_room("firehose").await.unwrap();
    bob.join_room("firehose").await.unwrap();
    let before = vm_rss_kib(gw.pid());
    // bob reads nothing while alice sends 64 MB: far more than socket buffers and the queue hold.
    let payload = "x".repeat(4_000);
    let mut sent = 0;
    for i in 0..16_000 {
        let ack = alice
            .send_text("firehose", &payload, &format!("m{i}"))
            .await
            .unwrap();
        assert!(
            matches!(
                ack,
                ServerFrame::Ack {
                    result: Some(_),
                    ..
                }
            ),
            "{ack:?}"
        );
        sent += 1;
        if i % 500 == 0 && gw.metric("switchboard_slow_consumers_total").await.unwrap() == Some(1.0)
        {
            break;
        }
    }
    let grew = vm_rss_kib(gw.pid()).saturating_sub(before);
    assert_eq!(
        gw.metric("switchboard_slow_consumers_total").await.unwrap(),
        Some(1.0),
        "after {sent} messages"
    );
    assert!(
        grew < 32 * 1024,
        "gateway RSS grew by {grew} KiB after {sent} messages"
    );
    // bob finds, after whatever frames were already in flight, the slow-consumer close.
    bob.set_timeout(Duration::from_secs(20));
    assert_eq!(bob.expect_close().await.unwrap().0, 4005);
    // alice is unaffected.
    assert!(matches!(
        alice
            .request(&ClientFrame::Ping { id: Some(1) })
            .await
            .unwrap(),
        ServerFrame::Pong { .. }
    ));
}

/// Opens a WebSocket for `user`, as if from `forwarded_for` when set; the HTTP status of a
/// refused upgrade.
async fn connect_from(
    gw: &switchboard_testkit::Gateway,
    user: &str,
    forwarded_for: Option<&str>,
) -> Result<WsClient, switchboard_testkit::ConnectError> {
    let mut options = ConnectOptions::bearer(token(user));
    if let Some(address) = forwarded_for {
        options = options.with_header("X-Forwarded-For", address);
    }
    WsClient::connect(&gw.ws_url(), options).await
}

#[tokio::test]
async fn an_address_opening_connections_too_fast_is_answered_429_before_the_upgrade() {
    // A sustained rate so low that no token comes back during the test.
    let gw = gateway_with(&[
        ("SWITCHBOARD_CONNECT_RATE_PER_IP", "1"),
        ("SWITCHBOARD_CONNECT_BURST_PER_IP", "2"),
    ])
    .await;
    let _first = connect_from(&gw, "alice", None).await.unwrap();
    let _second = connect_from(&gw, "bob", None).await.unwrap();
    let refused = connect_from(&gw, "carol", None).await.unwrap_err();
    let switchboard_testkit::ConnectError::Http {
        status,
        headers,
        body,
    } = refused
    else {
        panic!("an HTTP refusal: {refused}")
    };
    assert_eq!(status, 429);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("retry-after") && v == "1"),
        "{headers:?}"
    );
    assert!(body.contains("RATE_LIMITED"), "{body}");
    // A stream counts against the same address.
    let sse = gw
        .http_get(&format!("/sse?token={}", token("dave")))
        .await
        .unwrap();
    assert_eq!(sse.status, 429);
    // Headers from a client that is not a trusted proxy change nothing.
    let spoofed = connect_from(&gw, "erin", Some("203.0.113.9")).await;
    assert_eq!(spoofed.err().and_then(|e| e.status()), Some(429));
    assert_eq!(
        gw.metric("switchboard_handshakes_refused_total{status=\"429\"}")
            .await
            .unwrap(),
        Some(3.0)
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let gw = gateway_with(&[
        ("SWITCHBOARD_CONNECT_RATE_PER_IP", "1"),
        ("SWITCHBOARD_CONNECT_BURST_PER_IP", "1"),
        ("SWITCHBOARD_TRUSTED_PROXIES", "127.0.0.0/8"),
    ])
    .await;
    let _a = connect_from(&gw, "alice", Some("203.0.113.1"))
        .await
        .unwrap();
    let refused = connect_from(&gw, "alice", Some("203.0.113.1")).await;
    assert_eq!(refused.err().and_then(|e| e.status()), Some(429));
    // Another client behind the same proxy is not limited by the first one's connections, and
    // neither is the proxy's own address.
    let _b = connect_from(&gw, "bob", Some("203.0.113.2")).await.unwrap();
    let _proxy = connect_from(&gw, "carol", None).await.unwrap();
}

//! A node's life: health, metrics, dev mode, and graceful shutdown.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use std::time::Duration;

use common::*;
use switchboard_protocol::{ClientFrame, RoomKind, ServerFrame};
use switchboard_testkit::{ConnectOptions, GatewayBuilder, WsClient};

const SIGTERM: i32 = 15;

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let gw = gateway().await;
    assert_eq!(gw.http_get("/healthz").await.unwrap().status, 200);
    assert_eq!(gw.http_get("/readyz").await.unwrap().text(), "ready\n");
    let mut alice = connect(&gw, "alice").await;
    alice.create_room("general").await.unwrap();
    send(&mut alice, "general", "counted").await;
    let metrics = gw.metrics().await.unwrap();
    for series in [
        "switchboard_connections 1",
        "switchboard_connections_opened_total 1",
        "switchboard_frames_in_total{type=\"message:send\"} 1",
        "switchboard_messages_stored_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == series),
            "missing {series:?} in\n{metrics}"
        );
    }
    // Without dev mode there is no chat page.
    assert_eq!(gw.http_get("/").await.unwrap().status, 404);
    assert_eq!(gw.http_get("/client/index.js").await.unwrap().status, 404);
    assert_eq!(gw.http_get("/dev/token?user=x").await.unwrap().status, 404);
}

#[tokio::test]
async fn a_separate_admin_listener_takes_metrics_off_the_public_port() {
    let gw = builder().admin_listener().start().await.unwrap();
    assert_eq!(gw.http_get("/metrics").await.unwrap().status, 404);
    assert_eq!(gw.admin_get("/metrics").await.unwrap().status, 200);
    assert_eq!(gw.admin_get("/readyz").await.unwrap().status, 200);
    connect(&gw, "alice").await;
}

#[tokio::test]
async fn sigterm_says_goodbye_to_every_client_and_exits() {
    let mut gw = gateway().await;
    let mut alice = connect(&gw, "alice").await;
    let mut bob = connect(&gw, "bob").await;
    let mut carol = connect(&gw, "carol").await;
    gw.signal(SIGTERM).unwrap();
    for client in [&mut alice, &mut bob] {
        let frame = client.recv().await.unwrap();
        assert_eq!(frame, ServerFrame::ServerShutdown { reconnect: true });
        assert_eq!(
            client.expect_close().await.unwrap(),
            (1001, "server shutting down".to_owned())
        );
    }
    // carol has not read her close yet, so the node is still draining: not ready, no upgrades.
    let readyz = gw.http_get("/readyz").await.unwrap();
    assert_eq!((readyz.status, readyz.text().as_str()), (503, "draining\n"));
    let refused = WsClient::connect(&gw.ws_url(), ConnectOptions::bearer(token("dave"))).await;
    assert_eq!(refused.err().and_then(|e| e.status()), Some(503));
    assert_eq!(carol.expect_close().await.unwrap().0, 1001);
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits within the drain time");
    assert!(status.success(), "{status:?}");
}

/// One worker thread selects tokio's current-thread scheduler (the default of an embedded gateway
/// on one CPU); the blocking pool (password hashes) and the drain must work there too.
#[tokio::test]
async fn a_single_threaded_gateway_serves_rooms_and_drains_on_sigterm() {
    let mut gw = gateway_with(&[("SWITCHBOARD_WORKER_THREADS", "1")]).await;
    let mut alice = connect(&gw, "alice").await;
    let mut bob = connect(&gw, "bob").await;
    let create = ClientFrame::RoomCreate {
        id: alice.next_id(),
        room_id: room("club"),
        name: None,
        kind: RoomKind::Password,
        password: Some("open sesame".to_owned()),
    };
    alice.request_ok(&create).await.unwrap();
    let join = ClientFrame::RoomJoin {
        id: bob.next_id(),
        room_id: room("club"),
        password: Some("open sesame".to_owned()),
        since_seq: None,
    };
    bob.request_ok(&join).await.unwrap();
    let joined = alice.recv().await.unwrap();
    assert!(
        matches!(joined, ServerFrame::UserJoinedRoom { ref user, .. } if user.id.as_str() == "bob"),
        "{joined:?}"
    );
    let sent: Vec<u64> = [
        send(&mut alice, "club", "one").await,
        send(&mut alice, "club", "two").await,
    ]
    .into();
    let received = [next_message(&mut bob).await, next_message(&mut bob).await];
    assert_eq!(received.map(|m| m.seq).to_vec(), sent);
    assert_eq!(sent, [1, 2]);

    gw.signal(SIGTERM).unwrap();
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            client.recv().await.unwrap(),
            ServerFrame::ServerShutdown { reconnect: true }
        );
        assert_eq!(client.expect_close().await.unwrap().0, 1001);
    }
    let status = gw.wait_exit(Duration::from_secs(15)).await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn dev_mode_serves_the_chat_page_and_tokens_for_any_name() {
    let gw = GatewayBuilder::new(env!("CARGO_BIN_EXE_gateway"))
        .start()
        .await
        .unwrap();
    gw.wait_for_log("Sample token", Duration::from_secs(5))
        .await
        .unwrap();
    let page = gw.http_get("/").await.unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    assert!(page.text().contains("Switchboard"));
    let reply = gw
        .http_get("/dev/token?user=zoe&name=Zo%C3%AB")
        .await
        .unwrap()
        .json()
        .unwrap();
    let token = reply["token"].as_str().expect("a token");
    let (_zoe, ready) = WsClient::connect_session(&gw.ws_url(), ConnectOptions::bearer(token))
        .await
        .unwrap();
    assert!(
        matches!(ready, ServerFrame::SessionReady { ref user, .. } if user.name == "Zoë"),
        "{ready:?}"
    );
    assert_eq!(
        gw.http_get("/dev/token?user=bad%20id")
            .await
            .unwrap()
            .status,
        400
    );
}

#[tokio::test]
async fn dev_mode_serves_the_page_and_the_client_modules_it_imports_as_committed() {
    let gw = GatewayBuilder::new(env!("CARGO_BIN_EXE_gateway"))
        .start()
        .await
        .unwrap();
    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let mut served = vec![(
        "/".to_owned(),
        "index.html".to_owned(),
        "text/html; charset=utf-8",
    )];
    // Every module of the committed client build, so one added there but not served fails here.
    let mut modules: Vec<String> = std::fs::read_dir(assets.join("client"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".js"))
        .collect();
    modules.sort();
    assert!(modules.iter().any(|m| m == "index.js"), "{modules:?}");
    for module in modules {
        served.push((
            format!("/client/{module}"),
            format!("client/{module}"),
            "text/javascript; charset=utf-8",
        ));
    }
    for (path, file, content_type) in served {
        let reply = gw.http_get(&path).await.unwrap();
        assert_eq!(reply.status, 200, "GET {path}");
        assert_eq!(
            reply.header("content-type"),
            Some(content_type),
            "GET {path}"
        );
        assert!(
            reply.body == std::fs::read(assets.join(&file)).unwrap(),
            "GET {path} is not assets/{file} as committed"
        );
    }
    let page = gw.http_get("/").await.unwrap().text();
    assert!(
        page.contains("/client/index.js"),
        "the page imports the client"
    );
    for unknown in [
        "/client/",
        "/client/nope.js",
        "/client/index.js.map",
        "/client/index.d.ts",
    ] {
        assert_eq!(
            gw.http_get(unknown).await.unwrap().status,
            404,
            "GET {unknown}"
        );
    }
}

#[tokio::test]
async fn a_bad_configuration_is_refused_with_every_problem_listed() {
    let out = GatewayBuilder::new(env!("CARGO_BIN_EXE_gateway"))
        .env("SWITCHBOARD_JWT_SECRET", "short")
        .env("SWITCHBOARD_HEARTBEAT_TIMEOUT_MS", "10")
        .env("SWITCHBOARD_WORKER_THREADS", "0")
        .env("SWITCHBOARD_LISTEN_BACKLOG", "0")
        .output(Duration::from_secs(20))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stderr.contains("at least 32 bytes"), "{}", out.stderr);
    assert!(
        out.stderr.contains("HEARTBEAT_TIMEOUT_MS"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("SWITCHBOARD_WORKER_THREADS must be >= 1"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("SWITCHBOARD_LISTEN_BACKLOG must be >= 1"),
        "{}",
        out.stderr
    );
}

/// The accept queue each listener asks the kernel for, as `ss -ltn` shows it (`Send-Q`).
async fn listen_queue(port: u16) -> u32 {
    let out = tokio::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .await
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no listener on {port}"));
    line.split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[tokio::test]
async fn listeners_queue_as_many_connects_as_configured_for_reconnect_storms() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gw = gateway().await;
    assert_eq!(
        listen_queue(gw.addr().port()).await,
        4096.min(somaxconn),
        "the default, capped by net.core.somaxconn"
    );
    let gw = builder()
        .env("SWITCHBOARD_LISTEN_BACKLOG", "77")
        .admin_listener()
        .start()
        .await
        .unwrap();
    assert_eq!(listen_queue(gw.addr().port()).await, 77);
    assert_eq!(listen_queue(gw.admin_addr().port()).await, 77);
}

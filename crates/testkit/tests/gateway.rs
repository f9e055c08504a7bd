//! `GatewayBuilder` and `Gateway` against a stand-in binary that serves `/readyz` the way the
//! real gateway does (the real one is exercised by crates/gateway/tests).

use std::time::Duration;

use switchboard_testkit::{GatewayBuilder, signal};

fn fake() -> GatewayBuilder {
    GatewayBuilder::new(env!("CARGO_BIN_EXE_testkit-fake-gateway"))
}

#[tokio::test]
async fn a_started_gateway_is_ready_and_drains_on_sigterm() {
    let mut gw = fake().start().await.unwrap();
    assert_eq!(gw.ws_url(), format!("ws://{}/ws", gw.addr()));
    assert_eq!(gw.http_get("/readyz").await.unwrap().text(), "ready");
    assert!(gw.metric("fake_requests_total").await.unwrap().unwrap() >= 2.0);
    gw.wait_for_log("listening on", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        gw.logs()
            .contains("SWITCHBOARD_LOG=info,switchboard_gateway=debug"),
        "{}",
        gw.logs()
    );

    let mark = gw.log_mark();
    gw.signal(signal::SIGTERM).unwrap();
    gw.wait_for_log_since(mark, "draining", Duration::from_secs(5))
        .await
        .unwrap();
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits after a drain");
    assert!(status.success(), "{status}");
    assert!(gw.logs().contains("drained, exiting"));
    assert!(gw.signal(signal::SIGTERM).is_err());
}

#[tokio::test]
async fn a_killed_gateway_restarts_on_the_same_ports() {
    let mut gw = fake()
        .env("SWITCHBOARD_LOG", "warn")
        .admin_listener()
        .start()
        .await
        .unwrap();
    assert_ne!(gw.admin_addr(), gw.addr());
    assert_eq!(gw.admin_get("/healthz").await.unwrap().text(), "ok");
    assert!(gw.logs().contains("SWITCHBOARD_LOG=warn"));
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    let status = gw.kill_hard().await.unwrap();
    assert!(!status.success());
    assert!(gw.http_get("/readyz").await.is_err());

    let again = gw.same_ports().start().await.unwrap();
    assert_eq!((again.addr(), again.admin_addr()), (addr, admin));
    assert_eq!(again.http_get("/readyz").await.unwrap().status, 200);
}

#[tokio::test]
async fn a_gateway_that_exits_at_startup_fails_start_with_its_output() {
    let err = fake().env("FAKE_FAIL", "1").start().await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("exited with exit status: 2"), "{text}");
    assert!(text.contains("config error: FAKE_FAIL is set"), "{text}");

    let out = fake()
        .env("FAKE_FAIL", "1")
        .output(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("config error"));
}

#[tokio::test]
async fn a_taken_fixed_port_is_reported() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let err = fake().port(port).start().await.unwrap_err();
    assert!(
        format!("{err:#}").contains(&format!("binding 127.0.0.1:{port}")),
        "{err:#}"
    );
}

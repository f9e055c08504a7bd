//! Authentication: header and first-frame tokens, refusals before and after the upgrade.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use std::time::Duration;

use common::*;
use switchboard_protocol::{AckResult, ClientFrame, ServerFrame};
use switchboard_testkit::{ConnectOptions, GatewayBuilder, WsClient, jwt};

async fn refused_status(gw: &switchboard_testkit::Gateway, token: &str) -> Option<u16> {
    match WsClient::connect(&gw.ws_url(), ConnectOptions::bearer(token)).await {
        Ok(_) => None,
        Err(e) => e.status(),
    }
}

#[tokio::test]
async fn a_bearer_token_opens_a_session_that_starts_with_session_ready() {
    let gw = gateway().await;
    let (_alice, ready) = connect_ready(&gw, "alice").await;
    let ServerFrame::SessionReady {
        user,
        conn_id,
        heartbeat_ms,
        max_frame_bytes,
        rooms,
        unread_notifications,
        epoch,
    } = ready
    else {
        panic!("{ready:?}")
    };
    assert_eq!((user.id.as_str(), user.name.as_str()), ("alice", "Alice"));
    assert!(!conn_id.is_empty());
    assert_eq!((heartbeat_ms, max_frame_bytes), (25_000, 65_536));
    assert!(rooms.is_empty());
    assert_eq!(unread_notifications, 0);
    assert!(
        epoch.starts_with("mem-"),
        "the embedded store names its epoch: {epoch}"
    );
}

#[tokio::test]
async fn an_auth_frame_opens_a_session_for_clients_without_headers() {
    let gw = gateway().await;
    let (mut bob, ready) =
        WsClient::connect_with_auth_frame(&gw.ws_url(), &token("bob"), ConnectOptions::default())
            .await
            .expect("session");
    assert!(
        matches!(ready, ServerFrame::SessionReady { ref user, .. } if user.id.as_str() == "bob")
    );
    // A second auth frame is refused, and the session goes on.
    bob.send(&ClientFrame::Auth {
        token: token("bob"),
    })
    .await
    .unwrap();
    let frame = bob.recv().await.unwrap();
    assert!(
        matches!(frame, ServerFrame::Error { code, .. } if code.as_str() == "ALREADY_AUTHENTICATED"),
        "{frame:?}"
    );
    assert!(matches!(
        bob.request(&ClientFrame::Ping { id: Some(9) })
            .await
            .unwrap(),
        ServerFrame::Pong { id: Some(9) }
    ));
}

#[tokio::test]
async fn expired_premature_wrongly_signed_and_alg_none_tokens_are_refused_before_the_upgrade() {
    let gw = gateway().await;
    assert_eq!(
        refused_status(&gw, &jwt::mint_hs256(SECRET, "alice", "A", -60)).await,
        Some(401),
        "expired"
    );
    let forged = jwt::mint_hs256("another-secret-another-secret-another", "alice", "A", 3_600);
    assert_eq!(refused_status(&gw, &forged).await, Some(401), "wrong key");
    assert_eq!(
        refused_status(&gw, &jwt::alg_none_token("alice", "A")).await,
        Some(401),
        "alg none"
    );
    assert_eq!(refused_status(&gw, "not-a-jwt").await, Some(401), "garbage");
    let bad_sub = jwt::mint_hs256(SECRET, "no spaces allowed", "A", 3_600);
    assert_eq!(
        refused_status(&gw, &bad_sub).await,
        Some(401),
        "invalid user id"
    );
    let mut not_yet = jwt::claims("alice", "A", 7_200);
    not_yet["nbf"] = (jwt::now_secs() + 3_600).into();
    assert_eq!(
        refused_status(&gw, &jwt::mint_hs256_claims(SECRET, &not_yet)).await,
        Some(401),
        "not valid for another hour"
    );
    // Within the leeway, a slightly fast issuer clock does no harm.
    let mut skewed = jwt::claims("alice", "A", 7_200);
    skewed["nbf"] = (jwt::now_secs() + 2).into();
    let mut client = WsClient::connect(
        &gw.ws_url(),
        ConnectOptions::bearer(jwt::mint_hs256_claims(SECRET, &skewed)),
    )
    .await
    .unwrap();
    client.expect_session_ready().await.unwrap();
    let refused = gw
        .metric("switchboard_handshakes_refused_total{status=\"401\"}")
        .await
        .unwrap();
    assert_eq!(refused, Some(6.0));
}

#[tokio::test]
async fn bad_tokens_in_the_auth_frame_close_with_documented_codes() {
    let gw = gateway().await;
    let mut not_yet = jwt::claims("alice", "A", 7200);
    not_yet["nbf"] = (jwt::now_secs() + 3600).into();
    // Any token that is not valid now is "no valid token": 4001, never 4003 (expiry during a
    // session, which never started here).
    for (token, code) in [
        (jwt::alg_none_token("alice", "A"), 4001),
        (jwt::mint_hs256(SECRET, "alice", "A", -60), 4001),
        (jwt::mint_hs256_claims(SECRET, &not_yet), 4001),
    ] {
        let mut client = WsClient::connect(&gw.ws_url(), ConnectOptions::default())
            .await
            .unwrap();
        client.send(&ClientFrame::Auth { token }).await.unwrap();
        assert_eq!(client.expect_close().await.unwrap().0, code);
    }
    // Anything but auth as the first frame.
    let mut client = WsClient::connect(&gw.ws_url(), ConnectOptions::default())
        .await
        .unwrap();
    client
        .send(&ClientFrame::Ping { id: Some(1) })
        .await
        .unwrap();
    assert_eq!(
        client.expect_close().await.unwrap(),
        (4001, "authentication failed".to_owned())
    );
}

#[tokio::test]
async fn a_client_that_never_authenticates_is_closed_after_the_auth_timeout() {
    let gw = gateway_with(&[("SWITCHBOARD_AUTH_TIMEOUT_MS", "300")]).await;
    let mut client = WsClient::connect(&gw.ws_url(), ConnectOptions::default())
        .await
        .unwrap();
    assert_eq!(client.expect_close().await.unwrap().0, 4002);
}

#[tokio::test]
async fn a_token_that_expires_during_the_session_ends_it_with_4003() {
    let gw = gateway().await;
    let short = jwt::mint_hs256(SECRET, "alice", "Alice", 2);
    let (mut alice, _) = WsClient::connect_session(&gw.ws_url(), ConnectOptions::bearer(short))
        .await
        .unwrap();
    let (code, reason) = alice
        .expect_close_within(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((code, reason.as_str()), (4003, "token expired"));
}

/// A token for `user` expiring at `exp` (Unix seconds).
fn token_until(user: &str, exp: i64) -> String {
    let mut claims = jwt::claims(user, &display_name(user), 0);
    claims["exp"] = exp.into();
    jwt::mint_hs256_claims(SECRET, &claims)
}

/// Sends `auth:refresh` with `token`; the reply.
async fn refresh(client: &mut WsClient, token: String) -> ServerFrame {
    let frame = ClientFrame::AuthRefresh {
        id: client.next_id(),
        token,
    };
    client.request(&frame).await.unwrap()
}

fn refused_code(reply: &ServerFrame) -> Option<&str> {
    match reply {
        ServerFrame::Ack {
            error: Some(error), ..
        } => Some(error.code.as_str()),
        _ => None,
    }
}

#[tokio::test]
async fn a_connection_is_told_before_its_token_expires_and_lives_on_a_refreshed_one() {
    let gw = gateway_with(&[("SWITCHBOARD_TOKEN_REFRESH_NOTICE_MS", "2000")]).await;
    let first_exp = jwt::now_secs() + 3;
    let (mut alice, _) = WsClient::connect_session(
        &gw.ws_url(),
        ConnectOptions::bearer(token_until("alice", first_exp)),
    )
    .await
    .unwrap();
    let notice = alice
        .recv_until(|f| matches!(f, ServerFrame::AuthExpiring { .. }))
        .await
        .unwrap();
    let ServerFrame::AuthExpiring { expires_at } = notice else {
        unreachable!()
    };
    assert_eq!(expires_at, u64::try_from(first_exp).unwrap() * 1_000);

    // Refused: another user's token, a forged one, an expired one. The connection stays.
    let bobs = token_until("bob", jwt::now_secs() + 3_600);
    assert_eq!(
        refused_code(&refresh(&mut alice, bobs).await),
        Some("INVALID_TOKEN")
    );
    let forged = jwt::mint_hs256(
        "another-secret-another-secret-0123",
        "alice",
        "Alice",
        3_600,
    );
    assert_eq!(
        refused_code(&refresh(&mut alice, forged).await),
        Some("INVALID_TOKEN")
    );
    let stale = token_until("alice", jwt::now_secs() - 10);
    assert_eq!(
        refused_code(&refresh(&mut alice, stale).await),
        Some("INVALID_TOKEN")
    );

    let next_exp = jwt::now_secs() + 3_600;
    let reply = refresh(&mut alice, token_until("alice", next_exp)).await;
    assert!(
        matches!(
            &reply,
            ServerFrame::Ack { result: Some(AckResult::Auth { expires_at }), .. }
                if *expires_at == u64::try_from(next_exp).unwrap() * 1_000
        ),
        "{reply:?}"
    );
    // Past the first token's expiry the connection still answers, and was told nothing more.
    let past_first = u64::try_from(first_exp + 1).unwrap() * 1_000;
    let now = switchboard_gateway::wall_clock::now_millis();
    tokio::time::sleep(Duration::from_millis(past_first.saturating_sub(now))).await;
    let ping = ClientFrame::Ping {
        id: Some(alice.next_id()),
    };
    assert!(matches!(
        alice.request(&ping).await.unwrap(),
        ServerFrame::Pong { .. }
    ));
}

#[tokio::test]
async fn a_refused_refresh_keeps_the_old_expiry_and_the_connection_closes_with_4003() {
    let gw = gateway().await;
    let (mut bob, _) = WsClient::connect_session(
        &gw.ws_url(),
        ConnectOptions::bearer(token_until("bob", jwt::now_secs() + 2)),
    )
    .await
    .unwrap();
    let carols = token_until("carol", jwt::now_secs() + 3_600);
    assert_eq!(
        refused_code(&refresh(&mut bob, carols).await),
        Some("INVALID_TOKEN")
    );
    let (code, reason) = bob
        .expect_close_within(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((code, reason.as_str()), (4003, "token expired"));
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let gw = gateway_with(&[
        ("SWITCHBOARD_JWT_ISSUER", "auth.example"),
        ("SWITCHBOARD_JWT_AUDIENCE", "chat"),
    ])
    .await;
    assert_eq!(refused_status(&gw, &token("alice")).await, Some(401));
    let mut claims = jwt::claims("alice", "Alice", 3_600);
    claims["iss"] = "auth.example".into();
    claims["aud"] = "chat".into();
    let good = jwt::mint_hs256_claims(SECRET, &claims);
    WsClient::connect_session(&gw.ws_url(), ConnectOptions::bearer(good))
        .await
        .expect("accepted");
}

#[tokio::test]
async fn public_keys_work_and_algorithm_confusion_is_refused() {
    for (keys, other) in [
        (jwt::RS256, jwt::RS256_OTHER),
        (jwt::ES256, jwt::ES256_OTHER),
    ] {
        let gw = GatewayBuilder::new(env!("CARGO_BIN_EXE_gateway"))
            .env("SWITCHBOARD_JWT_ALGORITHM", keys.alg_name())
            .env(
                "SWITCHBOARD_JWT_PUBLIC_KEY_FILE",
                keys.public_key_path().display().to_string(),
            )
            .start()
            .await
            .unwrap();
        let good = keys.mint("alice", "Alice", 3_600);
        WsClient::connect_session(&gw.ws_url(), ConnectOptions::bearer(good))
            .await
            .expect("accepted");
        let name = keys.alg_name();
        assert_eq!(
            refused_status(&gw, &other.mint("alice", "A", 3_600)).await,
            Some(401),
            "{name} other key"
        );
        // HS256 signed with the public key as the secret: the classic confusion attack.
        let confused = jwt::mint_hs256(keys.public_pem, "alice", "Alice", 3_600);
        assert_eq!(
            refused_status(&gw, &confused).await,
            Some(401),
            "{name} confusion"
        );
        assert_eq!(
            refused_status(&gw, &jwt::alg_none_token("alice", "A")).await,
            Some(401),
            "{name} none"
        );
    }
}

#[tokio::test]
async fn gateway_token_prints_a_token_the_gateway_accepts() {
    let out = builder()
        .arg("token")
        .arg("--user")
        .arg("carol")
        .arg("--name")
        .arg("Carol C")
        .arg("--ttl")
        .arg("10m")
        .output(Duration::from_secs(20))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let gw = gateway().await;
    let (_c, ready) =
        WsClient::connect_session(&gw.ws_url(), ConnectOptions::bearer(out.stdout.trim()))
            .await
            .expect("token accepted");
    assert!(matches!(ready, ServerFrame::SessionReady { ref user, .. } if user.name == "Carol C"));
}

#[tokio::test]
async fn gateway_token_refuses_a_secret_the_server_refuses_in_the_same_words() {
    let short =
        GatewayBuilder::new(env!("CARGO_BIN_EXE_gateway")).env("SWITCHBOARD_JWT_SECRET", "short");
    let server = short.output(Duration::from_secs(20)).await.unwrap();
    let token = ["token", "--user", "alice", "--name", "Alice", "--ttl", "1h"]
        .into_iter()
        .fold(short, |b, arg| b.arg(arg))
        .output(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(token.status.code(), Some(1), "{}", token.stderr);
    assert_eq!(token.stdout, "", "no token may be printed");
    assert!(
        token
            .stderr
            .contains("  - SWITCHBOARD_JWT_SECRET must be at least 32 bytes"),
        "{}",
        token.stderr
    );
    assert_eq!(server.status.code(), Some(1), "{}", server.stderr);
    // The same words, up to the backtrace (RUST_BACKTRACE is set for tests), which differs.
    let message = |stderr: &str| stderr.split("\n\n").next().unwrap_or_default().to_owned();
    assert_eq!(message(&token.stderr), message(&server.stderr));
}

#[tokio::test]
async fn a_rotated_out_secret_is_accepted_until_its_end_then_refused() {
    const PREVIOUS: &str = "the-previous-hs256-secret-0123456789abcdef";
    let with_previous = |until: &str| {
        builder()
            .env("SWITCHBOARD_JWT_PREVIOUS_SECRET", PREVIOUS)
            .env("SWITCHBOARD_JWT_PREVIOUS_SECRET_UNTIL", until)
    };
    let old_token = jwt::mint_hs256(PREVIOUS, "alice", "Alice", 3_600);
    let stranger = jwt::mint_hs256(
        "some-other-secret-0123456789abcdefghij",
        "eve",
        "Eve",
        3_600,
    );

    let rotating = with_previous("2999-01-01T00:00:00Z").start().await.unwrap();
    assert_eq!(
        refused_status(&rotating, &old_token).await,
        None,
        "still accepted"
    );
    assert_eq!(
        refused_status(&rotating, &token("bob")).await,
        None,
        "the new secret"
    );
    assert_eq!(refused_status(&rotating, &stranger).await, Some(401));
    let (_client, ready) = WsClient::connect_with_auth_frame(
        &rotating.ws_url(),
        &old_token,
        ConnectOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        matches!(ready, ServerFrame::SessionReady { .. }),
        "{ready:?}"
    );

    let rotated = with_previous("2020-01-01T00:00:00Z").start().await.unwrap();
    assert_eq!(
        refused_status(&rotated, &old_token).await,
        Some(401),
        "past its end"
    );
    assert_eq!(refused_status(&rotated, &token("bob")).await, None);
}

/// The test keys' JWKS without the keys whose `kid` is in `left_out`.
fn jwks_without(left_out: &[&str]) -> serde_json::Value {
    let mut set: serde_json::Value = serde_json::from_str(jwt::JWKS).unwrap();
    let keys = set["keys"].as_array_mut().unwrap();
    keys.retain(|k| !left_out.contains(&k["kid"].as_str().unwrap()));
    set
}

#[tokio::test]
async fn tokens_from_an_identity_provider_are_verified_with_the_key_their_kid_names() {
    use std::sync::{Arc, Mutex};
    use switchboard_testkit::receiver::{Receiver, Recorded, Reply};

    // The provider publishes rs-1, ec-1 and ed-1; rs-2 comes later, with a key rotation.
    let published = Arc::new(Mutex::new(Some(jwks_without(&["rs-2"]))));
    let serving = Arc::clone(&published);
    let provider = Receiver::start(move |_: &Recorded| match &*serving.lock().unwrap() {
        Some(set) => Reply::json(set),
        None => Reply::status(503),
    })
    .await
    .unwrap();
    let gw = GatewayBuilder::new(env!("CARGO_BIN_EXE_gateway"))
        .env(
            "SWITCHBOARD_JWT_JWKS_URL",
            provider.url("/.well-known/jwks.json"),
        )
        .env("SWITCHBOARD_JWT_JWKS_MIN_REFRESH_MS", "600000")
        .env("SWITCHBOARD_JWT_JWKS_REFRESH_MS", "1000")
        .start()
        .await
        .unwrap();
    let fetches = || provider.requests().len();
    assert!(fetches() >= 1, "fetched at start");
    assert_eq!(provider.requests()[0].method, "GET");

    for (pair, kid) in [
        (jwt::RS256, "rs-1"),
        (jwt::ES256, "ec-1"),
        (jwt::ED25519, "ed-1"),
    ] {
        let token = pair.mint_with_kid(kid, "alice");
        let (_client, ready) =
            WsClient::connect_session(&gw.ws_url(), ConnectOptions::bearer(token))
                .await
                .unwrap_or_else(|e| panic!("{kid}: {e:#}"));
        assert!(
            matches!(&ready, ServerFrame::SessionReady { user, .. } if user.id.as_str() == "alice"),
            "{kid}: {ready:?}"
        );
    }

    let refused = [
        ("no kid", jwt::RS256.mint("alice", "A", 3_600)),
        (
            "another key under rs-1",
            jwt::RS256_OTHER.mint_with_kid("rs-1", "alice"),
        ),
        (
            "RS256 under ec-1",
            jwt::RS256.mint_with_kid("ec-1", "alice"),
        ),
        // HS256 with the public key as the secret, under the RSA key's id: algorithm confusion.
        ("HS256 under rs-1", {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some("rs-1".into());
            let key = jsonwebtoken::EncodingKey::from_secret(jwt::RS256.public_pem.as_bytes());
            jsonwebtoken::encode(&header, &jwt::claims("alice", "A", 3_600), &key).unwrap()
        }),
    ];
    for (what, token) in &refused {
        assert_eq!(refused_status(&gw, token).await, Some(401), "{what}");
    }

    // The provider rotates: a token under the new key makes the node fetch again, once.
    *published.lock().unwrap() = Some(jwks_without(&[]));
    let before = fetches();
    let rotated = jwt::RS256_OTHER.mint_with_kid("rs-2", "bob");
    WsClient::connect_session(&gw.ws_url(), ConnectOptions::bearer(rotated))
        .await
        .expect("the new key is fetched and the token accepted");
    assert!(fetches() > before);
    // Made-up key ids do not make it fetch again within SWITCHBOARD_JWT_JWKS_MIN_REFRESH_MS.
    let made_up = jwt::RS256.mint_with_kid("rs-9", "mallory");
    let before = fetches();
    for _ in 0..5 {
        assert_eq!(refused_status(&gw, &made_up).await, Some(401));
    }
    assert!(
        fetches() <= before + 1,
        "at most the background refresh fetched: {} -> {}",
        before,
        fetches()
    );

    // The provider goes down: refreshes fail, the last good set is kept.
    *published.lock().unwrap() = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while gw
        .metric("switchboard_jwks_refreshes_total{outcome=\"error\"}")
        .await
        .unwrap()
        .is_none()
    {
        assert!(tokio::time::Instant::now() < deadline, "no failed refresh");
        // Polled: nothing tells a test that a background refresh ran.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    WsClient::connect_session(
        &gw.ws_url(),
        ConnectOptions::bearer(jwt::ED25519.mint_with_kid("ed-1", "carol")),
    )
    .await
    .expect("still accepted with the last good set");
}

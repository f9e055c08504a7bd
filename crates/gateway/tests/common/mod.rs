//! Shared scenario helpers: a gateway with a known secret, tokens, and connected users.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchboard_protocol::{
    AckResult, ClientFrame, Message, MessageKind, RoomId, ServerFrame, UserId,
};
use switchboard_testkit::{ConnectOptions, Gateway, GatewayBuilder, WsClient, jwt};

pub const SECRET: &str = "switchboard-integration-test-secret-0123456789";

/// For scenarios that send more than the default rate limit allows.
pub const UNLIMITED_RATE: (&str, &str) = ("SWITCHBOARD_RATE_BURST", "100000");

pub fn builder() -> GatewayBuilder {
    GatewayBuilder::new(env!("CARGO_BIN_EXE_gateway")).env("SWITCHBOARD_JWT_SECRET", SECRET)
}

pub async fn gateway() -> Gateway {
    builder().start().await.expect("gateway starts")
}

pub async fn gateway_with(env: &[(&str, &str)]) -> Gateway {
    env.iter()
        .fold(builder(), |b, (k, v)| b.env(*k, *v))
        .start()
        .await
        .expect("gateway starts")
}

pub fn token(user: &str) -> String {
    jwt::mint_hs256(SECRET, user, &display_name(user), 3_600)
}

pub fn display_name(user: &str) -> String {
    let mut name = user.to_owned();
    if let Some(first) = name.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    name
}

/// Connects `user` with a bearer token and consumes `session:ready`.
pub async fn connect(gw: &Gateway, user: &str) -> WsClient {
    connect_ready(gw, user).await.0
}

/// Connects `user` speaking MessagePack and consumes `session:ready`.
pub async fn connect_msgpack(gw: &Gateway, user: &str) -> WsClient {
    WsClient::connect_session(
        &gw.ws_url(),
        ConnectOptions::bearer(token(user)).with_codec(switchboard_protocol::Codec::MsgPack),
    )
    .await
    .unwrap_or_else(|e| panic!("{user} connects: {e:#}"))
    .0
}

pub async fn connect_ready(gw: &Gateway, user: &str) -> (WsClient, ServerFrame) {
    WsClient::connect_session(&gw.ws_url(), ConnectOptions::bearer(token(user)))
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e:#}"))
}

pub fn room(id: &str) -> RoomId {
    RoomId::parse(id).unwrap()
}

pub fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

/// A `clientMsgId` never used before in this test process, whatever the connection.
pub fn fresh_client_msg_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!(
        "c-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Sends a text message and returns its seq from the ack.
pub async fn send(client: &mut WsClient, room_id: &str, content: &str) -> u64 {
    let client_msg_id = fresh_client_msg_id();
    match client
        .send_text(room_id, content, &client_msg_id)
        .await
        .expect("ack")
    {
        ServerFrame::Ack {
            result: Some(AckResult::Sent { seq, .. }),
            ..
        } => seq,
        other => panic!("message:send refused: {other:?}"),
    }
}

/// The next `message:new`, skipping other frames.
pub async fn next_message(client: &mut WsClient) -> Message {
    match client
        .recv_until(|f| matches!(f, ServerFrame::MessageNew { .. }))
        .await
        .expect("message:new")
    {
        ServerFrame::MessageNew { message } => message,
        _ => unreachable!(),
    }
}

/// The error code of a refused request, panicking if it was accepted.
pub async fn refused_code(client: &mut WsClient, frame: &ClientFrame) -> String {
    match client.request(frame).await.expect("reply") {
        ServerFrame::Ack {
            error: Some(error),
            result: None,
            ..
        } => error.code.as_str().to_owned(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

pub fn message_send(id: u64, room_id: &str, content: &str, client_msg_id: &str) -> ClientFrame {
    ClientFrame::MessageSend {
        id,
        room_id: room(room_id),
        content: content.to_owned(),
        kind: MessageKind::Text,
        client_msg_id: client_msg_id.to_owned(),
    }
}

/// No frame arrives within a short window (used after the frame that would have come first).
pub async fn assert_quiet(client: &mut WsClient) {
    client
        .expect_no_frame(Duration::from_millis(300))
        .await
        .expect("no further frame");
}

/// The next `room:event`, as (room, event, data, from), skipping other frames.
pub async fn next_event(client: &mut WsClient) -> (String, String, serde_json::Value, String) {
    match client
        .recv_until(|f| matches!(f, ServerFrame::RoomEvent { .. }))
        .await
        .unwrap()
    {
        ServerFrame::RoomEvent {
            room_id,
            event,
            data,
            from,
        } => (room_id.to_string(), event, data, from.id.to_string()),
        _ => unreachable!(),
    }
}

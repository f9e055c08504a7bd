//! The WebSocket wire as RFC 6455 has it: the close handshake and text frames' UTF-8.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn a_client_that_closes_with_1000_gets_the_servers_close_frame_back() {
    let gw = gateway().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(
        gw.ws_url()
            .into_client_request()
            .map(|mut req| {
                req.headers_mut().insert(
                    "authorization",
                    format!("Bearer {}", token("alice")).parse().unwrap(),
                );
                req
            })
            .unwrap(),
    )
    .await
    .unwrap();
    // session:ready first.
    let ready = ws.next().await.unwrap().unwrap();
    assert!(
        matches!(ready, Message::Text(ref t) if t.contains("session:ready")),
        "{ready:?}"
    );
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let mut echoed = None;
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Close(frame)) => {
                echoed = Some(frame);
                break;
            }
            Ok(_) => {}
            Err(error) => panic!("no close frame came back: {error}"),
        }
    }
    let frame = echoed
        .expect("the server answers the close")
        .expect("with a code");
    assert_eq!(frame.code, CloseCode::Normal);
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    let gw = gateway().await;
    let mut client = connect(&gw, "alice").await;
    // A text frame whose payload is not UTF-8, sent as a raw frame.
    let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    client.send_message(Message::Frame(frame)).await.unwrap();
    let (code, reason) = client.expect_close().await.unwrap();
    assert_eq!((code, reason.as_str()), (1007, "invalid utf-8"));
}

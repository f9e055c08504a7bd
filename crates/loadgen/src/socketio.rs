//! The Socket.IO dialect: Socket.IO 4 packets in Engine.IO 4 packets over a raw WebSocket, for
//! measuring a Socket.IO server (`bench/peers/socketio`) doing the same work as the gateway.
//!
//! Connect to `ws://host:port/socket.io/?EIO=4&transport=websocket`. What goes over the wire,
//! one WebSocket text message per packet (default namespace, no binary attachments):
//!
//! | packet | meaning |
//! |---|---|
//! | `0{"sid":…,"pingInterval":…}` | Engine.IO open (server, first) |
//! | `40{"token":"…"}` | Socket.IO connect with the auth payload (client) |
//! | `40{"sid":…}` / `44{"message":…}` | connected / refused by the middleware (server) |
//! | `42["event",data]`, `42<id>["event",data]` | an event, without or with an ack id |
//! | `43<id>[reply]` | the ack of event `<id>` |
//! | `2` / `3` | Engine.IO ping (server) / pong (client: must answer within the ping timeout) |
//! | `1`, `41` | Engine.IO close, Socket.IO disconnect |
//!
//! Like the Switchboard path, a receiver recognises a delivery by its prefix and takes the
//! timestamp from the digits after `"content":"`, with no JSON parsing.

use std::sync::LazyLock;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use memchr::memmem;
use serde_json::json;
use switchboard_protocol::RoomId;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::Ws;

/// The Engine.IO pong a client answers every ping `2` with.
pub const PONG: &str = "3";
const PING: &[u8] = b"2";
const MESSAGE_NEW_PREFIX: &[u8] = br#"42["message:new","#;
const CONTENT_KEY: &[u8] = br#""content":""#;
const ACK_PREFIX: &[u8] = b"43";

static CONTENT_FINDER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(CONTENT_KEY));

/// What one text frame from a Socket.IO server is, as far as loadgen cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// Engine.IO ping: answer [`PONG`].
    Ping,
    /// The ack of event `id`.
    Ack(u64),
    /// The server closed the session (Engine.IO close or Socket.IO disconnect).
    Closed,
    /// Anything else (events loadgen does not count).
    Other,
}

/// Classifies a frame by its first bytes.
pub fn classify(frame: &[u8]) -> Packet {
    if frame == PING {
        Packet::Ping
    } else if let Some(rest) = frame.strip_prefix(ACK_PREFIX) {
        crate::fanout::leading_number(rest).map_or(Packet::Other, Packet::Ack)
    } else if frame == b"1" || frame.starts_with(b"41") {
        Packet::Closed
    } else {
        Packet::Other
    }
}

/// The timestamp of a `message:new` event, or `None` for any other frame.
pub fn delivery_timestamp(frame: &[u8]) -> Option<u64> {
    if !frame.starts_with(MESSAGE_NEW_PREFIX) {
        return None;
    }
    let rest = &frame[MESSAGE_NEW_PREFIX.len()..];
    crate::fanout::leading_number(&rest[CONTENT_FINDER.find(rest)? + CONTENT_KEY.len()..])
}

/// An event with an ack id: `42<id>["event",data]`.
fn event(id: u64, name: &str, data: &serde_json::Value) -> String {
    format!("42{id}{}", json!([name, data]))
}

/// The `message:send` event a publisher sends; `room` and `client_msg_id` need no escaping
/// (room ids and the `pub-N-K` ids are plain ASCII) and `content` is digits and dots.
pub fn message_send(id: u64, room: &RoomId, content: &str, client_msg_id: &str) -> String {
    format!(
        r#"42{id}["message:send",{{"roomId":"{room}","content":"{content}","clientMsgId":"{client_msg_id}"}}]"#
    )
}

/// The next text frame, answering pings on the way.
async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                if text.as_bytes() == PING {
                    ws.send(Message::text(PONG)).await?;
                    continue;
                }
                return Ok(text.as_str().to_owned());
            }
            Some(Ok(Message::Close(frame))) => bail!("closed by the server: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
            None => bail!("connection ended"),
        }
    }
}

/// The Engine.IO and Socket.IO handshakes on a fresh WebSocket: waits for the open packet,
/// connects to the default namespace with `{"token": token}` as auth, and waits for the answer.
pub async fn handshake(ws: &mut Ws, token: &str) -> anyhow::Result<()> {
    let open = next_text(ws).await?;
    if !open.starts_with('0') {
        bail!("expected an Engine.IO open packet, got {:.80}", open);
    }
    ws.send(Message::text(format!("40{}", json!({ "token": token }))))
        .await?;
    loop {
        let reply = next_text(ws).await?;
        if reply.starts_with("40") {
            return Ok(());
        }
        if let Some(error) = reply.strip_prefix("44") {
            bail!("refused by the server: {error:.200}");
        }
        if classify(reply.as_bytes()) == Packet::Closed {
            bail!("closed by the server during the handshake");
        }
    }
}

/// Sends `room:join` for `room` with ack id `id` and waits for its ack.
pub async fn join(ws: &mut Ws, room: &RoomId, id: u64) -> anyhow::Result<()> {
    ws.send(Message::text(event(
        id,
        "room:join",
        &json!({ "roomId": room.as_str() }),
    )))
    .await?;
    loop {
        let text = next_text(ws).await?;
        match classify(text.as_bytes()) {
            Packet::Ack(acked) if acked == id => {
                return match crate::fanout::ack_outcome(text.as_bytes()) {
                    Ok(()) => Ok(()),
                    Err(code) => bail!("room:join {room}: {code}"),
                };
            }
            Packet::Closed => bail!("closed by the server while joining {room}"),
            _ => continue,
        }
    }
}

/// Checks that `url` is an Engine.IO 4 WebSocket URL, so a wrong one fails with a hint rather
/// than with 10,000 refused upgrades.
pub fn check_url(url: &str) -> anyhow::Result<()> {
    let query = url
        .split_once('?')
        .map(|(_, query)| query)
        .context("a Socket.IO URL needs ?EIO=4&transport=websocket")?;
    let has = |pair: &str| query.split('&').any(|p| p == pair);
    if !has("EIO=4") || !has("transport=websocket") {
        bail!("{url}: a Socket.IO URL needs ?EIO=4&transport=websocket");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_new_event_yields_its_content_timestamp() {
        let frame = br#"42["message:new",{"messageId":"3614ae44","roomId":"bench-0","seq":1,"sender":{"id":"pub-0","name":"pub-0"},"kind":"text","content":"1234567890.....","clientMsgId":"pub-0-0","createdAt":1795315095651}]"#;
        assert_eq!(delivery_timestamp(frame), Some(1_234_567_890));
        assert_eq!(crate::fanout::created_at(frame), Some(1_795_315_095_651));
    }

    #[test]
    fn other_events_and_acks_are_not_deliveries() {
        assert_eq!(
            delivery_timestamp(br#"42["user:joined",{"content":"1"}]"#),
            None
        );
        assert_eq!(delivery_timestamp(br#"4312[{"seq":1}]"#), None);
        assert_eq!(
            delivery_timestamp(br#"42["message:new",{"content":"x"}]"#),
            None
        );
    }

    #[test]
    fn acks_are_read_by_id() {
        assert_eq!(
            classify(br#"4312[{"messageId":"m","seq":1}]"#),
            Packet::Ack(12)
        );
        assert_eq!(classify(b"431[]"), Packet::Ack(1));
        assert_eq!(classify(b"43[]"), Packet::Other, "an ack without an id");
        assert_eq!(
            crate::fanout::ack_outcome(br#"4311[{"error":{"code":"NOT_A_MEMBER","message":"x"}}]"#),
            Err("NOT_A_MEMBER".to_owned())
        );
        assert_eq!(crate::fanout::ack_outcome(br#"4311[{"seq":4}]"#), Ok(()));
    }

    #[test]
    fn pings_and_closes_are_recognised() {
        assert_eq!(classify(b"2"), Packet::Ping);
        assert_eq!(classify(b"2probe"), Packet::Other);
        assert_eq!(classify(b"1"), Packet::Closed);
        assert_eq!(classify(b"41"), Packet::Closed);
        assert_eq!(classify(br#"42["message:new",{}]"#), Packet::Other);
    }

    #[test]
    fn events_carry_their_ack_id_before_the_array() {
        let room = RoomId::parse("bench-0".to_owned()).unwrap();
        assert_eq!(
            event(1, "room:join", &json!({ "roomId": room.as_str() })),
            r#"421["room:join",{"roomId":"bench-0"}]"#
        );
        let send = message_send(10, &room, "42....", "pub-0-0");
        assert_eq!(
            send,
            r#"4210["message:send",{"roomId":"bench-0","content":"42....","clientMsgId":"pub-0-0"}]"#
        );
        let (_, array) = send.split_at(4);
        let parsed: serde_json::Value = serde_json::from_str(array).unwrap();
        assert_eq!(parsed[1]["content"], "42....");
    }

    #[test]
    fn urls_must_name_engine_io_4_over_websocket() {
        assert!(check_url("ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket").is_ok());
        assert!(check_url("ws://127.0.0.1:3000/socket.io/").is_err());
        assert!(check_url("ws://127.0.0.1:3000/socket.io/?EIO=3&transport=websocket").is_err());
    }
}

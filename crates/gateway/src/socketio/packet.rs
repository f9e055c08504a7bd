//! Engine.IO v4 and Socket.IO v5 packets, as text: what `socket.io-client` sends and expects.
//!
//! An Engine.IO packet is a type digit and its data: `0` open, `1` close, `2` ping, `3` pong,
//! `4` message, `5` upgrade, `6` noop. A Socket.IO packet rides in a message (`4`):
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]` with type `0` connect, `1`
//! disconnect, `2` event, `3` ack, `4` connect error, `5` binary event, `6` binary ack.

use std::fmt::Write as _;

/// The Engine.IO packets a server reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnginePacket<'a> {
    Close,
    /// A ping from the client (only while probing an upgrade: `2probe`).
    Ping(&'a str),
    Pong,
    Message(&'a str),
    Upgrade,
    Noop,
}

/// Why a packet cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("empty packet")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    EngineType(char),
    #[error("unknown Socket.IO packet type {0:?}")]
    SocketType(char),
    #[error("bad attachment count")]
    Attachments,
    #[error("unterminated namespace")]
    Namespace,
    #[error("ack id out of range")]
    AckId,
}

impl<'a> EnginePacket<'a> {
    pub fn parse(text: &'a str) -> Result<Self, PacketError> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or(PacketError::Empty)?;
        let data = chars.as_str();
        Ok(match kind {
            '1' => Self::Close,
            '2' => Self::Ping(data),
            '3' => Self::Pong,
            '4' => Self::Message(data),
            '5' => Self::Upgrade,
            '6' => Self::Noop,
            other => return Err(PacketError::EngineType(other)),
        })
    }
}

/// Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

/// A Socket.IO packet, borrowing its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketPacket<'a> {
    pub kind: SocketKind,
    /// Binary attachments that follow as binary messages (binary event and ack only).
    pub attachments: usize,
    pub namespace: &'a str,
    pub ack_id: Option<u64>,
    /// The JSON payload, empty when absent.
    pub data: &'a str,
}

/// The main namespace, the only one served.
pub const MAIN_NAMESPACE: &str = "/";

impl<'a> SocketPacket<'a> {
    pub fn parse(text: &'a str) -> Result<Self, PacketError> {
        let mut rest = text;
        let kind = match rest.chars().next().ok_or(PacketError::Empty)? {
            '0' => SocketKind::Connect,
            '1' => SocketKind::Disconnect,
            '2' => SocketKind::Event,
            '3' => SocketKind::Ack,
            '4' => SocketKind::ConnectError,
            '5' => SocketKind::BinaryEvent,
            '6' => SocketKind::BinaryAck,
            other => return Err(PacketError::SocketType(other)),
        };
        rest = &rest[1..];
        let mut attachments = 0;
        if matches!(kind, SocketKind::BinaryEvent | SocketKind::BinaryAck) {
            let (count, after) = rest.split_once('-').ok_or(PacketError::Attachments)?;
            attachments = count.parse().map_err(|_| PacketError::Attachments)?;
            rest = after;
        }
        let mut namespace = MAIN_NAMESPACE;
        if rest.starts_with('/') {
            let (name, after) = rest.split_once(',').ok_or(PacketError::Namespace)?;
            namespace = name;
            rest = after;
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let ack_id = if digits > 0 {
            Some(rest[..digits].parse().map_err(|_| PacketError::AckId)?)
        } else {
            None
        };
        Ok(Self {
            kind,
            attachments,
            namespace,
            ack_id,
            data: &rest[digits..],
        })
    }
}

/// `0{...}`: the Engine.IO open packet.
pub fn open(sid: &str, ping_interval_ms: u64, ping_timeout_ms: u64, max_payload: usize) -> String {
    let handshake = serde_json::json!({
        "sid": sid,
        "upgrades": [],
        "pingInterval": ping_interval_ms,
        "pingTimeout": ping_timeout_ms,
        "maxPayload": max_payload,
    });
    format!("0{handshake}")
}

/// The Engine.IO ping the server sends every ping interval.
pub const PING: &str = "2";
/// The answer to the client's `2probe`.
pub const PROBE_PONG: &str = "3probe";

/// `40{"sid":...,"pid":...}`: the main namespace's connect, accepted; with a private id, the
/// client can be recovered (`socket.recovered`) when it comes back with it.
pub fn connected(sid: &str, pid: Option<&str>) -> String {
    let mut body = serde_json::json!({ "sid": sid });
    if let Some(pid) = pid {
        body["pid"] = serde_json::Value::from(pid);
    }
    format!("40{body}")
}

/// `44[<namespace>,]{"message":...,"data":...}`: a connect refused.
pub fn connect_error(namespace: &str, message: &str, data: Option<&serde_json::Value>) -> String {
    let mut body = serde_json::json!({ "message": message });
    if let Some(data) = data {
        body["data"] = data.clone();
    }
    format!("44{}{body}", namespace_prefix(namespace))
}

/// `41`: the server disconnects the socket (the client does not reconnect by itself).
pub const DISCONNECT: &str = "41";

/// `42["<event>",<payload>]`, from the event name and the payload's JSON text.
pub fn event(name: &str, payload: &str) -> String {
    let mut text = String::with_capacity(8 + name.len() + payload.len());
    text.push_str("42[");
    // Event names are the protocol's frame types and validated `room:emit` names: no escapes.
    let _ = write!(text, "{}", serde_json::Value::from(name));
    text.push(',');
    text.push_str(payload);
    text.push(']');
    text
}

/// `43<id>[<payload>]`: the ack of the client's event `id`.
pub fn ack(id: u64, payload: &str) -> String {
    format!("43{id}[{payload}]")
}

fn namespace_prefix(namespace: &str) -> String {
    if namespace == MAIN_NAMESPACE {
        String::new()
    } else {
        format!("{namespace},")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_packets_read_by_their_type_digit() {
        assert_eq!(EnginePacket::parse("3"), Ok(EnginePacket::Pong));
        assert_eq!(
            EnginePacket::parse("2probe"),
            Ok(EnginePacket::Ping("probe"))
        );
        assert_eq!(EnginePacket::parse("40"), Ok(EnginePacket::Message("0")));
        assert_eq!(EnginePacket::parse("6"), Ok(EnginePacket::Noop));
        assert_eq!(EnginePacket::parse(""), Err(PacketError::Empty));
        assert_eq!(EnginePacket::parse("9"), Err(PacketError::EngineType('9')));
    }

    #[test]
    fn socket_packets_read_namespace_ack_id_and_data() {
        let connect = SocketPacket::parse(r#"0{"token":"t"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                connect.kind,
                connect.namespace,
                connect.ack_id,
                connect.data
            ),
            (SocketKind::Connect, "/", None, r#"{"token":"t"}"#)
        );
        let event =
            SocketPacket::parse(r#"212["message:send",{}]"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (event.kind, event.ack_id, event.data),
            (SocketKind::Event, Some(12), r#"["message:send",{}]"#)
        );
        let admin =
            SocketPacket::parse(r#"0/admin,{"token":"t"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (admin.namespace, admin.data),
            ("/admin", r#"{"token":"t"}"#)
        );
        let binary = SocketPacket::parse(r#"52-/chat,7["upload",{"_placeholder":true,"num":0}]"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                binary.kind,
                binary.attachments,
                binary.namespace,
                binary.ack_id
            ),
            (SocketKind::BinaryEvent, 2, "/chat", Some(7))
        );
        assert_eq!(
            SocketPacket::parse("1"),
            Ok(SocketPacket {
                kind: SocketKind::Disconnect,
                attachments: 0,
                namespace: "/",
                ack_id: None,
                data: "",
            })
        );
        assert_eq!(SocketPacket::parse("5x"), Err(PacketError::Attachments));
        assert_eq!(SocketPacket::parse("0/admin"), Err(PacketError::Namespace));
        assert_eq!(
            SocketPacket::parse("299999999999999999999999[]"),
            Err(PacketError::AckId)
        );
        assert_eq!(SocketPacket::parse("8"), Err(PacketError::SocketType('8')));
    }

    #[test]
    fn server_packets_are_what_socket_io_client_reads() {
        assert_eq!(connected("n1-0001", None), r#"40{"sid":"n1-0001"}"#);
        assert_eq!(
            connected("n1-0001", Some("p")),
            r#"40{"pid":"p","sid":"n1-0001"}"#
        );
        assert_eq!(
            connect_error("/", "authentication failed", None),
            r#"44{"message":"authentication failed"}"#
        );
        assert_eq!(
            connect_error("/admin", "Invalid namespace", None),
            r#"44/admin,{"message":"Invalid namespace"}"#
        );
        assert_eq!(event("pong", "{}"), r#"42["pong",{}]"#);
        assert_eq!(ack(3, r#"{"kind":"ok"}"#), r#"433[{"kind":"ok"}]"#);
        let open = open("abc", 25_000, 20_000, 65_536);
        let handshake: serde_json::Value =
            serde_json::from_str(&open[1..]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(handshake["pingInterval"], 25_000);
        assert_eq!(handshake["upgrades"], serde_json::json!([]));
    }
}

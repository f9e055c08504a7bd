//! JSON and MessagePack, one serde shape.
//!
//! MessagePack uses `rmp_serde::to_vec_named`, so structs travel as maps keyed by the same
//! camelCase names as JSON and both codecs share every example in `docs/protocol.md`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ids::ID_ERROR_MARKER;
use crate::{ClientFrame, ClientFrameKind, ErrorCode};

/// A wire codec, negotiated with `Sec-WebSocket-Protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// JSON in text frames. The default when a client offers no subprotocol.
    #[default]
    Json,
    /// MessagePack in binary frames.
    MsgPack,
}

/// A frame could not be encoded. Only a bug can cause this: every frame type serializes.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("json encoding failed: {0}")]
    Json(#[from] serde_json::Error),
    #[error("msgpack encoding failed: {0}")]
    MsgPack(#[from] rmp_serde::encode::Error),
}

/// The client offered subprotocols, none of them ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no supported subprotocol offered; offer switchboard.v1.json or switchboard.v1.msgpack")]
pub struct UnsupportedSubprotocol;

/// Why an incoming frame was refused, with the code and request id to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    /// The frame's `id`, when one could be read, so the reply can be an `ack`.
    pub id: Option<u64>,
}

impl Codec {
    pub const JSON_SUBPROTOCOL: &'static str = "switchboard.v1.json";
    pub const MSGPACK_SUBPROTOCOL: &'static str = "switchboard.v1.msgpack";

    pub fn subprotocol(self) -> &'static str {
        match self {
            Self::Json => Self::JSON_SUBPROTOCOL,
            Self::MsgPack => Self::MSGPACK_SUBPROTOCOL,
        }
    }

    pub fn from_subprotocol(name: &str) -> Option<Self> {
        match name.trim() {
            Self::JSON_SUBPROTOCOL => Some(Self::Json),
            Self::MSGPACK_SUBPROTOCOL => Some(Self::MsgPack),
            _ => None,
        }
    }

    /// Picks the codec from the values of every `Sec-WebSocket-Protocol` header, in the client's
    /// order of preference. `Ok(None)`: nothing offered, so JSON without echoing a subprotocol.
    /// An error when only unknown subprotocols are offered, which the handshake must refuse (a
    /// browser fails a connection whose server picks none of its offers).
    pub fn negotiate<'a>(
        offers: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<Self>, UnsupportedSubprotocol> {
        let mut offered_any = false;
        for name in offers.into_iter().flat_map(|v| v.split(',')) {
            if name.trim().is_empty() {
                continue;
            }
            offered_any = true;
            if let Some(codec) = Self::from_subprotocol(name) {
                return Ok(Some(codec));
            }
        }
        if offered_any {
            Err(UnsupportedSubprotocol)
        } else {
            Ok(None)
        }
    }

    /// Whether frames travel as WebSocket binary (true) or text (false) messages.
    pub fn is_binary(self) -> bool {
        matches!(self, Self::MsgPack)
    }

    pub fn encode<T: Serialize>(self, value: &T) -> Result<Vec<u8>, EncodeError> {
        Ok(match self {
            Self::Json => serde_json::to_vec(value)?,
            Self::MsgPack => rmp_serde::to_vec_named(value)?,
        })
    }

    /// Decodes any frame type; errors are plain text. Clients use this for server frames.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Self::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Self::MsgPack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
        }
    }

    /// Decodes a client frame, classifying a failure into the precise error code to answer with.
    pub fn decode_client(self, bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
        let err = match self.decode::<ClientFrame>(bytes) {
            Ok(frame) => return Ok(frame),
            Err(e) => e,
        };
        // Slow path, only for refused frames: find out what is wrong.
        #[derive(serde::Deserialize)]
        struct TypeProbe {
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct IdProbe {
            id: u64,
        }
        let id = self.decode::<IdProbe>(bytes).ok().map(|p| p.id);
        let refuse = |code, message: String| Err(DecodeError { code, message, id });
        match self.decode::<TypeProbe>(bytes) {
            Err(_) => refuse(
                ErrorCode::MalformedFrame,
                format!("not a {} object: {err}", self.name()),
            ),
            Ok(TypeProbe { kind: None }) => refuse(
                ErrorCode::MalformedFrame,
                "frame has no string field \"type\"".to_owned(),
            ),
            Ok(TypeProbe { kind: Some(kind) }) => match ClientFrameKind::from_wire_name(&kind) {
                None => refuse(
                    ErrorCode::UnknownType,
                    format!("unknown frame type {kind:?}"),
                ),
                Some(_) if err.contains(ID_ERROR_MARKER) => {
                    refuse(ErrorCode::InvalidIdentifier, format!("{kind}: {err}"))
                }
                Some(_) => refuse(ErrorCode::InvalidField, format!("{kind}: {err}")),
            },
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::MsgPack => "MessagePack",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(codec: Codec, bytes: &[u8]) -> DecodeError {
        codec
            .decode_client(bytes)
            .expect_err("frame should be refused")
    }

    #[test]
    fn malformed_json_is_classified() {
        let e = refused(Codec::Json, b"{not json");
        assert_eq!((e.code, e.id), (ErrorCode::MalformedFrame, None));
        assert_eq!(
            refused(Codec::Json, b"[1,2]").code,
            ErrorCode::MalformedFrame
        );
        assert_eq!(
            refused(Codec::Json, br#"{"id":3}"#).code,
            ErrorCode::MalformedFrame
        );
    }

    #[test]
    fn unknown_type_keeps_the_request_id() {
        let e = refused(Codec::Json, br#"{"type":"room:explode","id":9}"#);
        assert_eq!((e.code, e.id), (ErrorCode::UnknownType, Some(9)));
        assert!(e.message.contains("room:explode"));
    }

    #[test]
    fn invalid_fields_name_the_field() {
        let e = refused(
            Codec::Json,
            br#"{"type":"message:send","id":4,"roomId":"general"}"#,
        );
        assert_eq!((e.code, e.id), (ErrorCode::InvalidField, Some(4)));
        assert!(e.message.contains("content"), "{}", e.message);
        let e = refused(
            Codec::Json,
            br#"{"type":"presence:update","status":"sleeping"}"#,
        );
        assert_eq!(e.code, ErrorCode::InvalidField);
    }

    #[test]
    fn bad_identifiers_get_the_validation_code() {
        let e = refused(
            Codec::Json,
            br#"{"type":"room:join","id":2,"roomId":"no spaces!"}"#,
        );
        assert_eq!((e.code, e.id), (ErrorCode::InvalidIdentifier, Some(2)));
        let frame = serde_json::json!({"type": "room:join", "id": 2, "roomId": "x".repeat(65)});
        let bytes = rmp_serde::to_vec_named(&frame).unwrap();
        assert_eq!(
            refused(Codec::MsgPack, &bytes).code,
            ErrorCode::InvalidIdentifier
        );
    }

    #[test]
    fn msgpack_garbage_is_malformed() {
        assert_eq!(
            refused(Codec::MsgPack, &[0xc1, 0xff]).code,
            ErrorCode::MalformedFrame
        );
    }

    #[test]
    fn negotiation_prefers_the_first_known_offer() {
        assert_eq!(Codec::negotiate([]), Ok(None));
        assert_eq!(
            Codec::negotiate(["chat, switchboard.v1.msgpack", "switchboard.v1.json"]),
            Ok(Some(Codec::MsgPack))
        );
        assert_eq!(
            Codec::negotiate(["switchboard.v0.json"]),
            Err(UnsupportedSubprotocol)
        );
    }
}

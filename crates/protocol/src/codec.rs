//! JSON and MessagePack, one serde shape.
//!
//! MessagePack uses `rmp_serde::to_vec_named`, so structs travel as maps keyed by the same
//! camelCase names as JSON and both codecs share every example in `docs/protocol.md`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ids::ID_ERROR_MARKER;
use crate::{ClientFrame, ClientFrameKind, ErrorCode, msgpack};

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
    ///
    /// Both codecs hold a frame to the same rules: exactly one value with nothing after it,
    /// nested at most 127 levels deep, and in MessagePack a map with string keys only.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        self.decode_frame(bytes).map_err(|e| e.message)
    }

    fn decode_frame<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, Unreadable> {
        match self {
            Self::Json => serde_json::from_slice(bytes).map_err(|e| {
                let message = e.to_string();
                // serde_json's only signal for its nesting limit is the message.
                let too_deep = message.starts_with("recursion limit exceeded");
                Unreadable { message, too_deep }
            }),
            Self::MsgPack => msgpack::from_slice(bytes).map_err(|e| Unreadable {
                too_deep: msgpack::is_too_deep(&e),
                message: e.to_string(),
            }),
        }
    }

    /// Whether `bytes` start like an object: a JSON `{` after optional whitespace, or a
    /// MessagePack map marker. Serde's derived types also accept a sequence of field values in
    /// order (`["ping",7]`), which the protocol does not allow; looking at one byte refuses
    /// those before any parsing.
    fn starts_as_object(self, bytes: &[u8]) -> bool {
        match self {
            Self::Json => {
                let first = bytes
                    .iter()
                    .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
                first == Some(&b'{')
            }
            // fixmap, map 16, map 32.
            Self::MsgPack => matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf)),
        }
    }

    /// Decodes a client frame, classifying a failure into the precise error code to answer with.
    pub fn decode_client(self, bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
        if !self.starts_as_object(bytes) {
            return Err(DecodeError {
                code: ErrorCode::MalformedFrame,
                message: format!("a frame must be a {} object", self.name()),
                id: None,
            });
        }
        let err = match self.decode_frame::<ClientFrame>(bytes) {
            Ok(frame) => return Ok(frame),
            Err(e) => e,
        };
        // Slow path, only for refused frames: find out what is wrong. Nothing is read from a
        // frame that is not a document its codec accepts, not even its id; the decode above
        // stopped at the first error, so look at the whole frame for that.
        if let Some(why) = self.unreadable(bytes, &err) {
            return Err(DecodeError {
                code: ErrorCode::MalformedFrame,
                message: format!("not a {} object: {why}", self.name()),
                id: None,
            });
        }
        let err = err.message;
        #[derive(serde::Deserialize)]
        struct TypeProbe {
            #[serde(rename = "type")]
            kind: Option<WireString>,
        }
        #[derive(serde::Deserialize)]
        struct IdProbe {
            id: u64,
        }
        let id = self.decode_frame::<IdProbe>(bytes).ok().map(|p| p.id);
        let refuse = |code, message: String| Err(DecodeError { code, message, id });
        match self.decode_frame::<TypeProbe>(bytes) {
            Err(_) => refuse(
                ErrorCode::MalformedFrame,
                format!("not a {} object: {err}", self.name()),
            ),
            Ok(TypeProbe { kind: None }) => refuse(
                ErrorCode::MalformedFrame,
                "frame has no string field \"type\"".to_owned(),
            ),
            Ok(TypeProbe {
                kind: Some(WireString(kind)),
            }) => match ClientFrameKind::from_wire_name(&kind) {
                None => refuse(
                    ErrorCode::UnknownType,
                    format!("unknown frame type {kind:?}"),
                ),
                // An identifier's own error starts with the marker; other errors may quote a
                // value that contains it (`invalid type: string "invalid identifier"`).
                Some(_) if err.starts_with(ID_ERROR_MARKER) => {
                    refuse(ErrorCode::InvalidIdentifier, format!("{kind}: {err}"))
                }
                Some(_) => refuse(ErrorCode::InvalidField, format!("{kind}: {err}")),
            },
        }
    }

    /// Why a refused frame is no document at all, when that is so: it nests deeper than the
    /// limit somewhere, or (JSON) is not UTF-8, which `serde_json` checks only in the strings it
    /// keeps.
    fn unreadable(self, bytes: &[u8], err: &Unreadable) -> Option<String> {
        let too_deep = err.too_deep
            || match self {
                Self::Json => json_nests_deeper_than(bytes, msgpack::MAX_NESTING),
                Self::MsgPack => msgpack::nests_too_deep(bytes),
            };
        if too_deep {
            return Some(format!(
                "nested deeper than {} levels",
                msgpack::MAX_NESTING
            ));
        }
        match self {
            Self::Json => std::str::from_utf8(bytes).err().map(|e| e.to_string()),
            Self::MsgPack => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::MsgPack => "MessagePack",
        }
    }
}

/// Whether JSON text nests arrays and objects deeper than `limit`, counting brackets outside
/// strings (exact for valid JSON, which is all that matters: anything else is refused anyway).
fn json_nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A string as its codec spells one: MessagePack binary does not pass for it.
struct WireString(String);

impl<'de> serde::Deserialize<'de> for WireString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = WireString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<WireString, E> {
                Ok(WireString(s.to_owned()))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Why bytes did not decode, as much as the classification needs.
#[derive(Debug)]
struct Unreadable {
    message: String,
    /// Nested deeper than the codec's limit.
    too_deep: bool,
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

    /// Both encodings of `value`, as a client would send them.
    fn encodings(value: &serde_json::Value) -> [(Codec, Vec<u8>); 2] {
        [
            (Codec::Json, serde_json::to_vec(value).unwrap()),
            (Codec::MsgPack, rmp_serde::to_vec_named(value).unwrap()),
        ]
    }

    #[test]
    fn anything_but_an_object_is_malformed_in_both_codecs() {
        use serde_json::json;
        // Serde's derived types would take the first four positionally: `["ping",7]` as a ping
        // with id 7, `[8]` as an id probe.
        let not_objects = [
            json!(["ping", 7]),
            json!(["room:create", 8, "arr-room"]),
            json!(["room:create", 8, "arr-room", null, "public"]),
            json!([8]),
            json!([]),
            json!([["ping", 7]]),
            json!([{"type": "ping", "id": 7}]),
            json!([[["room:create", 8, "arr-room"]]]),
            json!("ping"),
            json!(""),
            json!("{\"type\":\"ping\"}"),
            json!(7),
            json!(-1),
            json!(1.5),
            json!(u64::MAX),
            json!(true),
            json!(null),
        ];
        for value in &not_objects {
            for (codec, bytes) in encodings(value) {
                let e = refused(codec, &bytes);
                assert_eq!(
                    (e.code, e.id),
                    (ErrorCode::MalformedFrame, None),
                    "{codec:?} {value}"
                );
            }
        }
        for bytes in [&b""[..], b"   ", b"\n\t[\"ping\",7]", b" \"ping\""] {
            assert_eq!(refused(Codec::Json, bytes).code, ErrorCode::MalformedFrame);
        }
        // Array 16 and array 32 markers, not only fixarray.
        let mut array16 = vec![0xdc, 0x00, 0x02];
        array16.extend(rmp_serde::to_vec(&("ping", 7)).unwrap().split_off(1));
        let mut array32 = vec![0xdd, 0x00, 0x00, 0x00, 0x02];
        array32.extend_from_slice(&array16[3..]);
        for bytes in [array16, array32, vec![]] {
            assert_eq!(
                refused(Codec::MsgPack, &bytes).code,
                ErrorCode::MalformedFrame
            );
        }
    }

    #[test]
    fn objects_still_decode_in_every_map_form() {
        let ping = ClientFrame::Ping { id: Some(7) };
        let json = b" \r\n\t{\"type\":\"ping\",\"id\":7} ";
        assert_eq!(Codec::Json.decode_client(json), Ok(ping.clone()));
        // The same map as fixmap, map 16 and map 32.
        let fixmap = rmp_serde::to_vec_named(&ping).unwrap();
        assert_eq!(fixmap[0], 0x82);
        let mut map16 = vec![0xde, 0x00, 0x02];
        map16.extend_from_slice(&fixmap[1..]);
        let mut map32 = vec![0xdf, 0x00, 0x00, 0x00, 0x02];
        map32.extend_from_slice(&fixmap[1..]);
        for bytes in [fixmap, map16, map32] {
            assert_eq!(Codec::MsgPack.decode_client(&bytes), Ok(ping.clone()));
        }
    }

    #[test]
    fn a_refused_object_still_names_its_request_id_in_both_codecs() {
        use serde_json::json;
        let cases = [
            (
                json!({"type": "room:explode", "id": 9}),
                ErrorCode::UnknownType,
            ),
            (
                json!({"type": "room:create", "id": 8}),
                ErrorCode::InvalidField,
            ),
            (
                json!({"type": "room:create", "id": 8, "roomId": ["arr-room"]}),
                ErrorCode::InvalidField,
            ),
            (
                json!({"type": "room:create", "id": 8, "roomId": "no spaces"}),
                ErrorCode::InvalidIdentifier,
            ),
        ];
        for (value, code) in &cases {
            for (codec, bytes) in encodings(value) {
                let e = refused(codec, &bytes);
                assert_eq!(
                    (e.code, e.id),
                    (*code, value["id"].as_u64()),
                    "{codec:?} {value}"
                );
            }
        }
    }

    #[test]
    fn bytes_after_the_frame_are_malformed_in_both_codecs() {
        let mut msgpack = rmp_serde::to_vec_named(&ClientFrame::Ping { id: Some(7) }).unwrap();
        for trailing in [&[0xc0][..], &[0x01, 0x02], &[0xdc], &msgpack.clone()] {
            let mut bytes = msgpack.clone();
            bytes.extend_from_slice(trailing);
            let e = refused(Codec::MsgPack, &bytes);
            assert_eq!(
                (e.code, e.id),
                (ErrorCode::MalformedFrame, None),
                "{bytes:x?}"
            );
        }
        msgpack.pop();
        assert_eq!(
            refused(Codec::MsgPack, &msgpack).code,
            ErrorCode::MalformedFrame
        );
        let e = refused(Codec::Json, br#"{"type":"ping","id":7} x"#);
        assert_eq!((e.code, e.id), (ErrorCode::MalformedFrame, None));
    }

    /// `{"type": "ping", "x": [[…]]}` with `levels` levels in all, in both codecs.
    fn nested(levels: usize) -> [(Codec, Vec<u8>); 2] {
        let arrays = levels - 1;
        let json = format!(
            r#"{{"type":"ping","x":{}{}}}"#,
            "[".repeat(arrays),
            "]".repeat(arrays)
        );
        let mut msgpack =
            rmp_serde::to_vec_named(&serde_json::json!({"type": "ping", "x": 0})).unwrap();
        msgpack.pop();
        msgpack.extend(std::iter::repeat_n(0x91, arrays - 1));
        msgpack.push(0x90);
        [(Codec::Json, json.into_bytes()), (Codec::MsgPack, msgpack)]
    }

    #[test]
    fn both_codecs_accept_the_same_nesting_and_refuse_deeper_frames_as_malformed() {
        for (codec, bytes) in nested(msgpack::MAX_NESTING) {
            assert_eq!(
                codec.decode_client(&bytes),
                Ok(ClientFrame::Ping { id: None }),
                "{codec:?}"
            );
        }
        // Regression: 1,000 levels of MessagePack overflowed a 2 MiB stack (rmp_serde's
        // own limit is 1,024 and serde buffers the frame recursively). Run where a tokio
        // worker would.
        let deep = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                [msgpack::MAX_NESTING + 1, 1_000, 60_000].map(|levels| {
                    nested(levels).map(|(codec, bytes)| (codec, codec.decode_client(&bytes)))
                })
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        for (codec, result) in deep.into_iter().flatten() {
            let e = result.expect_err("too deep");
            assert_eq!(
                (e.code, e.id),
                (ErrorCode::MalformedFrame, None),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn a_frame_too_deep_anywhere_is_malformed_whatever_fails_first() {
        // Regression (found by tests/fuzz.rs): the decode stops at the first error, here the
        // `type` that is not a string, and JSON then read the id past the nesting limit.
        let deep = nested_arrays(msgpack::MAX_NESTING, serde_json::json!(null));
        let value = serde_json::json!({"id": 0, "roomId": "r0", "type": deep});
        for (codec, bytes) in encodings(&value) {
            let e = refused(codec, &bytes);
            assert_eq!(
                (e.code, e.id),
                (ErrorCode::MalformedFrame, None),
                "{codec:?}"
            );
        }
        // One level less is a frame with a bad `type`, whose id is read.
        let shallow = nested_arrays(msgpack::MAX_NESTING - 2, serde_json::json!(null));
        let value = serde_json::json!({"id": 0, "roomId": "r0", "type": shallow});
        for (codec, bytes) in encodings(&value) {
            let e = refused(codec, &bytes);
            assert_eq!(
                (e.code, e.id),
                (ErrorCode::MalformedFrame, Some(0)),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn json_that_is_not_utf8_is_malformed_and_no_id_is_read() {
        // Regression (found by tests/fuzz.rs): serde_json checks UTF-8 only in the strings it
        // keeps, so the id probe, which skips `type`, read an id from this.
        let e = refused(
            Codec::Json,
            b"{\"id\":0,\"seq\":0,\"type\":\"\x80message:read\"}",
        );
        assert_eq!(
            (e.code, e.id),
            (ErrorCode::MalformedFrame, None),
            "{}",
            e.message
        );
    }

    /// `levels` arrays, one inside the other, around `inner`.
    fn nested_arrays(levels: usize, inner: serde_json::Value) -> serde_json::Value {
        (0..levels).fold(inner, |v, _| serde_json::Value::Array(vec![v]))
    }

    #[test]
    fn msgpack_integer_or_binary_keys_are_malformed_not_field_positions() {
        // Regression: serde reads an integer key as the position of a field, so this was
        // {"type": "room:create", "id": 8, "roomId": "arr-room"} and created the room.
        let mut positional = vec![0x83, 0xa4];
        positional.extend_from_slice(b"type");
        positional.push(0xab);
        positional.extend_from_slice(b"room:create");
        positional.extend_from_slice(&[0x00, 0x08, 0x01, 0xa8]);
        positional.extend_from_slice(b"arr-room");
        let e = refused(Codec::MsgPack, &positional);
        assert_eq!(
            (e.code, e.id),
            (ErrorCode::MalformedFrame, None),
            "{}",
            e.message
        );
        // A key spelled as binary rather than a string.
        let mut binary_key = rmp_serde::to_vec_named(&ClientFrame::Ping { id: Some(7) }).unwrap();
        let at = binary_key
            .windows(3)
            .position(|w| w == [0xa2, b'i', b'd'])
            .unwrap();
        binary_key.splice(at..at + 1, [0xc4, 0x02]);
        let e = refused(Codec::MsgPack, &binary_key);
        assert_eq!(
            (e.code, e.id),
            (ErrorCode::MalformedFrame, None),
            "{}",
            e.message
        );
    }

    #[test]
    fn msgpack_type_must_be_a_string_not_a_frame_position_or_binary() {
        // Regression (found by tests/fuzz.rs): serde read an integer `type` as the position of
        // a frame type, so {"id": 0, "type": 1} was a ping.
        for kind in [
            serde_json::json!(1),
            serde_json::json!(2),
            serde_json::json!(0),
        ] {
            let value = serde_json::json!({"id": 0, "type": kind, "roomId": "r0"});
            for (codec, bytes) in encodings(&value) {
                let e = refused(codec, &bytes);
                assert_eq!(
                    (e.code, e.id),
                    (ErrorCode::MalformedFrame, Some(0)),
                    "{codec:?}"
                );
            }
        }
        let mut binary_type = rmp_serde::to_vec_named(&ClientFrame::Ping { id: Some(3) }).unwrap();
        let at = binary_type
            .windows(5)
            .position(|w| w == b"\xa4ping")
            .unwrap();
        binary_type.splice(at..at + 1, [0xc4, 0x04]);
        let e = refused(Codec::MsgPack, &binary_type);
        assert_eq!(
            (e.code, e.id),
            (ErrorCode::MalformedFrame, Some(3)),
            "{}",
            e.message
        );
        // An extension (fixext 1) is valid MessagePack but no string either; the id is read.
        let mut ext_type =
            rmp_serde::to_vec_named(&serde_json::json!({"id": 0, "type": 0})).unwrap();
        ext_type.pop();
        ext_type.extend_from_slice(&[0xd4, 0x00, 0x00]);
        let e = refused(Codec::MsgPack, &ext_type);
        assert_eq!(
            (e.code, e.id),
            (ErrorCode::MalformedFrame, Some(0)),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_value_quoting_the_identifier_marker_is_an_invalid_field() {
        // Regression: the classification looked for the marker anywhere in the message,
        // and serde quotes the offending value in it.
        let e = refused(
            Codec::Json,
            br#"{"type":"room:join","id":"invalid identifier","roomId":"general"}"#,
        );
        assert_eq!(
            (e.code, e.id),
            (ErrorCode::InvalidField, None),
            "{}",
            e.message
        );
        let e = refused(
            Codec::MsgPack,
            &rmp_serde::to_vec_named(&serde_json::json!(
                {"type": "ping", "id": format!("{ID_ERROR_MARKER}: x")}
            ))
            .unwrap(),
        );
        assert_eq!(e.code, ErrorCode::InvalidField, "{}", e.message);
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

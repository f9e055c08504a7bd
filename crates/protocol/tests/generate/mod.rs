//! Proptest generators of client frames for fuzzing, and the oracle that says how a decoder
//! must answer each.
//!
//! Shared by the decoder properties (`crates/protocol/tests/fuzz.rs`) and the live-session
//! properties (`crates/gateway/tests/fuzz.rs`, which includes this file by path).
//!
//! Three layers, from likely-valid to hostile:
//! - [`valid_frame`]: a real `ClientFrame` of every kind, serialized; small pools of room and
//!   user ids make a live gateway accept a fair share of them.
//! - [`structured`]: that frame as a [`Doc`] (a document either codec can carry, including what
//!   JSON cannot: integer and binary map keys, binary values), then mutated: fields dropped,
//!   renamed, duplicated, given wrong types, huge or negative numbers, deep nesting, unicode, NUL,
//!   invalid identifiers; or the frame replaced by something that is not an object.
//!   [`expected`] is an independent reading of the protocol's rules that says, for such a
//!   document, whether it is accepted or which code and request id refuse it.
//! - [`raw_bytes`]: encoded documents mangled byte by byte (truncated, flipped, spliced, with
//!   bytes appended), or random bytes: only "no panic, a sane answer" can be said of those.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap as _, SerializeSeq as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use switchboard_protocol::{
    ClientFrame, Codec, ErrorCode, MessageKind, PresenceStatus, RoomId, RoomKind, UserId,
};

/// Deepest nesting a frame may have, counting itself (docs/protocol.md, Limits).
pub const MAX_NESTING: usize = 127;

/// How many cases a property runs: `SWITCHBOARD_FUZZ_CASES` when set, else `default`.
pub fn cases(default: u32) -> u32 {
    match std::env::var("SWITCHBOARD_FUZZ_CASES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("SWITCHBOARD_FUZZ_CASES={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Where the cases come from: a fixed seed by default, so the normal test run is the same run
/// every time (a failure it finds is a change's, not luck's); `SWITCHBOARD_FUZZ_SEED` gives
/// another number, or `random` for new cases on every run.
pub fn seed() -> proptest::test_runner::RngSeed {
    use proptest::test_runner::RngSeed;
    match std::env::var("SWITCHBOARD_FUZZ_SEED") {
        Ok(v) if v == "random" => RngSeed::Random,
        Ok(v) => {
            RngSeed::Fixed(v.parse().unwrap_or_else(|_| {
                panic!("SWITCHBOARD_FUZZ_SEED={v:?} is not a number or random")
            }))
        }
        Err(_) => RngSeed::Fixed(0x5317_c4b0_a2d0),
    }
}

/// A document as a codec carries it. Maps keep their entries in order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub enum Doc {
    Null,
    Bool(bool),
    UInt(u64),
    /// Always negative: non-negative integers are `UInt`, as both codecs decode them.
    Int(i64),
    Float(f64),
    Str(String),
    /// MessagePack binary; JSON has none and carries it as an array of numbers.
    Bin(Vec<u8>),
    Array(Vec<Doc>),
    Map(Vec<(Doc, Doc)>),
}

impl Serialize for Doc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::UInt(n) => s.serialize_u64(*n),
            Self::Int(n) => s.serialize_i64(*n),
            Self::Float(f) => s.serialize_f64(*f),
            Self::Str(t) => s.serialize_str(t),
            Self::Bin(b) => s.serialize_bytes(b),
            Self::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Reads any document, leniently: every key type, binary, extensions, duplicates kept in order.
impl<'de> Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Doc;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any document")
            }
            fn visit_unit<E>(self) -> Result<Doc, E> {
                Ok(Doc::Null)
            }
            fn visit_none<E>(self) -> Result<Doc, E> {
                Ok(Doc::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Doc, E> {
                Ok(Doc::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Doc, E> {
                Ok(Doc::UInt(n))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Doc, E> {
                Ok(u64::try_from(n).map_or(Doc::Int(n), Doc::UInt))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Doc, E> {
                Ok(Doc::Float(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<Doc, E> {
                Ok(Doc::Str(s.to_owned()))
            }
            fn visit_bytes<E>(self, b: &[u8]) -> Result<Doc, E> {
                Ok(Doc::Bin(b.to_vec()))
            }
            /// A MessagePack extension, as `rmp_serde` passes it on.
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Doc, D::Error> {
                Doc::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Doc::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Doc::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Doc {
    /// Reads any document `codec` can carry, or `None`.
    pub fn decode(bytes: &[u8], codec: Codec) -> Option<Doc> {
        match codec {
            Codec::Json => serde_json::from_slice(bytes).ok(),
            Codec::MsgPack => {
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
                let doc = Doc::deserialize(&mut de).ok()?;
                // Exactly one document: nothing may follow.
                let rest = Doc::deserialize(&mut de);
                rest.is_err().then_some(doc)
            }
        }
    }
}

impl From<serde_json::Value> for Doc {
    fn from(value: serde_json::Value) -> Self {
        use serde_json::Value as V;
        match value {
            V::Null => Self::Null,
            V::Bool(b) => Self::Bool(b),
            V::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Self::UInt(u),
                (None, Some(i)) => Self::Int(i),
                (None, None) => Self::Float(n.as_f64().unwrap_or_default()),
            },
            V::String(s) => Self::Str(s),
            V::Array(items) => Self::Array(items.into_iter().map(Self::from).collect()),
            V::Object(map) => Self::Map(
                map.into_iter()
                    .map(|(k, v)| (Self::Str(k), Self::from(v)))
                    .collect(),
            ),
        }
    }
}

impl Doc {
    /// The document as it reads back from `codec`: JSON keys are strings (an integer key is
    /// written as its digits), binary is an array of numbers, and a float that is not finite
    /// is `null`.
    pub fn as_carried_by(&self, codec: Codec) -> Doc {
        if codec == Codec::MsgPack {
            return self.clone();
        }
        match self {
            Self::Float(f) if !f.is_finite() => Self::Null,
            Self::Bin(b) => Self::Array(b.iter().map(|&n| Self::UInt(n.into())).collect()),
            Self::Array(items) => {
                Self::Array(items.iter().map(|d| d.as_carried_by(codec)).collect())
            }
            Self::Map(entries) => Self::Map(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Self::Str(s) => s.clone(),
                            Self::UInt(n) => n.to_string(),
                            Self::Int(n) => n.to_string(),
                            other => serde_json::to_string(&other.as_carried_by(codec)).unwrap(),
                        };
                        (Self::Str(key), v.as_carried_by(codec))
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// The bytes a client sends.
    pub fn encode(&self, codec: Codec) -> Vec<u8> {
        match codec {
            Codec::Json => serde_json::to_vec(&self.as_carried_by(codec)).unwrap(),
            Codec::MsgPack => rmp_serde::to_vec(self).unwrap(),
        }
    }

    /// Levels of arrays and maps, the outermost included; 0 for a scalar.
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(self, 1)];
        while let Some((doc, level)) = stack.pop() {
            match doc {
                Self::Array(items) => {
                    deepest = deepest.max(level);
                    stack.extend(items.iter().map(|d| (d, level + 1)));
                }
                Self::Map(entries) => {
                    deepest = deepest.max(level);
                    for (k, v) in entries {
                        stack.push((k, level + 1));
                        stack.push((v, level + 1));
                    }
                }
                _ => {}
            }
        }
        deepest
    }

    /// `levels` arrays, one inside the other, around `inner`.
    pub fn nested(levels: usize, inner: Doc) -> Doc {
        (0..levels).fold(inner, |d, _| Self::Array(vec![d]))
    }

    fn str(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// Valid frames.

/// Small pools, so that a live gateway sees the same rooms and users again and accepts a fair
/// share of requests; and the full identifier alphabet.
fn plain_id() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "r0", "r1", "r2", "fuzz", "u0", "u1", "fuzzer-json", "fuzzer-msgpack",
        ])
            .prop_map(str::to_owned),
        1 => "[A-Za-z0-9_.@-]{1,64}",
    ]
    .boxed()
}

fn user_id() -> BoxedStrategy<UserId> {
    plain_id().prop_map(|s| UserId::parse(s).unwrap()).boxed()
}

fn room_id() -> BoxedStrategy<RoomId> {
    prop_oneof![
        4 => plain_id().prop_map(|s| RoomId::parse(s).unwrap()),
        1 => (user_id(), user_id()).prop_filter_map("a direct room needs two users", |(a, b)| {
            RoomId::direct(&a, &b)
        }),
    ]
    .boxed()
}

/// Strings chosen to break things: empty, blank, NUL, control and bidi characters, emoji,
/// the protocol's own vocabulary, and long ones.
pub fn nasty_string() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "\t\n ",
            "\0",
            "a\0b",
            "héllo 👋",
            "\u{202e}txet",
            "\u{feff}x",
            "\u{10ffff}",
            "\\",
            "\"",
            "{}",
            "[]",
            "null",
            "ping",
            "type",
            "id",
            "room:create",
            "invalid identifier",
            "invalid identifier: x",
            "dm:",
            "dm:a:b",
            "dm:b:a",
            "dm:a:a",
            "no spaces!",
            "r0",
            "fuzzer",
            "recursion limit exceeded",
            "depth limit exceeded",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,16}",
        any::<String>(),
        (1..300usize, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
        Just("x".repeat(64)),
        Just("x".repeat(65)),
    ]
    .boxed()
}

fn text() -> BoxedStrategy<String> {
    prop_oneof![4 => "[a-z ]{1,20}", 1 => nasty_string()].boxed()
}

fn request_id() -> BoxedStrategy<u64> {
    prop_oneof![
        4 => 0..10_000u64,
        1 => any::<u64>(),
        1 => Just(u64::MAX),
        1 => Just((1 << 53) + 1),
    ]
    .boxed()
}

fn seq() -> BoxedStrategy<u64> {
    prop_oneof![4 => 0..100u64, 1 => any::<u64>(), 1 => Just(u64::MAX)].boxed()
}

fn page() -> BoxedStrategy<Option<u32>> {
    prop::option::of(prop_oneof![0..200u32, any::<u32>()]).boxed()
}

fn client_msg_id() -> BoxedStrategy<String> {
    prop_oneof!["[!-~]{1,64}", nasty_string()].boxed()
}

fn message_kind() -> impl Strategy<Value = MessageKind> {
    prop::sample::select(vec![
        MessageKind::Text,
        MessageKind::Image,
        MessageKind::File,
    ])
}

fn room_kind() -> impl Strategy<Value = RoomKind> {
    // Password rooms hash with Argon2 (seconds in a debug build): rarer.
    prop_oneof![
        8 => prop::sample::select(vec![
            RoomKind::Public,
            RoomKind::Private,
            RoomKind::Direct,
            RoomKind::Feed,
        ]),
        1 => Just(RoomKind::Password),
    ]
}

fn presence() -> impl Strategy<Value = PresenceStatus> {
    prop::sample::select(vec![
        PresenceStatus::Online,
        PresenceStatus::Away,
        PresenceStatus::Busy,
        PresenceStatus::Offline,
    ])
}

/// A real frame of any kind; every kind is equally likely.
pub fn valid_frame() -> BoxedStrategy<ClientFrame> {
    use ClientFrame as F;
    let opt_id = || prop::option::of(request_id());
    let password = || prop::option::weighted(0.1, "[a-z]{1,8}");
    prop_oneof![
        nasty_string().prop_map(|token| F::Auth { token }),
        (request_id(), nasty_string()).prop_map(|(id, token)| F::AuthRefresh { id, token }),
        opt_id().prop_map(|id| F::Ping { id }),
        (
            request_id(),
            room_id(),
            prop::option::of(text()),
            room_kind(),
            password()
        )
            .prop_map(|(id, room_id, name, kind, password)| F::RoomCreate {
                id,
                room_id,
                name,
                kind,
                password,
            }),
        (request_id(), room_id(), password(), prop::option::of(seq())).prop_map(
            |(id, room_id, password, since_seq)| F::RoomJoin {
                id,
                room_id,
                password,
                since_seq,
            }
        ),
        (request_id(), room_id()).prop_map(|(id, room_id)| F::RoomLeave { id, room_id }),
        (request_id(), room_id(), any::<bool>()).prop_map(|(id, room_id, muted)| F::RoomMute {
            id,
            room_id,
            muted
        }),
        (
            request_id(),
            room_id(),
            text(),
            message_kind(),
            client_msg_id()
        )
            .prop_map(
                |(id, room_id, content, kind, client_msg_id)| F::MessageSend {
                    id,
                    room_id,
                    content,
                    kind,
                    client_msg_id,
                }
            ),
        (
            request_id(),
            user_id(),
            text(),
            message_kind(),
            client_msg_id()
        )
            .prop_map(
                |(id, recipient_id, content, kind, client_msg_id)| F::DmSend {
                    id,
                    recipient_id,
                    content,
                    kind,
                    client_msg_id,
                }
            ),
        room_id().prop_map(|room_id| F::TypingStart { room_id }),
        room_id().prop_map(|room_id| F::TypingStop { room_id }),
        (
            request_id(),
            room_id(),
            "[a-z][a-z0-9:_-]{0,12}",
            json_value()
        )
            .prop_map(|(id, room_id, event, data)| F::RoomEmit {
                id,
                room_id,
                event,
                data,
            }),
        (opt_id(), presence()).prop_map(|(id, status)| F::PresenceUpdate { id, status }),
        (opt_id(), room_id(), seq()).prop_map(|(id, room_id, seq)| F::MessageRead {
            id,
            room_id,
            seq,
        }),
        (
            request_id(),
            room_id(),
            prop::option::of(seq()),
            prop::option::of(seq()),
            page()
        )
            .prop_map(
                |(id, room_id, before_seq, after_seq, limit)| F::HistoryFetch {
                    id,
                    room_id,
                    before_seq,
                    after_seq,
                    limit,
                }
            ),
        (request_id(), page(), prop::option::of(seq()))
            .prop_map(|(id, limit, before)| F::NotificationsList { id, limit, before }),
        (request_id(), prop::collection::vec(seq(), 0..8))
            .prop_map(|(id, ids)| F::NotificationsRead { id, ids }),
        (request_id(), user_id()).prop_map(|(id, user_id)| F::FriendRequest { id, user_id }),
        (request_id(), user_id()).prop_map(|(id, user_id)| F::FriendAccept { id, user_id }),
        (request_id(), user_id()).prop_map(|(id, user_id)| F::FriendRemove { id, user_id }),
        request_id().prop_map(|id| F::FriendsList { id }),
        (request_id(), "[a-z][a-z0-9:_-]{0,12}", json_value())
            .prop_map(|(id, method, data)| F::Rpc { id, method, data }),
    ]
    .boxed()
}

/// A `room:emit` payload: any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{0,6}", inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A frame as a document, exactly as `rmp_serde::to_vec_named` and `serde_json` write it.
pub fn frame_doc(frame: &ClientFrame) -> Doc {
    Doc::from(serde_json::to_value(frame).unwrap())
}

// ---------------------------------------------------------------------------------------------
// Mutated documents.

/// Every field name a client frame has, and near misses.
const FIELD_NAMES: &[&str] = &[
    "type",
    "id",
    "token",
    "roomId",
    "name",
    "kind",
    "password",
    "sinceSeq",
    "content",
    "clientMsgId",
    "recipientId",
    "status",
    "seq",
    "beforeSeq",
    "afterSeq",
    "limit",
    "before",
    "ids",
    "userId",
    "event",
    "data",
    "ID",
    "Id",
    "room_id",
    "roomid",
    "RoomId",
    " id",
    "id ",
    "id\0",
    "íd",
    "",
    "typ",
    "Type",
];

/// Every `type` a client may send, some server-only ones, and near misses.
const TYPE_NAMES: &[&str] = &[
    "auth",
    "auth:refresh",
    "ping",
    "room:create",
    "room:join",
    "room:leave",
    "room:mute",
    "message:send",
    "dm:send",
    "typing:start",
    "typing:stop",
    "room:emit",
    "presence:update",
    "message:read",
    "history:fetch",
    "notifications:list",
    "notifications:read",
    "friend:request",
    "friend:accept",
    "friend:remove",
    "friends:list",
    "rpc",
    "pong",
    "ack",
    "session:ready",
    "PING",
    "ping ",
    "",
    "room:",
    "Ping",
];

fn key() -> BoxedStrategy<Doc> {
    prop_oneof![
        8 => prop::sample::select(FIELD_NAMES).prop_map(Doc::str),
        2 => nasty_string().prop_map(Doc::Str),
        // Only MessagePack can carry these as keys; JSON writes them as strings.
        1 => (0..20u64).prop_map(Doc::UInt),
        1 => (-5..0i64).prop_map(Doc::Int),
        1 => prop::sample::select(FIELD_NAMES).prop_map(|k| Doc::Bin(k.as_bytes().to_vec())),
        1 => Just(Doc::Null),
        1 => Just(Doc::Bool(true)),
    ]
    .boxed()
}

fn number() -> BoxedStrategy<Doc> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            1 << 53,
            (1 << 53) + 1,
            i64::MAX as u64,
            u64::MAX,
        ])
        .prop_map(Doc::UInt),
        any::<u64>().prop_map(Doc::UInt),
        prop::sample::select(vec![-1, i64::MIN, -(1 << 53)]).prop_map(Doc::Int),
        (i64::MIN..0).prop_map(Doc::Int),
        prop::sample::select(vec![
            0.0,
            -0.0,
            0.5,
            1.0,
            7.0,
            -1.0,
            1e19,
            1.8e19,
            1e300,
            f64::MIN
        ])
        .prop_map(Doc::Float),
        any::<f64>().prop_map(Doc::Float),
    ]
    .boxed()
}

/// Any document, small and shallow.
pub fn any_doc() -> BoxedStrategy<Doc> {
    let leaf = prop_oneof![
        Just(Doc::Null),
        any::<bool>().prop_map(Doc::Bool),
        number(),
        nasty_string().prop_map(Doc::Str),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Doc::Bin),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Doc::Array),
            prop::collection::vec((key(), inner), 0..4).prop_map(Doc::Map),
        ]
    })
    .boxed()
}

/// A value to put where a field's value was: wrong types, edge numbers, nesting around the
/// limit, a map that spells an enum the long way (`{"public": null}`).
pub fn wild_value() -> BoxedStrategy<Doc> {
    prop_oneof![
        4 => any_doc(),
        2 => number(),
        2 => nasty_string().prop_map(Doc::Str),
        1 => (MAX_NESTING - 3..MAX_NESTING + 3, any_doc())
            .prop_map(|(levels, inner)| Doc::nested(levels, inner)),
        1 => (0..1_000usize).prop_map(|levels| Doc::nested(levels, Doc::Null)),
        1 => prop::sample::select(vec![
            "public", "private", "password", "direct", "feed", "text", "image", "file", "online",
            "away", "busy", "offline",
        ])
        .prop_map(|variant| Doc::Map(vec![(Doc::str(variant), Doc::Null)])),
        1 => prop::collection::vec(number(), 0..4).prop_map(Doc::Array),
        1 => nasty_string().prop_map(|s| Doc::Bin(s.into_bytes())),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
pub enum Mutation {
    Drop(Index),
    Rename(Index, Doc),
    Replace(Index, Doc),
    Add(Doc, Doc),
    Duplicate(Index),
    Retype(Doc),
    Swap(Index, Index),
    /// The whole frame wrapped in `levels` arrays: no longer an object.
    Wrap(usize),
    Become(Doc),
}

fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        3 => any::<Index>().prop_map(Mutation::Drop),
        3 => (any::<Index>(), key()).prop_map(|(i, k)| Mutation::Rename(i, k)),
        6 => (any::<Index>(), wild_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        3 => (key(), wild_value()).prop_map(|(k, v)| Mutation::Add(k, v)),
        2 => any::<Index>().prop_map(Mutation::Duplicate),
        3 => prop_oneof![
            3 => prop::sample::select(TYPE_NAMES).prop_map(Doc::str),
            1 => wild_value(),
        ]
        .prop_map(Mutation::Retype),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        1 => (1..4usize).prop_map(Mutation::Wrap),
        1 => wild_value().prop_map(Mutation::Become),
    ]
    .boxed()
}

impl Mutation {
    pub fn apply(&self, doc: Doc) -> Doc {
        let mut doc = doc;
        match (self, &mut doc) {
            (Self::Wrap(levels), _) => return Doc::nested(*levels, doc),
            (Self::Become(other), _) => return other.clone(),
            (_, Doc::Map(entries)) => match self {
                Self::Drop(i) if !entries.is_empty() => {
                    entries.remove(i.index(entries.len()));
                }
                Self::Rename(i, k) if !entries.is_empty() => {
                    let at = i.index(entries.len());
                    entries[at].0 = k.clone();
                }
                Self::Replace(i, v) if !entries.is_empty() => {
                    let at = i.index(entries.len());
                    entries[at].1 = v.clone();
                }
                Self::Add(k, v) => entries.push((k.clone(), v.clone())),
                Self::Duplicate(i) if !entries.is_empty() => {
                    let entry = entries[i.index(entries.len())].clone();
                    entries.push(entry);
                }
                Self::Retype(t) => match entries.iter_mut().find(|(k, _)| *k == Doc::str("type")) {
                    Some((_, v)) => *v = t.clone(),
                    None => entries.insert(0, (Doc::str("type"), t.clone())),
                },
                Self::Swap(a, b) if !entries.is_empty() => {
                    let n = entries.len();
                    entries.swap(a.index(n), b.index(n));
                }
                _ => {}
            },
            _ => {}
        }
        doc
    }
}

/// A document to decode: a valid frame (a quarter of the time), or one with up to four
/// mutations, or any document at all.
pub fn structured() -> BoxedStrategy<Doc> {
    prop_oneof![
        2 => valid_frame().prop_map(|f| frame_doc(&f)),
        6 => (valid_frame(), prop::collection::vec(mutation(), 1..5)).prop_map(|(f, ms)| {
            ms.iter().fold(frame_doc(&f), |doc, m| m.apply(doc))
        }),
        1 => any_doc(),
    ]
    .boxed()
}

pub fn codec() -> impl Strategy<Value = Codec> {
    prop::sample::select(vec![Codec::Json, Codec::MsgPack])
}

// ---------------------------------------------------------------------------------------------
// Raw bytes.

#[derive(Debug, Clone)]
pub enum ByteMutation {
    Truncate(Index),
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Append(Vec<u8>),
}

/// Bytes that mean something to a parser: JSON punctuation, MessagePack markers.
const SPECIAL_BYTES: &[u8] = &[
    0x00, b'{', b'}', b'[', b']', b'"', b'\\', b':', b',', b'-', b'0', b'9', b'e', b'.', 0x7f,
    0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc7, 0xca, 0xcb, 0xcf, 0xd3,
    0xd4, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff,
];

fn byte() -> BoxedStrategy<u8> {
    prop_oneof![prop::sample::select(SPECIAL_BYTES), any::<u8>()].boxed()
}

fn byte_mutation() -> BoxedStrategy<ByteMutation> {
    prop_oneof![
        any::<Index>().prop_map(ByteMutation::Truncate),
        (any::<Index>(), 1..=255u8).prop_map(|(i, x)| ByteMutation::Flip(i, x)),
        (any::<Index>(), byte()).prop_map(|(i, b)| ByteMutation::Set(i, b)),
        (any::<Index>(), prop::collection::vec(byte(), 1..8))
            .prop_map(|(i, b)| ByteMutation::Insert(i, b)),
        (any::<Index>(), 1..8usize).prop_map(|(i, n)| ByteMutation::Remove(i, n)),
        prop::collection::vec(byte(), 1..8).prop_map(ByteMutation::Append),
    ]
    .boxed()
}

impl ByteMutation {
    pub fn apply(&self, mut bytes: Vec<u8>) -> Vec<u8> {
        let n = bytes.len();
        match self {
            Self::Append(more) => bytes.extend_from_slice(more),
            _ if n == 0 => {}
            Self::Truncate(i) => bytes.truncate(i.index(n)),
            Self::Flip(i, x) => bytes[i.index(n)] ^= x,
            Self::Set(i, b) => bytes[i.index(n)] = *b,
            Self::Insert(i, more) => {
                let at = i.index(n + 1);
                bytes.splice(at..at, more.iter().copied());
            }
            Self::Remove(i, len) => {
                let at = i.index(n);
                bytes.drain(at..(at + len).min(n));
            }
        }
        bytes
    }
}

/// Bytes that mostly look like a frame of `codec`, damaged; or noise.
pub fn raw_bytes(codec: Codec) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        6 => (structured(), prop::collection::vec(byte_mutation(), 1..4)).prop_map(
            move |(doc, ms)| ms.iter().fold(doc.encode(codec), |b, m| m.apply(b))
        ),
        1 => prop::collection::vec(byte(), 0..64),
        1 => prop::collection::vec(byte(), 0..64).prop_map(move |tail| {
            let mut bytes = if codec == Codec::Json { b"{".to_vec() } else { vec![0x82] };
            bytes.extend(tail);
            bytes
        }),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// The oracle.

/// How a decoder must answer a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Accepted,
    Refused(ErrorCode, Option<u64>),
}

#[derive(Debug, Clone, Copy)]
enum Ty {
    U64,
    U32,
    Bool,
    Str,
    Room,
    User,
    Ids,
    Enum(&'static [&'static str]),
    /// Any value JSON has: no MessagePack binary anywhere inside, and string keys.
    Any,
}

#[derive(Debug, Clone, Copy)]
enum Need {
    Required,
    /// May be absent or `null`.
    Optional,
    /// May be absent, but not `null` (an enum with a default).
    Defaulted,
}

const ROOM_KINDS: &[&str] = &["public", "private", "password", "direct", "feed"];
const MESSAGE_KINDS: &[&str] = &["text", "image", "file"];
const STATUSES: &[&str] = &["online", "away", "busy", "offline"];

/// Each client frame's fields, written down from docs/protocol.md independently of the serde
/// attributes in frames.rs.
fn schema(kind: &str) -> Option<Vec<(&'static str, Ty, Need)>> {
    use Need::*;
    use Ty::*;
    let id = ("id", U64, Required);
    let opt_id = ("id", U64, Optional);
    let room = ("roomId", Room, Required);
    let user = ("userId", User, Required);
    Some(match kind {
        "auth" => vec![("token", Str, Required)],
        "auth:refresh" => vec![id, ("token", Str, Required)],
        "ping" => vec![opt_id],
        "room:create" => vec![
            id,
            room,
            ("name", Str, Optional),
            ("kind", Enum(ROOM_KINDS), Defaulted),
            ("password", Str, Optional),
        ],
        "room:join" => vec![
            id,
            room,
            ("password", Str, Optional),
            ("sinceSeq", U64, Optional),
        ],
        "room:leave" => vec![id, room],
        "room:mute" => vec![id, room, ("muted", Bool, Required)],
        "message:send" => vec![
            id,
            room,
            ("content", Str, Required),
            ("kind", Enum(MESSAGE_KINDS), Defaulted),
            ("clientMsgId", Str, Required),
        ],
        "dm:send" => vec![
            id,
            ("recipientId", User, Required),
            ("content", Str, Required),
            ("kind", Enum(MESSAGE_KINDS), Defaulted),
            ("clientMsgId", Str, Required),
        ],
        "typing:start" | "typing:stop" => vec![room],
        "room:emit" => vec![id, room, ("event", Str, Required), ("data", Any, Optional)],
        "presence:update" => vec![opt_id, ("status", Enum(STATUSES), Required)],
        "message:read" => vec![opt_id, room, ("seq", U64, Required)],
        "history:fetch" => vec![
            id,
            room,
            ("beforeSeq", U64, Optional),
            ("afterSeq", U64, Optional),
            ("limit", U32, Optional),
        ],
        "notifications:list" => vec![id, ("limit", U32, Optional), ("before", U64, Optional)],
        "notifications:read" => vec![id, ("ids", Ids, Required)],
        "friend:request" | "friend:accept" | "friend:remove" => vec![id, user],
        "friends:list" => vec![id],
        "rpc" => vec![id, ("method", Str, Required), ("data", Any, Optional)],
        _ => return None,
    })
}

/// A string, as serde reads one: MessagePack binary holding UTF-8 passes too.
fn string_like(doc: &Doc) -> Option<&str> {
    match doc {
        Doc::Str(s) => Some(s),
        Doc::Bin(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// Whether a JSON value can hold `doc`.
fn json_like(doc: &Doc) -> bool {
    match doc {
        Doc::Bin(_) => false,
        Doc::Array(items) => items.iter().all(json_like),
        Doc::Map(entries) => entries
            .iter()
            .all(|(k, v)| string_like(k).is_some() && json_like(v)),
        _ => true,
    }
}

/// Whether `value` fits `ty`; the code that refuses it otherwise.
fn check(ty: Ty, value: &Doc) -> Result<(), ErrorCode> {
    let ok = match (ty, value) {
        (Ty::U64, Doc::UInt(_)) => true,
        (Ty::U32, Doc::UInt(n)) => u32::try_from(*n).is_ok(),
        (Ty::Bool, Doc::Bool(_)) => true,
        (Ty::Ids, Doc::Array(items)) => items.iter().all(|d| matches!(d, Doc::UInt(_))),
        (Ty::Enum(names), Doc::Str(s)) => names.contains(&s.as_str()),
        // The externally tagged spelling of a unit variant, which serde accepts too.
        (Ty::Enum(names), Doc::Map(entries)) => matches!(
            entries.as_slice(),
            [(Doc::Str(s), Doc::Null)] if names.contains(&s.as_str())
        ),
        (Ty::Str, v) => string_like(v).is_some(),
        (Ty::Any, v) => json_like(v),
        (Ty::Room | Ty::User, v) => match string_like(v) {
            None => false,
            Some(s) => {
                let valid = match ty {
                    Ty::Room => RoomId::parse(s).is_ok(),
                    _ => UserId::parse(s).is_ok(),
                };
                return if valid {
                    Ok(())
                } else {
                    Err(ErrorCode::InvalidIdentifier)
                };
            }
        },
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::InvalidField)
    }
}

/// How a decoder must answer `doc` sent with `codec`, from the rules in docs/protocol.md:
/// - not an object, nested deeper than the limit, or (MessagePack) a key that is not a
///   string: `MALFORMED_FRAME`, and no id is read;
/// - the id is read when the object has exactly one `id` and it is a non-negative integer;
/// - no `type`, two of them, or one that is not a string (MessagePack binary is not):
///   `MALFORMED_FRAME`;
/// - a `type` that names no client frame: `UNKNOWN_TYPE`;
/// - then the frame's fields in the order sent: the first that is repeated or has a wrong value
///   refuses the frame (`INVALID_IDENTIFIER` for an identifier that breaks the rules,
///   `INVALID_FIELD` otherwise), then a missing required field (`INVALID_FIELD`). Unknown
///   fields are ignored.
pub fn expected(doc: &Doc, codec: Codec) -> Expected {
    use ErrorCode::*;
    use Expected::*;
    let doc = doc.as_carried_by(codec);
    let Doc::Map(entries) = &doc else {
        return Refused(MalformedFrame, None);
    };
    if doc.depth() > MAX_NESTING {
        return Refused(MalformedFrame, None);
    }
    let mut fields = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let Doc::Str(k) = k else {
            return Refused(MalformedFrame, None);
        };
        fields.push((k.as_str(), v));
    }
    let named = |name| {
        fields
            .iter()
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| *v)
    };
    let id = match named("id").collect::<Vec<_>>().as_slice() {
        [Doc::UInt(n)] => Some(*n),
        _ => None,
    };
    let kind = match named("type").collect::<Vec<_>>().as_slice() {
        [Doc::Str(kind)] => kind.clone(),
        _ => return Refused(MalformedFrame, id),
    };
    let Some(schema) = schema(&kind) else {
        return Refused(UnknownType, id);
    };
    let mut seen = HashSet::new();
    for (name, value) in &fields {
        let Some((_, ty, need)) = schema.iter().find(|(n, ..)| n == name) else {
            continue;
        };
        if !seen.insert(*name) {
            return Refused(InvalidField, id);
        }
        if matches!(need, Need::Optional) && **value == Doc::Null {
            continue;
        }
        if let Err(code) = check(*ty, value) {
            return Refused(code, id);
        }
    }
    let missing = schema
        .iter()
        .any(|(name, _, need)| matches!(need, Need::Required) && !seen.contains(name));
    if missing {
        Refused(InvalidField, id)
    } else {
        Accepted
    }
}

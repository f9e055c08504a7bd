//! MessagePack decoding held to the JSON rules.
//!
//! `rmp_serde::from_slice` is more lenient than the protocol, in three ways that matter:
//! - it reads one value and ignores any bytes after it, where `serde_json` refuses them;
//! - it nests as deep as 1,024 levels, and serde buffers an internally tagged frame
//!   recursively, which overflows a 2 MiB thread stack in a debug build well before that;
//! - it passes integer map keys on as field positions, so `{"type": "room:create", 0: 8,
//!   1: "x"}` decodes as `{"type": "room:create", "id": 8, "roomId": "x"}`: the positional
//!   frame again, spelled as a map; and an integer `type` as the position of a frame type, so
//!   `{"type": 1}` was a `ping`.
//!
//! [`from_slice`] refuses all three, without allocating and without a second pass.

use std::fmt;

use rmp_serde::decode::Error;
use serde::de::{
    self, Deserialize as _, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor,
};
use serde::forward_to_deserialize_any;

/// Deepest nesting accepted, counting the frame itself as the first level: what `serde_json`'s
/// recursion limit (128) lets through, so both codecs accept exactly the same documents.
pub(crate) const MAX_NESTING: usize = 127;

/// Decodes one frame: a map whose keys are strings, nested at most [`MAX_NESTING`] levels, with
/// nothing after it. A top-level value that is not a map is refused.
pub(crate) fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    // rmp counts down from this and fails when it reaches zero.
    de.set_max_depth(MAX_NESTING + 1);
    let value = T::deserialize(StringKeys(&mut de))?;
    // The deserializer does not say what it left, so read one more value: only a clean end of
    // input before its first byte means nothing followed.
    match de::IgnoredAny::deserialize(&mut de) {
        Err(Error::InvalidMarkerRead(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Ok(value)
        }
        _ => Err(Error::Syntax(
            "bytes after the end of the MessagePack frame".to_owned(),
        )),
    }
}

/// Whether `bytes` nest deeper than [`MAX_NESTING`] before anything else is wrong with them.
pub(crate) fn nests_too_deep(bytes: &[u8]) -> bool {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_NESTING + 1);
    matches!(
        de::IgnoredAny::deserialize(&mut de),
        Err(Error::DepthLimitExceeded)
    )
}

/// Whether decoding failed on the nesting limit.
pub(crate) fn is_too_deep(error: &Error) -> bool {
    matches!(error, Error::DepthLimitExceeded)
}

/// A deserializer whose top-level map may only have string keys.
struct StringKeys<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for StringKeys<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(MapOnly(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, MapOnly(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Passes a map on with its keys checked; anything else is refused with the inner visitor's
/// expectation.
struct MapOnly<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for MapOnly<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(StringKeyMap(map))
    }
}

struct StringKeyMap<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for StringKeyMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(StringKeySeed(seed))
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(StringIdentifierSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct StringKeySeed<K>(K);

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for StringKeySeed<K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<K::Value, D::Error> {
        self.0.deserialize(StringKey(deserializer))
    }
}

struct StringIdentifierSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for StringIdentifierSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(StringIdentifier(deserializer))
    }
}

/// A value of the frame's map, as it is: only when it is asked for as an identifier (the
/// frame's `type`, read straight from the input as the name of a variant) must it be a string,
/// not the variant's position.
struct StringIdentifier<D>(D);

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method($($arg,)* visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for StringIdentifier<D> {
    type Error = D::Error;

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(StrOnly(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }

    forward! {
        deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16();
        deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
        deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
        deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
        deserialize_string(); deserialize_bytes(); deserialize_byte_buf(); deserialize_option();
        deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str); deserialize_seq();
        deserialize_tuple(len: usize); deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map(); deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_ignored_any();
    }
}

/// A map key: whatever is asked for, only a string is passed on.
struct StringKey<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for StringKey<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(StrOnly(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// Passes strings on; anything else is refused by the default `visit_*` methods.
struct StrOnly<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for StrOnly<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.0.visit_str(v)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        self.0.visit_borrowed_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        self.0.visit_string(v)
    }
}

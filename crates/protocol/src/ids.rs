//! Identifiers: bounded strings with a documented character set.
//!
//! Validation happens while decoding, so a handler never sees an identifier that could break a
//! log line, a Redis channel name or a SQL key.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest user id, in bytes (all allowed characters are ASCII).
pub const MAX_USER_ID_LEN: usize = 64;
/// Longest room id a client may create, in bytes.
pub const MAX_ROOM_ID_LEN: usize = 64;
/// Prefix reserved for direct-message rooms: `dm:<user>:<user>`, the two ids sorted.
pub const DM_PREFIX: &str = "dm:";

/// Every identifier error starts with this, so a decoder can tell a bad identifier from any
/// other invalid field without parsing prose.
pub const ID_ERROR_MARKER: &str = "invalid identifier";

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid identifier: {what} is empty")]
    Empty { what: &'static str },
    #[error("invalid identifier: {what} is longer than {max} bytes")]
    TooLong { what: &'static str, max: usize },
    #[error("invalid identifier: {what} contains {found:?}; allowed are A-Z a-z 0-9 _ . - @")]
    BadChar { what: &'static str, found: char },
    #[error("invalid identifier: room ids starting with \"dm:\" are reserved for direct messages")]
    ReservedPrefix,
    #[error("invalid identifier: a direct-message room id is dm:<user>:<user> with the ids sorted")]
    BadDirectRoom,
}

fn check_plain(what: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    if s.len() > max {
        return Err(IdError::TooLong { what, max });
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@')))
    {
        Some(found) => Err(IdError::BadChar { what, found }),
        None => Ok(()),
    }
}

/// A user id: the JWT `sub`. 1 to 64 characters from `A-Z a-z 0-9 _ . - @`.
///
/// Shared, not copied, when cloned: a connection's id is held by its session, the hub, presence
/// and the broker's interest, so every copy would be a per-connection allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(Arc<str>);

impl UserId {
    /// Validates `s` as a user id.
    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        check_plain("user id", &s, MAX_USER_ID_LEN)?;
        Ok(Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest role, in bytes.
pub const MAX_ROLE_LEN: usize = 32;

/// A member's role in a room: a label the app gives (its join hook, the server API), 1 to 32
/// characters from `A-Z a-z 0-9 _ . - @`. A room's creator is `owner`, anyone else `member`
/// unless the app says otherwise. The gateway itself grants nothing by role.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Role(String);

impl Role {
    /// Validates `s` as a role.
    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        check_plain("role", &s, MAX_ROLE_LEN)?;
        Ok(Self(s))
    }

    /// `member`: the role of whoever joins or is added without one.
    pub fn member() -> Self {
        Self("member".into())
    }

    /// `owner`: the role of a room's creator, unless the join hook gave another.
    pub fn owner() -> Self {
        Self("owner".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Role {
    fn default() -> Self {
        Self::member()
    }
}

impl From<Role> for String {
    fn from(role: Role) -> Self {
        role.0
    }
}

/// A room id. Either a client-chosen name (1 to 64 characters from `A-Z a-z 0-9 _ . - @`) or a
/// direct-message room `dm:<a>:<b>` whose two user ids are sorted, so a pair has exactly one room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId(String);

impl RoomId {
    /// Validates `s` as a room id (plain or direct).
    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if let Some(pair) = s.strip_prefix(DM_PREFIX) {
            let (a, b) = pair.split_once(':').ok_or(IdError::BadDirectRoom)?;
            let (a, b) = (UserId::parse(a)?, UserId::parse(b)?);
            if a >= b {
                return Err(IdError::BadDirectRoom);
            }
        } else {
            check_plain("room id", &s, MAX_ROOM_ID_LEN)?;
        }
        Ok(Self(s))
    }

    /// Validates `s` as a room id a client may create: never a direct-message id.
    pub fn parse_creatable(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if s.starts_with(DM_PREFIX) {
            return Err(IdError::ReservedPrefix);
        }
        Self::parse(s)
    }

    /// The one direct-message room of two distinct users.
    pub fn direct(a: &UserId, b: &UserId) -> Option<Self> {
        let (lo, hi) = match a.cmp(b) {
            std::cmp::Ordering::Less => (a, b),
            std::cmp::Ordering::Greater => (b, a),
            std::cmp::Ordering::Equal => return None,
        };
        Some(Self(format!("{DM_PREFIX}{}:{}", lo.0, hi.0)))
    }

    /// The two members of a direct-message room, or `None` for a plain room.
    pub fn direct_members(&self) -> Option<(UserId, UserId)> {
        let (a, b) = self.0.strip_prefix(DM_PREFIX)?.split_once(':')?;
        Some((UserId(a.into()), UserId(b.into())))
    }

    pub fn is_direct(&self) -> bool {
        self.0.starts_with(DM_PREFIX)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by room id can be looked up with the `str` of a frame being read. Consistent
/// with `Eq`, `Ord` and `Hash`, which are the inner string's.
impl std::borrow::Borrow<str> for RoomId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

macro_rules! string_id {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}
string_id!(UserId);
string_id!(RoomId);
string_id!(Role);

impl From<UserId> for String {
    fn from(id: UserId) -> String {
        id.0.as_ref().to_owned()
    }
}

impl From<RoomId> for String {
    fn from(id: RoomId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_accept_the_documented_charset_only() {
        assert!(UserId::parse("alice.smith-2_x@example.com").is_ok());
        assert_eq!(UserId::parse(""), Err(IdError::Empty { what: "user id" }));
        assert!(matches!(
            UserId::parse("a b"),
            Err(IdError::BadChar { found: ' ', .. })
        ));
        assert!(matches!(
            UserId::parse("a:b"),
            Err(IdError::BadChar { found: ':', .. })
        ));
        assert!(matches!(UserId::parse("é"), Err(IdError::BadChar { .. })));
        assert!(UserId::parse("x".repeat(64)).is_ok());
        assert!(matches!(
            UserId::parse("x".repeat(65)),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn direct_room_ids_are_sorted_pairs() {
        let (a, b) = (
            UserId::parse("bob").unwrap(),
            UserId::parse("alice").unwrap(),
        );
        let room = RoomId::direct(&a, &b).unwrap();
        assert_eq!(room.as_str(), "dm:alice:bob");
        assert_eq!(room.direct_members(), Some((b, a.clone())));
        assert_eq!(RoomId::direct(&a, &a), None);
        assert_eq!(RoomId::parse("dm:bob:alice"), Err(IdError::BadDirectRoom));
        assert_eq!(RoomId::parse("dm:alice"), Err(IdError::BadDirectRoom));
        assert_eq!(
            RoomId::parse_creatable("dm:alice:bob"),
            Err(IdError::ReservedPrefix)
        );
        assert!(RoomId::parse("dm:alice:bob").is_ok());
    }

    #[test]
    fn identifier_errors_carry_the_marker() {
        for e in [
            UserId::parse("").unwrap_err(),
            RoomId::parse("a/b").unwrap_err(),
            RoomId::parse("dm:x").unwrap_err(),
            RoomId::parse_creatable("dm:a:b").unwrap_err(),
        ] {
            assert!(e.to_string().starts_with(ID_ERROR_MARKER), "{e}");
        }
    }

    #[test]
    fn decoding_validates() {
        let err = serde_json::from_str::<RoomId>("\"no spaces\"").unwrap_err();
        assert!(err.to_string().contains(ID_ERROR_MARKER));
    }
}

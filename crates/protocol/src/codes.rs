//! The two code tables.
//!
//! An [`ErrorCode`] answers one request (in an `ack` or an `error` frame) and the connection stays
//! open. A [`CloseCode`] ends the connection and tells the client whether to reconnect and whether
//! to resume from the last `seq` it holds. Both tables are documented in `docs/protocol.md`; a test
//! fails when a code is missing there.

use serde::{Deserialize, Serialize};
use strum::{EnumIter, IntoEnumIterator};

/// Why a request was refused. The connection stays open.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, EnumIter, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Not valid JSON / MessagePack, not an object with a string `type`, or the wrong WebSocket
    /// opcode for the negotiated codec.
    MalformedFrame,
    /// `type` names no client frame.
    UnknownType,
    /// A field is missing, has the wrong type or an out-of-range value.
    InvalidField,
    /// A room or user id breaks the identifier rules.
    InvalidIdentifier,
    /// An `auth` frame on a connection that is already authenticated.
    AlreadyAuthenticated,
    /// The room does not exist.
    RoomNotFound,
    /// `room:create` with an id that is taken.
    RoomExists,
    /// The room is private and the user is not a member.
    Forbidden,
    /// The room is password-protected and the password is missing or wrong.
    WrongPassword,
    /// The user must join the room first.
    NotAMember,
    /// Message content is empty after trimming whitespace.
    ContentEmpty,
    /// Message content is longer than the configured maximum.
    ContentTooLong,
    /// A direct message or a friend request to oneself.
    InvalidRecipient,
    /// `friend:accept` with no pending request from that user.
    FriendRequestNotFound,
    /// The connection sends faster than its rate limit; retry later.
    RateLimited,
    /// The durable store is unreachable or refused the write; nothing was stored. Retry with the
    /// same `clientMsgId`.
    StoreUnavailable,
    /// The store did not confirm a message in time: it may or may not be stored. Retry with the
    /// same `clientMsgId`; the reply settles it.
    OutcomeUnknown,
    /// The server failed; nothing the client can fix. Details are in the server log only.
    Internal,
    /// Server API only: no API key, or not one of the configured keys.
    Unauthorized,
    /// Server API only: no such route, or the user or notification named does not exist.
    NotFound,
    /// The app's backend refused the request (a join or rpc hook); the message is its reason.
    Denied,
    /// The app's backend did not answer a hook in time, failed, or is being given a rest after
    /// failing (circuit breaker). Nothing was done; retry later.
    HookUnavailable,
    /// This server does not offer the request: `rpc` without an rpc hook.
    NotSupported,
    /// `auth:refresh` with a token that does not verify (bad, expired, not yet valid) or names
    /// another user. The connection keeps its token and expiry.
    InvalidToken,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedFrame => "MALFORMED_FRAME",
            Self::UnknownType => "UNKNOWN_TYPE",
            Self::InvalidField => "INVALID_FIELD",
            Self::InvalidIdentifier => "INVALID_IDENTIFIER",
            Self::AlreadyAuthenticated => "ALREADY_AUTHENTICATED",
            Self::RoomNotFound => "ROOM_NOT_FOUND",
            Self::RoomExists => "ROOM_EXISTS",
            Self::Forbidden => "FORBIDDEN",
            Self::WrongPassword => "WRONG_PASSWORD",
            Self::NotAMember => "NOT_A_MEMBER",
            Self::ContentEmpty => "CONTENT_EMPTY",
            Self::ContentTooLong => "CONTENT_TOO_LONG",
            Self::InvalidRecipient => "INVALID_RECIPIENT",
            Self::FriendRequestNotFound => "FRIEND_REQUEST_NOT_FOUND",
            Self::RateLimited => "RATE_LIMITED",
            Self::StoreUnavailable => "STORE_UNAVAILABLE",
            Self::OutcomeUnknown => "OUTCOME_UNKNOWN",
            Self::Internal => "INTERNAL",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::NotFound => "NOT_FOUND",
            Self::Denied => "DENIED",
            Self::HookUnavailable => "HOOK_UNAVAILABLE",
            Self::NotSupported => "NOT_SUPPORTED",
            Self::InvalidToken => "INVALID_TOKEN",
        }
    }

    /// Whether the same request may succeed if sent again unchanged, later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::StoreUnavailable
                | Self::OutcomeUnknown
                | Self::Internal
                | Self::HookUnavailable
        )
    }

    pub fn all() -> impl Iterator<Item = Self> {
        Self::iter()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the server closed the connection, sent as the WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter)]
pub enum CloseCode {
    /// 1000: the session ended normally (the client closed it).
    Normal,
    /// 1001: the node is shutting down or draining. Reconnect (another node answers) and resume.
    GoingAway,
    /// 1002: the peer broke the WebSocket protocol.
    ProtocolError,
    /// 1007: a text frame was not valid UTF-8.
    InvalidPayload,
    /// 1009: a frame was larger than the configured maximum.
    MessageTooBig,
    /// 1011: the server failed. Reconnect with backoff and resume.
    InternalError,
    /// 1013: the app's backend did not answer the connect hook. Reconnect with backoff and resume.
    TryAgainLater,
    /// 4001: authentication failed: no valid token, or the first frame was not `auth`.
    AuthFailed,
    /// 4002: no `auth` frame arrived within the authentication timeout.
    AuthTimeout,
    /// 4003: the token expired during the session. Reconnect with a fresh token and resume.
    TokenExpired,
    /// 4004: nothing arrived from the client for longer than the heartbeat timeout.
    HeartbeatTimeout,
    /// 4005: the client read too slowly and its outbound queue overflowed.
    SlowConsumer,
    /// 4006: the client kept sending after being rate limited.
    RateLimitExceeded,
    /// 4007: the user opened more connections than allowed; this, the oldest, was closed.
    SessionReplaced,
    /// 4008: the app's backend disconnected the user through the server API.
    Disconnected,
    /// 4009: the user is banned (server API); connections are refused until the ban ends.
    Banned,
    /// 4010: the app's backend refused the connection (the connect hook).
    ConnectDenied,
}

impl CloseCode {
    /// The numeric WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
            Self::MessageTooBig => 1009,
            Self::InternalError => 1011,
            Self::TryAgainLater => 1013,
            Self::AuthFailed => 4001,
            Self::AuthTimeout => 4002,
            Self::TokenExpired => 4003,
            Self::HeartbeatTimeout => 4004,
            Self::SlowConsumer => 4005,
            Self::RateLimitExceeded => 4006,
            Self::SessionReplaced => 4007,
            Self::Disconnected => 4008,
            Self::Banned => 4009,
            Self::ConnectDenied => 4010,
        }
    }

    /// The short reason sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::GoingAway => "server shutting down",
            Self::ProtocolError => "protocol error",
            Self::InvalidPayload => "invalid utf-8",
            Self::MessageTooBig => "frame too big",
            Self::InternalError => "internal error",
            Self::TryAgainLater => "try again later",
            Self::AuthFailed => "authentication failed",
            Self::AuthTimeout => "authentication timeout",
            Self::TokenExpired => "token expired",
            Self::HeartbeatTimeout => "heartbeat timeout",
            Self::SlowConsumer => "slow consumer: reconnect and resume",
            Self::RateLimitExceeded => "rate limit exceeded",
            Self::SessionReplaced => "too many connections for this user",
            Self::Disconnected => "disconnected by the server",
            Self::Banned => "banned",
            Self::ConnectDenied => "refused by the app",
        }
    }

    /// Whether a client should reconnect on its own (with backoff).
    pub fn reconnect(self) -> bool {
        !matches!(
            self,
            Self::Normal
                | Self::AuthFailed
                | Self::SessionReplaced
                | Self::Disconnected
                | Self::Banned
                | Self::ConnectDenied
        )
    }

    /// Whether a reconnecting client should resume each room from the last `seq` it holds.
    /// True for every code that may interrupt a live session.
    pub fn resume(self) -> bool {
        self.reconnect() && !matches!(self, Self::AuthTimeout)
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Self::iter().find(|c| c.code() == code)
    }

    pub fn all() -> impl Iterator<Item = Self> {
        Self::iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_as_their_wire_name() {
        for code in ErrorCode::all() {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }

    #[test]
    fn close_codes_are_unique_and_in_valid_ranges() {
        let mut seen = std::collections::HashSet::new();
        for c in CloseCode::all() {
            assert!(seen.insert(c.code()), "duplicate {}", c.code());
            assert!((1000..=1013).contains(&c.code()) || (4000..=4999).contains(&c.code()));
            // A close frame's reason must fit in 123 bytes.
            assert!(c.reason().len() <= 123);
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert!(CloseCode::SlowConsumer.resume());
        assert!(!CloseCode::AuthFailed.reconnect());
    }
}

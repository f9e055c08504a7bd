//! The Switchboard wire protocol.
//!
//! Every frame a client and a gateway exchange is a variant of one of two closed enums,
//! [`ClientFrame`] and [`ServerFrame`]. Both are flat objects whose `type` field names the event
//! (`noun:verb`), spoken either as JSON text frames or as MessagePack binary frames of the same
//! shape (see [`Codec`]). The two code tables live here too: [`ErrorCode`] answers a request and
//! keeps the connection open, [`CloseCode`] ends it and says whether to reconnect and resume.
//!
//! This crate does no I/O and knows nothing of tokio, so clients, the gateway, the load generator
//! and tests all share it.

mod codec;
mod codes;
mod frames;
mod ids;
mod msgpack;
mod schema;

pub use codec::{Codec, DecodeError, EncodeError, UnsupportedSubprotocol};
pub use codes::{CloseCode, ErrorCode};
pub use frames::{
    AckResult, ClientFrame, ClientFrameKind, EVENT_NAME_PATTERN, ErrorBody, Friend, FriendStatus,
    Member, Message, MessageKind, Millis, Notification, PresenceStatus, RoomInfo, RoomKind,
    RoomSummary, ServerFrame, ServerFrameKind, UserRef, is_event_name,
};
pub use ids::{IdError, Role, RoomId, UserId};
pub use schema::json_schema;

/// Protocol version, part of both subprotocol names. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Messages returned with a `room:join` when the client does not resume from a `sinceSeq`.
pub const JOIN_HISTORY: usize = 50;

/// Largest page a `history:fetch` may ask for.
pub const MAX_HISTORY_PAGE: u32 = 100;

/// Largest page a `notifications:list` may ask for (the default is 50).
pub const MAX_NOTIFICATION_PAGE: u32 = 100;

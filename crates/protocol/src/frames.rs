//! Every frame, as two closed enums.
//!
//! Frames are flat objects: `type` names the event in `noun:verb` form and the other fields are
//! camelCase. A request carries an `id`; its reply is an `ack` with the same `id` holding either a
//! `result` or an `error`. Events pushed by the server carry no `id`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use strum::EnumDiscriminants;

use crate::{ErrorCode, Role, RoomId, UserId};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// What a `room:emit` event name looks like: a lowercase letter, then up to 63 of lowercase
/// letters, digits, `:`, `_` and `-`.
pub const EVENT_NAME_PATTERN: &str = "[a-z][a-z0-9:_-]{0,63}";

/// Whether `name` matches [`EVENT_NAME_PATTERN`].
pub fn is_event_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ":_-".contains(c))
}

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, EnumDiscriminants)]
#[strum_discriminants(name(ClientFrameKind), derive(strum::EnumIter, Hash))]
#[serde(tag = "type")]
pub enum ClientFrame {
    /// Authenticates a connection that did not send `Authorization: Bearer`. Must be the first
    /// frame. Answered by `session:ready`, or by close 4001.
    #[serde(rename = "auth")]
    Auth { token: String },

    /// Replaces the token of this live connection before it expires (`auth:expiring` says
    /// when): a token of the same user, whose expiry then applies. Answered by an `auth` result.
    #[serde(rename = "auth:refresh")]
    AuthRefresh { id: u64, token: String },

    /// Application-level keepalive for clients that cannot see WebSocket pings. Answered by `pong`.
    #[serde(rename = "ping")]
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },

    /// Creates a room; the creator becomes its first member.
    #[serde(rename = "room:create", rename_all = "camelCase")]
    RoomCreate {
        id: u64,
        room_id: RoomId,
        /// Display name; the room id when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default)]
        kind: RoomKind,
        /// Required when `kind` is `password`, refused otherwise. Only a hash is stored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
    },

    /// Joins a room (becoming a member) or, when already a member, re-subscribes after a
    /// reconnect. With `sinceSeq` the reply replays every message after it.
    #[serde(rename = "room:join", rename_all = "camelCase")]
    RoomJoin {
        id: u64,
        room_id: RoomId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_seq: Option<u64>,
    },

    /// Leaves a room: the user stops being a member on every device.
    #[serde(rename = "room:leave", rename_all = "camelCase")]
    RoomLeave { id: u64, room_id: RoomId },

    /// Mutes or unmutes a room for the user: a muted room's messages are never pushed to them
    /// (the `push` webhook). A member setting, on every device.
    #[serde(rename = "room:mute", rename_all = "camelCase")]
    RoomMute {
        id: u64,
        room_id: RoomId,
        muted: bool,
    },

    /// Sends a message to a room the user is a member of.
    #[serde(rename = "message:send", rename_all = "camelCase")]
    MessageSend {
        id: u64,
        room_id: RoomId,
        content: String,
        /// Named `kind` because `type` names the frame.
        #[serde(default)]
        kind: MessageKind,
        /// Chosen by the client, unique per sender and room: a retry with the same value returns
        /// the original ack and is never delivered twice.
        client_msg_id: String,
    },

    /// Sends a direct message; stored in the pair's `dm:<a>:<b>` room.
    #[serde(rename = "dm:send", rename_all = "camelCase")]
    DmSend {
        id: u64,
        recipient_id: UserId,
        content: String,
        #[serde(default)]
        kind: MessageKind,
        client_msg_id: String,
    },

    /// The user is typing in a room. Repeat at most every couple of seconds while typing: the
    /// server sends `typing:stop` by itself 3 s after the last start.
    #[serde(rename = "typing:start", rename_all = "camelCase")]
    TypingStart { room_id: RoomId },

    #[serde(rename = "typing:stop", rename_all = "camelCase")]
    TypingStop { room_id: RoomId },

    /// Relays an application-defined event (a cursor, a game move, an edit) to the room's other
    /// connections as `room:event`: members only, at most once, never stored.
    #[serde(rename = "room:emit", rename_all = "camelCase")]
    RoomEmit {
        id: u64,
        room_id: RoomId,
        /// Matches [`EVENT_NAME_PATTERN`].
        event: String,
        /// Any value; `null` when absent.
        #[serde(default)]
        data: serde_json::Value,
    },

    /// Sets the user's status, relayed to everyone who shares a room with them.
    #[serde(rename = "presence:update", rename_all = "camelCase")]
    PresenceUpdate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        status: PresenceStatus,
    },

    /// Marks every message up to `seq` as read. Watermarks only move forward.
    #[serde(rename = "message:read", rename_all = "camelCase")]
    MessageRead {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        room_id: RoomId,
        seq: u64,
    },

    /// Pages through a room's history: `beforeSeq` pages backwards, `afterSeq` forwards, neither
    /// gives the latest page. `limit` is at most 100.
    #[serde(rename = "history:fetch", rename_all = "camelCase")]
    HistoryFetch {
        id: u64,
        room_id: RoomId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before_seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },

    /// Pages through the user's notifications, newest first; `before` is a notification id.
    #[serde(rename = "notifications:list", rename_all = "camelCase")]
    NotificationsList {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
    },

    /// Marks notifications as read.
    #[serde(rename = "notifications:read", rename_all = "camelCase")]
    NotificationsRead { id: u64, ids: Vec<u64> },

    /// Asks another user to be friends; accepts at once if they had asked first.
    #[serde(rename = "friend:request", rename_all = "camelCase")]
    FriendRequest { id: u64, user_id: UserId },

    /// Accepts a pending request from `userId`.
    #[serde(rename = "friend:accept", rename_all = "camelCase")]
    FriendAccept { id: u64, user_id: UserId },

    /// Ends a friendship, or withdraws or declines a request.
    #[serde(rename = "friend:remove", rename_all = "camelCase")]
    FriendRemove { id: u64, user_id: UserId },

    /// Lists friends and pending requests.
    #[serde(rename = "friends:list")]
    FriendsList { id: u64 },

    /// Calls the app's backend (the rpc hook, `docs/hooks.md`): a game move to validate, a
    /// lookup. The backend's answer comes back in the `ack` as an `rpc` result, or its refusal as
    /// `DENIED`.
    #[serde(rename = "rpc")]
    Rpc {
        id: u64,
        /// Matches [`EVENT_NAME_PATTERN`]; the backend switches on it.
        method: String,
        /// Any value; `null` when absent.
        #[serde(default)]
        data: serde_json::Value,
    },
}

#[cfg(test)]
mod event_name_tests {
    #[test]
    fn event_names_follow_the_pattern() {
        for good in ["a", "cursor:move", "game_move-2", &"x".repeat(64)] {
            assert!(super::is_event_name(good), "{good}");
        }
        for bad in [
            "",
            "Cursor",
            "2go",
            ":x",
            "a b",
            "é",
            "a.b",
            &"x".repeat(65),
        ] {
            assert!(!super::is_event_name(bad), "{bad}");
        }
    }
}

impl ClientFrame {
    /// The request id to echo in the reply, if the frame carries one.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            Self::AuthRefresh { id, .. }
            | Self::RoomCreate { id, .. }
            | Self::RoomJoin { id, .. }
            | Self::RoomLeave { id, .. }
            | Self::RoomMute { id, .. }
            | Self::MessageSend { id, .. }
            | Self::DmSend { id, .. }
            | Self::HistoryFetch { id, .. }
            | Self::NotificationsList { id, .. }
            | Self::NotificationsRead { id, .. }
            | Self::FriendRequest { id, .. }
            | Self::FriendAccept { id, .. }
            | Self::FriendRemove { id, .. }
            | Self::FriendsList { id }
            | Self::RoomEmit { id, .. }
            | Self::Rpc { id, .. } => Some(*id),
            Self::Ping { id } | Self::PresenceUpdate { id, .. } | Self::MessageRead { id, .. } => {
                *id
            }
            Self::Auth { .. } | Self::TypingStart { .. } | Self::TypingStop { .. } => None,
        }
    }

    pub fn kind(&self) -> ClientFrameKind {
        self.into()
    }

    /// Sets the request id of a frame that carries one (a client numbers its requests as it
    /// sends them); frames without one (`auth`, typing) are unchanged.
    pub fn set_request_id(&mut self, request_id: u64) {
        match self {
            Self::AuthRefresh { id, .. }
            | Self::RoomCreate { id, .. }
            | Self::RoomJoin { id, .. }
            | Self::RoomLeave { id, .. }
            | Self::RoomMute { id, .. }
            | Self::MessageSend { id, .. }
            | Self::DmSend { id, .. }
            | Self::HistoryFetch { id, .. }
            | Self::NotificationsList { id, .. }
            | Self::NotificationsRead { id, .. }
            | Self::FriendRequest { id, .. }
            | Self::FriendAccept { id, .. }
            | Self::FriendRemove { id, .. }
            | Self::FriendsList { id }
            | Self::RoomEmit { id, .. }
            | Self::Rpc { id, .. } => *id = request_id,
            Self::Ping { id } | Self::PresenceUpdate { id, .. } | Self::MessageRead { id, .. } => {
                *id = Some(request_id);
            }
            Self::Auth { .. } | Self::TypingStart { .. } | Self::TypingStop { .. } => {}
        }
    }
}

impl ClientFrameKind {
    /// The value of the `type` field.
    pub fn wire_name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::AuthRefresh => "auth:refresh",
            Self::Ping => "ping",
            Self::RoomCreate => "room:create",
            Self::RoomJoin => "room:join",
            Self::RoomLeave => "room:leave",
            Self::RoomMute => "room:mute",
            Self::MessageSend => "message:send",
            Self::DmSend => "dm:send",
            Self::TypingStart => "typing:start",
            Self::TypingStop => "typing:stop",
            Self::RoomEmit => "room:emit",
            Self::PresenceUpdate => "presence:update",
            Self::MessageRead => "message:read",
            Self::HistoryFetch => "history:fetch",
            Self::NotificationsList => "notifications:list",
            Self::NotificationsRead => "notifications:read",
            Self::FriendRequest => "friend:request",
            Self::FriendAccept => "friend:accept",
            Self::FriendRemove => "friend:remove",
            Self::FriendsList => "friends:list",
            Self::Rpc => "rpc",
        }
    }

    pub fn from_wire_name(name: &str) -> Option<Self> {
        <Self as strum::IntoEnumIterator>::iter().find(|k| k.wire_name() == name)
    }
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, EnumDiscriminants)]
#[strum_discriminants(name(ServerFrameKind), derive(strum::EnumIter, Hash))]
#[serde(tag = "type")]
pub enum ServerFrame {
    /// The reply to a request: exactly one of `result` and `error` is present.
    #[serde(rename = "ack")]
    Ack {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<AckResult>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
    },

    /// A refused frame that carried no usable `id`. The connection stays open.
    #[serde(rename = "error")]
    Error { code: ErrorCode, message: String },

    /// First frame of every authenticated session.
    #[serde(rename = "session:ready", rename_all = "camelCase")]
    SessionReady {
        user: UserRef,
        /// Unique across the cluster; useful in logs and support requests.
        conn_id: String,
        /// The server pings this often; it closes a connection silent for three intervals.
        heartbeat_ms: u64,
        /// Largest frame the server accepts; larger ones close the connection with 1009.
        max_frame_bytes: u64,
        /// Every room the user is a member of.
        rooms: Vec<RoomSummary>,
        /// Notifications not read yet, including those created while offline.
        unread_notifications: u64,
        /// Identifies the store's history. When it differs from the one a client saw before,
        /// its `seq`s are from another history (an embedded store restarted): start over
        /// instead of resuming.
        epoch: String,
    },

    #[serde(rename = "pong")]
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },

    /// A new message in one of the user's rooms, in `seq` order per room.
    #[serde(rename = "message:new")]
    MessageNew { message: Message },

    #[serde(rename = "user:joined:room", rename_all = "camelCase")]
    UserJoinedRoom { room_id: RoomId, user: UserRef },

    #[serde(rename = "user:left:room", rename_all = "camelCase")]
    UserLeftRoom { room_id: RoomId, user_id: UserId },

    #[serde(rename = "typing:start", rename_all = "camelCase")]
    TypingStart { room_id: RoomId, user: UserRef },

    #[serde(rename = "typing:stop", rename_all = "camelCase")]
    TypingStop { room_id: RoomId, user_id: UserId },

    /// An application-defined event a member emitted (`room:emit`).
    #[serde(rename = "room:event", rename_all = "camelCase")]
    RoomEvent {
        room_id: RoomId,
        event: String,
        data: serde_json::Value,
        from: UserRef,
    },

    /// An application-defined event for this user from the app's backend (server API).
    #[serde(rename = "user:event")]
    UserEvent {
        event: String,
        data: serde_json::Value,
        from: UserRef,
    },

    /// The connection's token expires at `expiresAt` (Unix ms), soon: send `auth:refresh` with
    /// a new one, or the connection closes with 4003 then.
    #[serde(rename = "auth:expiring", rename_all = "camelCase")]
    AuthExpiring { expires_at: Millis },

    /// The user's first connection opened.
    #[serde(rename = "user:online")]
    UserOnline { user: UserRef },

    /// The user's last connection closed.
    #[serde(rename = "user:offline", rename_all = "camelCase")]
    UserOffline { user_id: UserId, last_seen: Millis },

    #[serde(rename = "presence:update", rename_all = "camelCase")]
    PresenceUpdate {
        user_id: UserId,
        status: PresenceStatus,
    },

    /// A member's read watermark moved forward.
    #[serde(rename = "message:read", rename_all = "camelCase")]
    MessageRead {
        room_id: RoomId,
        user_id: UserId,
        seq: u64,
    },

    /// The node is going away; a close 1001 follows. Reconnect (another node answers) and resume.
    #[serde(rename = "server:shutdown")]
    ServerShutdown { reconnect: bool },

    /// A notification for the user, pushed as it is created.
    #[serde(rename = "notification:new")]
    NotificationNew { notification: Notification },

    /// Someone asked the user to be friends.
    #[serde(rename = "friend:request")]
    FriendRequest { user: UserRef },

    /// A friendship started: the other user accepted (or both asked).
    #[serde(rename = "friend:accepted")]
    FriendAccepted { user: UserRef },

    /// A friendship or request ended.
    #[serde(rename = "friend:removed", rename_all = "camelCase")]
    FriendRemoved { user_id: UserId },
}

impl ServerFrame {
    pub fn kind(&self) -> ServerFrameKind {
        self.into()
    }

    /// A successful reply to request `id`.
    pub fn ok(id: u64, result: AckResult) -> Self {
        Self::Ack {
            id,
            result: Some(result),
            error: None,
        }
    }

    /// A refused request `id`.
    pub fn refused(id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Ack {
            id,
            result: None,
            error: Some(ErrorBody {
                code,
                message: message.into(),
            }),
        }
    }
}

impl ServerFrameKind {
    /// The value of the `type` field.
    pub fn wire_name(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Error => "error",
            Self::SessionReady => "session:ready",
            Self::Pong => "pong",
            Self::MessageNew => "message:new",
            Self::UserJoinedRoom => "user:joined:room",
            Self::UserLeftRoom => "user:left:room",
            Self::TypingStart => "typing:start",
            Self::TypingStop => "typing:stop",
            Self::RoomEvent => "room:event",
            Self::UserEvent => "user:event",
            Self::AuthExpiring => "auth:expiring",
            Self::UserOnline => "user:online",
            Self::UserOffline => "user:offline",
            Self::PresenceUpdate => "presence:update",
            Self::MessageRead => "message:read",
            Self::ServerShutdown => "server:shutdown",
            Self::NotificationNew => "notification:new",
            Self::FriendRequest => "friend:request",
            Self::FriendAccepted => "friend:accepted",
            Self::FriendRemoved => "friend:removed",
        }
    }
}

/// What a successful request returns, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum AckResult {
    /// Done; nothing to return (`room:leave`, `room:mute`, `presence:update`, `message:read`).
    Ok,
    /// `room:create` and `room:join`: the room, its online members and messages. Without
    /// `sinceSeq` the messages are the latest 50. With it they are every message after it, unless
    /// more were missed than the server replays: then `recovered` is false and they are the latest
    /// page, and the client must treat older history as a gap to page through.
    #[serde(rename_all = "camelCase")]
    Room {
        room: RoomInfo,
        /// The joining user's role in the room.
        #[serde(default)]
        role: Role,
        online: Vec<Member>,
        messages: Vec<Message>,
        recovered: bool,
    },
    /// `message:send` and `dm:send`: where the message was stored. `duplicate` is true when this
    /// `clientMsgId` had been stored before and this is the original answer.
    #[serde(rename_all = "camelCase")]
    Sent {
        room_id: RoomId,
        message_id: String,
        seq: u64,
        created_at: Millis,
        duplicate: bool,
    },
    /// `history:fetch`: messages in ascending `seq`.
    #[serde(rename_all = "camelCase")]
    History {
        room_id: RoomId,
        messages: Vec<Message>,
        has_more: bool,
    },
    /// `notifications:list`: newest first.
    #[serde(rename_all = "camelCase")]
    Notifications {
        notifications: Vec<Notification>,
        has_more: bool,
    },
    /// `friend:request` and `friend:accept`: the relation as it now stands.
    Friend { friend: Friend },
    /// `friends:list`.
    Friends { friends: Vec<Friend> },
    /// `rpc`: what the app's backend answered.
    Rpc { data: serde_json::Value },
    /// `auth:refresh`: the new token's expiry, now the connection's.
    #[serde(rename_all = "camelCase")]
    Auth { expires_at: Millis },
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// Human-readable; never contains server internals.
    pub message: String,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub message_id: String,
    pub room_id: RoomId,
    /// Position in the room: strictly increasing and gap-free.
    pub seq: u64,
    pub sender: UserRef,
    pub kind: MessageKind,
    pub content: String,
    pub client_msg_id: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    #[default]
    Text,
    /// `content` is an image URL.
    Image,
    /// `content` is a file URL.
    File,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    /// Anyone may join.
    #[default]
    Public,
    /// Only members may join; the creator is the first.
    Private,
    /// Anyone with the password may join.
    Password,
    /// A two-member room holding a direct-message conversation; created by `dm:send`.
    Direct,
    /// Anyone may join and read; only the app's backend publishes (server API).
    Feed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    Online,
    Away,
    Busy,
    /// Shown as offline while connected ("invisible").
    Offline,
}

/// A user as others see them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct UserRef {
    pub id: UserId,
    pub name: String,
}

/// An online member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Member {
    pub user: UserRef,
    pub status: PresenceStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomInfo {
    pub room_id: RoomId,
    pub name: String,
    pub kind: RoomKind,
    pub created_by: UserId,
    /// The seq of the latest message; 0 for an empty room.
    pub last_seq: u64,
    pub member_count: u64,
}

/// One of the user's rooms, as listed in `session:ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomSummary {
    pub room_id: RoomId,
    pub name: String,
    pub kind: RoomKind,
    pub last_seq: u64,
    /// The user's read watermark.
    pub last_read_seq: u64,
    /// `lastSeq - lastReadSeq`.
    pub unread: u64,
    /// The user muted the room (`room:mute`): its messages are not pushed to them.
    #[serde(default)]
    pub muted: bool,
    /// The user's role in the room.
    #[serde(default)]
    pub role: Role,
}

/// Something the user should know about, kept until read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: u64,
    /// What happened, e.g. `friend:request`; clients switch on it.
    pub kind: String,
    pub title: String,
    pub body: String,
    /// Free-form details for the client, e.g. the user or room concerned.
    pub data: serde_json::Value,
    pub created_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<Millis>,
}

/// A friend or a pending request, from the user's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Friend {
    pub user: UserRef,
    pub status: FriendStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FriendStatus {
    /// The user asked; the other has not answered.
    Outgoing,
    /// The other asked; the user has not answered.
    Incoming,
    Accepted,
}

//! The durable truth: users, rooms, members, messages and read watermarks.
//!
//! The store is the only source of per-room order: [`Store::append`] assigns the room's next `seq`
//! (strictly increasing, gap-free) and is idempotent on the sender's `clientMsgId`. History,
//! resume and gap repair all read [`Store::messages_after`] / [`Store::messages_before`].

#[doc(hidden)]
pub mod contract;
pub mod memory;
pub mod postgres;

use std::sync::Arc;

use std::time::SystemTime;

use async_trait::async_trait;
use switchboard_protocol::{
    Friend, FriendStatus, Message, MessageKind, Notification, Role, RoomId, RoomInfo, RoomKind,
    RoomSummary, UserId, UserRef,
};

use crate::webhooks::push::PushPass;

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub info: RoomInfo,
    /// Argon2 PHC string for password rooms; the password itself is never stored.
    pub password_hash: Option<String>,
}

/// What `room:create` asks for, already validated.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub id: RoomId,
    pub name: String,
    pub kind: RoomKind,
    pub password_hash: Option<String>,
    pub creator: UserRef,
    /// The creator's role: `owner`, unless the join hook gave another.
    pub creator_role: Role,
}

/// A room as the app's backend sets it (server API `PUT /rooms/{roomId}`), already validated.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    pub id: RoomId,
    pub name: String,
    /// Public, private or feed: password and direct rooms are made by clients.
    pub kind: RoomKind,
    /// Who is recorded as its creator when it is new; not made a member.
    pub created_by: UserId,
}

/// A message to append, already validated.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub room: RoomId,
    pub sender: UserRef,
    pub kind: MessageKind,
    pub content: String,
    pub client_msg_id: String,
}

/// A notification to keep for a user until read.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub user: UserId,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub data: serde_json::Value,
}

/// A user's ban: their connections are refused until `until` (milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub until: u64,
    pub reason: String,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub message: Message,
    /// The `clientMsgId` had been stored before: `message` is the original, nothing was stored.
    pub duplicate: bool,
}

/// Why a backend failed, kept whole for the log (the client only ever sees a code).
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("room {0} already exists")]
    RoomExists(RoomId),
    #[error("room {0} not found")]
    RoomNotFound(RoomId),
    #[error("a direct-message room or a friendship needs two different users")]
    SelfDirect,
    /// The backend is unreachable, refused the request, or timed out before a write could take
    /// effect: nothing was stored, and retrying is safe.
    #[error("store unavailable")]
    Unavailable(#[source] Cause),
    /// A write was sent and no answer came in time (its commit cut off by the timeout, the
    /// connection lost during `COMMIT`): it may or may not have taken effect. An append retried
    /// with the same `clientMsgId` settles it.
    #[error("store did not confirm the write in time")]
    OutcomeUnknown(#[source] Cause),
}

impl StoreError {
    /// [`StoreError::Unavailable`] from any error or message.
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable(Arc::from(cause.into()))
    }

    /// [`StoreError::OutcomeUnknown`] from any error or message.
    pub fn outcome_unknown(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::OutcomeUnknown(Arc::from(cause.into()))
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records the user as known (name from the token) and returns their ban, if one is in
    /// effect. Called on every connect.
    async fn upsert_user(&self, user: &UserRef) -> Result<Option<Ban>, StoreError>;

    /// Bans the user until `ban.until` (a user never seen is recorded with their id as name).
    async fn ban(&self, user: &UserId, ban: &Ban) -> Result<(), StoreError>;

    /// Lifts the user's ban; true when one was in effect.
    async fn unban(&self, user: &UserId) -> Result<bool, StoreError>;

    /// Creates a room with its creator as the first member.
    async fn create_room(&self, room: NewRoom) -> Result<RoomRecord, StoreError>;

    /// Creates a room with no member, or gives an existing one this name and kind (dropping a
    /// password); true when it was created. The caller keeps direct rooms out.
    async fn put_room(&self, room: RoomSettings) -> Result<(RoomRecord, bool), StoreError>;

    async fn room(&self, id: &RoomId) -> Result<Option<RoomRecord>, StoreError>;

    /// The direct-message room of two users, created with both as members if new.
    async fn direct_room(&self, from: &UserRef, to: &UserId) -> Result<RoomRecord, StoreError>;

    /// Adds a member with `role` (`member` when `None`); `Ok(false)` when they already were
    /// one, whose role `role` then replaces.
    async fn add_member(
        &self,
        room: &RoomId,
        user: &UserId,
        role: Option<&Role>,
    ) -> Result<bool, StoreError>;

    /// Removes a member; `Ok(false)` when they were not one.
    async fn remove_member(&self, room: &RoomId, user: &UserId) -> Result<bool, StoreError>;

    /// The user's role in the room; `None` when they are not a member.
    async fn member_role(&self, room: &RoomId, user: &UserId) -> Result<Option<Role>, StoreError>;

    async fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool, StoreError> {
        Ok(self.member_role(room, user).await?.is_some())
    }

    /// Mutes or unmutes `room` for its member `user`: a muted room's messages are never owed to
    /// them in a push, and unmuting does not owe what came while muted. `Ok(false)` when they
    /// are not a member.
    async fn set_muted(
        &self,
        room: &RoomId,
        user: &UserId,
        muted: bool,
    ) -> Result<bool, StoreError>;

    /// One pass of the push rule (`webhooks/push.rs`) at `now`: writes the `push` webhooks owed
    /// and the marks that say they were made, together. Passes run one at a time cluster-wide;
    /// a pass that fails marks nothing. Without `push` subscribed, nothing is ever owed.
    async fn write_due_pushes(&self, now: SystemTime) -> Result<PushPass, StoreError>;

    async fn members(&self, room: &RoomId) -> Result<Vec<UserId>, StoreError>;

    /// Every room the user is a member of, with its last seq and the user's read watermark.
    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomSummary>, StoreError>;

    /// Stores a message under the room's next seq, or returns the original when the sender's
    /// `clientMsgId` was stored before.
    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError>;

    /// Appends several messages as [`Store::append`] would one after another (a room's
    /// messages get their seqs in the order given), answering each. A store that can write them
    /// together does: this is how a client's burst of sends shares one commit.
    async fn append_many(&self, messages: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>> {
        let mut answers = Vec::with_capacity(messages.len());
        for message in messages {
            answers.push(self.append(message).await);
        }
        answers
    }

    /// Up to `limit` messages with seq > `after`, ascending.
    async fn messages_after(
        &self,
        room: &RoomId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;

    /// The latest `limit` messages with seq < `before`, ascending.
    async fn messages_before(
        &self,
        room: &RoomId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;

    /// Moves the user's read watermark forward to `seq`; `Ok(None)` when it was already there.
    async fn mark_read(
        &self,
        user: &UserId,
        room: &RoomId,
        seq: u64,
    ) -> Result<Option<u64>, StoreError>;

    async fn add_notification(
        &self,
        notification: NewNotification,
    ) -> Result<Notification, StoreError>;

    /// The user's notifications with id below `before`, newest first.
    async fn notifications(
        &self,
        user: &UserId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError>;

    /// Marks the user's own notifications among `ids` as read; returns how many changed.
    async fn mark_notifications_read(&self, user: &UserId, ids: &[u64]) -> Result<u64, StoreError>;

    async fn unread_notifications(&self, user: &UserId) -> Result<u64, StoreError>;

    /// `from` asks `to`. Returns `from`'s side afterwards: `Outgoing`, or `Accepted` when `to`
    /// had asked first (or they were friends already). Asking oneself is `SelfDirect`.
    async fn request_friend(&self, from: &UserId, to: &UserId) -> Result<FriendStatus, StoreError>;

    /// `user` accepts `from`'s pending request; `Ok(false)` when there is none.
    async fn accept_friend(&self, user: &UserId, from: &UserId) -> Result<bool, StoreError>;

    /// Ends a friendship or a pending request either way; `Ok(false)` when there was none.
    async fn remove_friend(&self, user: &UserId, other: &UserId) -> Result<bool, StoreError>;

    /// Friends and pending requests, from `user`'s side, ordered by user id.
    async fn friends(&self, user: &UserId) -> Result<Vec<Friend>, StoreError>;

    /// Whether the backend answers now; `/readyz` reports it.
    async fn health(&self) -> Result<(), StoreError>;

    /// Identifies this store's history: the same for as long as its `seq`s mean the same
    /// messages. A restarted in-memory store gets a new one.
    fn epoch(&self) -> String;
}

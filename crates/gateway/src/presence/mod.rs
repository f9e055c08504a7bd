//! Who is online: each user's connections and status.
//!
//! A user is online while any of their connections is; `user:online` goes out on the first,
//! `user:offline` on the last. Cluster implementations hold entries under node leases that expire
//! unless refreshed, so a crashed node's users go offline without anyone cleaning up.
//!
//! Presence also keeps what the app's backend was told (`user.online` / `user.offline`,
//! `room.occupied` / `room.vacated` webhooks), debounced: a user who comes back within the grace,
//! on any node, was never gone, and a room is occupied while one of its members is announced
//! online (`announcements.rs`).

mod announcements;
#[doc(hidden)]
pub mod contract;
pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use switchboard_protocol::{PresenceStatus, RoomId, UserId, UserRef};

use crate::broker::ConnId;

/// What a new connection changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// This is the user's only connection: they just came online.
    pub first: bool,
    /// Every connection of the user, oldest first, this one included.
    pub connections: Vec<ConnId>,
}

/// A user whose last connection went away with its node (the node's lease expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departed {
    pub user: UserId,
    /// Unix milliseconds: when their node was last known alive.
    pub last_seen: u64,
}

/// One node's load: its connections, the distinct users they belong to, the rooms it follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeStats {
    pub connections: u64,
    pub users: u64,
    pub rooms: u64,
}

/// The cluster as its nodes last reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Every live node that reported, by id.
    pub nodes: Vec<(String, NodeStats)>,
    /// Users online on any node, each counted once.
    pub users: u64,
}

/// What an announcement is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// Online while they have a connection on any node, gone once they have had none for the
    /// grace.
    User(UserId),
    /// Occupied while one of its members is announced online.
    Room(RoomId),
}

/// A change the app's backend is owed: `user.online` / `user.offline`, `room.occupied` /
/// `room.vacated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub subject: Subject,
    /// Online, or for a room occupied.
    pub online: bool,
    /// Numbers each time the subject is announced online; its offline carries the same number.
    /// With `at` it names the announcement, so a repeat (its node died before settling it) is
    /// the same webhook.
    pub generation: u64,
    /// Unix ms: when it was found online, or when it was last seen.
    pub at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The backend did not answer; the cause is kept for the log.
    #[error("presence unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[async_trait]
pub trait Presence: Send + Sync + 'static {
    async fn connect(&self, user: &UserRef, conn: &ConnId) -> Result<Connected, PresenceError>;

    /// Forgets a connection; `Some(last_seen)` (Unix ms) when it was the user's last.
    async fn disconnect(&self, user: &UserId, conn: &ConnId) -> Result<Option<u64>, PresenceError>;

    async fn set_status(&self, user: &UserId, status: PresenceStatus) -> Result<(), PresenceError>;

    /// Keeps this node's counts where every node reads them; called with each refresh.
    async fn report(&self, stats: NodeStats) -> Result<(), PresenceError>;

    /// Every live node's last report, and the users online cluster-wide.
    async fn cluster_stats(&self) -> Result<ClusterStats, PresenceError>;

    /// Keeps this node's lease alive and clears the entries of nodes whose lease expired,
    /// returning the users who went offline with them. Called every few seconds.
    async fn maintain(&self) -> Result<Vec<Departed>, PresenceError>;

    /// Those of `users` who are online and visible, with their status.
    async fn online(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserRef, PresenceStatus)>, PresenceError>;

    /// Asks for a look at `user`'s announced presence: after their first connection
    /// (`offline_since: None`), or after their last went away (`Some(last_seen)`, Unix ms).
    async fn watch(&self, user: &UserId, offline_since: Option<u64>) -> Result<(), PresenceError>;

    /// Counts `user` toward the rooms' occupancy, if they are announced online.
    async fn enter_rooms(&self, user: &UserId, rooms: &[RoomId]) -> Result<(), PresenceError>;

    /// Stops counting `user` toward these rooms' occupancy, or toward every room (`None`).
    async fn leave_rooms(
        &self,
        user: &UserId,
        rooms: Option<&[RoomId]>,
    ) -> Result<(), PresenceError>;

    /// Up to `max` announcements due, cluster-wide: a user online and not announced is due at
    /// once; one announced and without a connection for `grace` is due as offline (back within
    /// the grace, they never were); a room is due as occupied or vacated as soon as the users
    /// counted toward it say so. Each is leased to the caller for `lease`: one not
    /// [`settled`](Self::settled) by then (its node died) is returned again, unchanged.
    async fn due_announcements(
        &self,
        max: usize,
        grace: Duration,
        lease: Duration,
    ) -> Result<Vec<Announcement>, PresenceError>;

    /// The announcement is in the webhook outbox: it is not due again.
    async fn settled(&self, announcement: &Announcement) -> Result<(), PresenceError>;
}

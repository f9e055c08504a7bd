//! Fan-out between gateway nodes.
//!
//! A broker is **at-most-once**: an event may be lost (a Redis disconnect, a dropped
//! subscription) but never duplicated or invented. Ordering and recovery of messages come from
//! the store's per-room `seq`, not from the broker; a broker that may have lost events reports it
//! through [`Inbox::gap`], never through silence.

#[doc(hidden)]
pub mod contract;
pub mod memory;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use switchboard_protocol::{RoomId, ServerFrame, UserId};

/// A connection id, unique across the cluster: `<node>-<counter>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnId(Arc<str>);

impl ConnId {
    pub fn new(node: &str, n: u64) -> Self {
        Self(format!("{node}-{n}").into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One user's connections on a node. Nearly every user has one, held inline: no allocation per
/// user, which counts when a node holds tens of thousands of users.
pub type ConnIds = smallvec::SmallVec<[ConnId; 1]>;

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an event goes: everyone subscribed to a room, or every connection of a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Topic {
    Room(RoomId),
    User(UserId),
}

/// One event for one or more topics. A connection on several of the topics receives it once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub topics: Vec<Topic>,
    pub event: Event,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Event {
    /// A frame for the topics' connections, minus one connection (the sender's, which got an
    /// ack) or every connection of one user (typing goes to the *other* members only).
    Frame {
        frame: ServerFrame,
        skip_conn: Option<ConnId>,
        skip_user: Option<UserId>,
    },
    /// The user became a member of `room` (sent to their user topic): their connections start
    /// receiving the room's messages after `since_seq`.
    MemberJoined {
        user: UserId,
        room: RoomId,
        since_seq: u64,
        skip_conn: Option<ConnId>,
        /// The room is a feed: its connections may read but not publish.
        #[serde(default)]
        feed: bool,
    },
    /// The user stopped being a member of `room`.
    MemberLeft { user: UserId, room: RoomId },
    /// Close one connection, wherever it is (per-user connection limit).
    Kick { conn: ConnId, code: u16 },
    /// Close every connection of the envelope's users (server API).
    KickUser { user: UserId, code: u16 },
    /// The room became a feed, or stopped being one (server API `PUT /rooms/{roomId}`).
    RoomKind { room: RoomId, feed: bool },
}

impl Envelope {
    pub fn frame(topics: Vec<Topic>, frame: ServerFrame) -> Self {
        Self {
            topics,
            event: Event::Frame {
                frame,
                skip_conn: None,
                skip_user: None,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Receives what the broker delivers to this node.
pub trait Inbox: Send + Sync + 'static {
    fn deliver(&self, envelope: &Envelope);
    /// Events on these topics may have been lost; repair from the store before going on.
    fn gap(&self, topics: &[Topic]);
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes to every node subscribed to any of the envelope's topics, this one included.
    async fn publish(&self, envelope: Envelope) -> Result<(), BrokerError>;
    /// This node now has local interest in these topics.
    async fn subscribe(&self, topics: &[Topic]) -> Result<(), BrokerError>;
    /// This node no longer has local interest in these topics.
    async fn unsubscribe(&self, topics: &[Topic]) -> Result<(), BrokerError>;

    /// Whether the broker can publish now; `/readyz` reports it.
    async fn health(&self) -> Result<(), BrokerError>;

    /// Waits until everything this node published so far has reached the other nodes' broker
    /// (Redis answered): a publisher about to forget what it published (the outbox relay
    /// deleting its rows) calls it first.
    async fn flush(&self) -> Result<(), BrokerError>;

    /// How many rooms some node of the cluster follows, each counted once; `None` when this
    /// node is the whole cluster (its hub knows).
    async fn followed_rooms(&self) -> Result<Option<u64>, BrokerError>;
}

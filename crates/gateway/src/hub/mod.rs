//! The node-local hub: which sessions are here, which rooms and users they follow, and the
//! dispatch of broker events to their outbound queues.
//!
//! - `registry.rs` — the state behind the hub's lock and the delivery into session queues;
//! - `sequencer.rs` — per-room delivery order;
//! - `repair.rs` — room messages in order, and gap repair from the store;
//! - `inbox.rs` — what the broker delivers, dispatched.
//!
//! **Invariant:** per room, `message:new` frames reach the queues in strictly increasing `seq`
//! without gaps. A sequencer per room holds an early frame until the missing ones arrive.
//! Each connection also has a *floor* per room: it receives only seqs above it, so the history a
//! session read from the store and the live stream meet with no gap and no duplicate. A session
//! sets its floors through [`Hub::follow`] only, which attaches before it reads.
//!
//! **Invariant:** dispatch never waits. A full outbound queue kicks its session as a slow
//! consumer; the hub never buffers on a session's behalf.

mod inbox;
mod registry;
mod repair;
mod sequencer;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use switchboard_protocol::{CloseCode, Codec, RoomId, UserId};

use crate::broker::{Broker, ConnId, Topic};
use crate::metrics;
use crate::outbound::{Outbound, PushError, QueueTx};
use crate::presence::NodeStats;
use crate::store::Store;
pub use inbox::HubInbox;
use registry::{ConnEntry, Registry};

/// How the hub reaches one session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// Whose session it is: user topics and `skip_user` select by it.
    pub user: UserId,
    /// What the session's frames are encoded in; a broadcast is encoded once per codec.
    pub codec: Codec,
    /// The session's bounded queue.
    pub tx: QueueTx,
}

impl SessionHandle {
    /// Queues a frame at `now_ms`; a queue that is full or behind kicks the session as a slow
    /// consumer.
    fn push(&self, message: Outbound, now_ms: u32) -> bool {
        match self.tx.try_push(message, now_ms) {
            Ok(()) => true,
            Err(PushError::Full | PushError::Behind) => {
                if self.tx.kick(CloseCode::SlowConsumer) {
                    metrics::slow_consumer();
                }
                false
            }
            Err(PushError::Closed) => false,
        }
    }
}

/// How a session follows a room (see [`Hub::attachment`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// A member who may publish.
    Member,
    /// A feed's reader: only the app's backend publishes there.
    Reader,
}

/// Where live delivery of a room to a session stands, and how many frames the session's queue
/// held at that moment (none of them a room message newer than `seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivePosition {
    pub seq: u64,
    pub queued: usize,
}

pub struct Hub {
    /// Sessions, rooms and users on this node. Held only for in-memory work, never across an
    /// await.
    registry: Mutex<Registry>,
    /// Subscribed exactly to the topics some local session follows.
    broker: Arc<dyn Broker>,
    /// Where missing messages are read from when a gap does not close by itself.
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(broker: Arc<dyn Broker>, store: Arc<dyn Store>) -> Self {
        Self {
            registry: Mutex::new(Registry::default()),
            broker,
            store,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a session. Subscribes this node to the user's topic on their first local session.
    pub async fn register(&self, conn: &ConnId, handle: SessionHandle) {
        let user = handle.user.clone();
        let first = {
            let mut registry = self.lock();
            registry.conns.insert(
                conn.clone(),
                ConnEntry {
                    handle,
                    rooms: Default::default(),
                },
            );
            let conns = registry.users.entry(user.clone()).or_default();
            conns.push(conn.clone());
            conns.len() == 1
        };
        if first {
            self.subscribe(vec![Topic::User(user)]).await;
        }
    }

    /// Removes a session and everything it followed.
    pub async fn unregister(&self, conn: &ConnId) {
        let gone = {
            let mut registry = self.lock();
            let Some(entry) = registry.conns.remove(conn) else {
                return;
            };
            let mut gone = Vec::new();
            for room in entry.rooms {
                if registry.unsubscribe_room(conn, &room) {
                    gone.push(Topic::Room(room));
                }
            }
            let user = entry.handle.user;
            if let Some(conns) = registry.users.get_mut(&user) {
                conns.retain(|c| c != conn);
                if conns.is_empty() {
                    registry.users.remove(&user);
                    gone.push(Topic::User(user));
                }
            }
            gone
        };
        self.unsubscribe(gone).await;
    }

    /// The one way a session starts following rooms, so that what it reads from the store and
    /// the live stream meet with no gap and no duplicate:
    ///
    /// 1. attach to `rooms` (subscribing this node where needed): from now on whatever is
    ///    published to them reaches the session, held back until it goes live;
    /// 2. run `read` (a future does nothing until awaited, so it reads *after* the attach) and
    ///    take each room's position from it with `position`;
    /// 3. go live after that position: only later seqs are delivered.
    ///
    /// Returns what `read` read and each room's floor (in the order of `rooms`; `None` for a
    /// room `position` does not know, which stays attached but silent). The floor can be above
    /// the position read: this node had already delivered the messages in between to others,
    /// and the caller must read up to the floor itself.
    pub async fn follow<T, E>(
        &self,
        conn: &ConnId,
        rooms: &[RoomId],
        read: impl Future<Output = Result<T, E>>,
        position: impl Fn(&T, &RoomId) -> Option<u64>,
    ) -> Result<(T, Vec<Option<u64>>), E> {
        let new: Vec<Topic> = {
            let mut registry = self.lock();
            rooms
                .iter()
                .filter(|room| registry.attach(conn, room))
                .map(|r| Topic::Room(r.clone()))
                .collect()
        };
        self.subscribe(new).await;
        let read = read.await?;
        let mut registry = self.lock();
        let floors = rooms
            .iter()
            .map(|room| {
                let at = position(&read, room)?;
                registry.go_live(conn, room, at)
            })
            .collect();
        Ok((read, floors))
    }

    /// Where live delivery of `room` to `conn` stands: every seq up to it has been queued for
    /// the session or was covered by what it read; later ones will be queued. `None` unless the
    /// session is live in the room.
    pub fn live_position(&self, conn: &ConnId, room: &RoomId) -> Option<LivePosition> {
        let registry = self.lock();
        let seq = registry.live_position(conn, room)?;
        // Read under the same lock as `seq`: every room message queued now is at most `seq`,
        // every later one comes after these frames.
        let queued = registry.conns.get(conn).map_or(0, |c| c.handle.tx.queued());
        Some(LivePosition { seq, queued })
    }

    /// Detaches a session from a room.
    pub async fn detach(&self, conn: &ConnId, room: &RoomId) {
        let gone = {
            let mut registry = self.lock();
            if let Some(entry) = registry.conns.get_mut(conn) {
                entry.rooms.remove(room);
            }
            registry.unsubscribe_room(conn, room)
        };
        if gone {
            self.unsubscribe(vec![Topic::Room(room.clone())]).await;
        }
    }

    /// How the session follows the room: not at all (`None`: its user is not a member), or as
    /// a reader only (a feed) or a member who may publish.
    pub fn attachment(&self, conn: &ConnId, room: &RoomId) -> Option<Attachment> {
        let registry = self.lock();
        if !registry.conns.get(conn)?.rooms.contains(room) {
            return None;
        }
        Some(match registry.rooms.get(room) {
            Some(entry) if entry.feed => Attachment::Reader,
            _ => Attachment::Member,
        })
    }

    /// Marks a room this node follows as a feed (its sessions may read, not publish), or not.
    /// Whoever makes a session follow a room knows its kind and calls this right after.
    pub fn set_feed(&self, room: &RoomId, feed: bool) {
        self.lock().set_feed(room, feed);
    }

    /// This node's connections, their distinct users, and the rooms it follows.
    pub fn stats(&self) -> NodeStats {
        let registry = self.lock();
        NodeStats {
            connections: registry.conns.len() as u64,
            users: registry.users.len() as u64,
            rooms: registry.rooms.len() as u64,
        }
    }

    /// This node's sessions of `user`.
    pub fn sessions_of(&self, user: &UserId) -> usize {
        self.lock().users.get(user).map_or(0, |conns| conns.len())
    }

    async fn subscribe(&self, topics: Vec<Topic>) {
        if !topics.is_empty()
            && let Err(error) = self.broker.subscribe(&topics).await
        {
            tracing::warn!(%error, count = topics.len(), "subscribe failed");
        }
    }

    async fn unsubscribe(&self, topics: Vec<Topic>) {
        if !topics.is_empty()
            && let Err(error) = self.broker.unsubscribe(&topics).await
        {
            tracing::warn!(%error, count = topics.len(), "unsubscribe failed");
        }
    }
}

#[cfg(test)]
mod tests;

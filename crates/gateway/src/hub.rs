//! The node-local registry: which sessions are here, which rooms and users they follow, and the
//! dispatch of broker events to their outbound queues.
//!
//! **Invariant:** per room, `message:new` frames reach the queues in strictly increasing `seq`
//! without gaps. A [`Sequencer`] per room holds an early frame until the missing ones arrive.
//! Each connection also has a *floor* per room: it receives only seqs above it, so the history a
//! session read from the store and the live stream meet with no gap and no duplicate.
//!
//! **Invariant:** dispatch never waits. A full outbound queue kicks its session as a slow
//! consumer; the hub never buffers on a session's behalf.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use switchboard_protocol::{CloseCode, Codec, RoomId, ServerFrame, UserId};

use crate::broker::{Broker, ConnId, ConnIds, Envelope, Event, Inbox, Topic};
use crate::metrics;
use crate::outbound::{Outbound, PushError, QueueTx, SharedFrame};
use crate::store::Store;

/// Frames a room may hold back waiting for a missing seq before giving up on it.
const MAX_HELD: usize = 1_024;

/// How long a room holds an early message before reading the missing ones from the store.
const GAP_WAIT: Duration = Duration::from_millis(200);

/// Messages read per repair query, and queries per repair.
const REPAIR_PAGE: usize = 500;
const REPAIR_PAGES: usize = 20;

/// Floor of a connection attached to a room but not yet live: it receives nothing.
const NOT_LIVE: u64 = u64::MAX;

/// How the hub reaches one session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub user: UserId,
    pub codec: Codec,
    pub tx: QueueTx,
}

impl SessionHandle {
    /// Queues a frame; a full queue kicks the session as a slow consumer.
    fn push(&self, message: Outbound) -> bool {
        match self.tx.try_push(message) {
            Ok(()) => true,
            Err(PushError::Full) => {
                if self.tx.kick(CloseCode::SlowConsumer) {
                    metrics::slow_consumer();
                }
                false
            }
            Err(PushError::Closed) => false,
        }
    }
}

pub struct Hub {
    inner: Mutex<Inner>,
    broker: Arc<dyn Broker>,
    /// Where missing messages are read from when a gap does not close by itself.
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    conns: HashMap<ConnId, ConnEntry>,
    rooms: HashMap<RoomId, RoomEntry>,
    users: HashMap<UserId, ConnIds>,
}

struct ConnEntry {
    handle: SessionHandle,
    rooms: HashSet<RoomId>,
}

#[derive(Default)]
struct RoomEntry {
    /// Attached connections and their floors.
    subs: HashMap<ConnId, u64>,
    seq: Sequencer,
}

impl Hub {
    pub fn new(broker: Arc<dyn Broker>, store: Arc<dyn Store>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            broker,
            store,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a session. Subscribes this node to the user's topic on their first local session.
    pub async fn register(&self, conn: &ConnId, handle: SessionHandle) {
        let user = handle.user.clone();
        let first = {
            let mut inner = self.lock();
            inner.conns.insert(
                conn.clone(),
                ConnEntry {
                    handle,
                    rooms: HashSet::new(),
                },
            );
            let conns = inner.users.entry(user.clone()).or_default();
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
            let mut inner = self.lock();
            let Some(entry) = inner.conns.remove(conn) else {
                return;
            };
            let mut gone = Vec::new();
            for room in entry.rooms {
                if inner.unsubscribe_room(conn, &room) {
                    gone.push(Topic::Room(room));
                }
            }
            let user = entry.handle.user;
            if let Some(conns) = inner.users.get_mut(&user) {
                conns.retain(|c| c != conn);
                if conns.is_empty() {
                    inner.users.remove(&user);
                    gone.push(Topic::User(user));
                }
            }
            gone
        };
        self.unsubscribe(gone).await;
    }

    /// Attaches a session to rooms without delivering anything yet. Call [`Hub::go_live`] once
    /// the session has read each room's position from the store.
    pub async fn attach(&self, conn: &ConnId, rooms: &[RoomId]) {
        let new = {
            let mut inner = self.lock();
            rooms
                .iter()
                .filter(|room| inner.attach(conn, room, NOT_LIVE))
                .map(|r| Topic::Room(r.clone()))
                .collect()
        };
        self.subscribe(new).await;
    }

    /// Starts live delivery of `room` to `conn` after `floor`, the last seq the session read.
    ///
    /// Returns the effective floor: when it is above `floor`, this node already delivered the
    /// messages in between to others, and the session must read them from the store itself.
    pub fn go_live(&self, conn: &ConnId, room: &RoomId, floor: u64) -> Option<u64> {
        let mut inner = self.lock();
        let entry = inner.rooms.get_mut(room)?;
        let effective = match entry.seq.delivered {
            Some(delivered) => floor.max(delivered),
            None => {
                entry.seq.start_at(floor);
                floor
            }
        };
        *entry.subs.get_mut(conn)? = effective;
        inner.drain_room(room);
        Some(effective)
    }

    /// Detaches a session from a room.
    pub async fn detach(&self, conn: &ConnId, room: &RoomId) {
        let gone = {
            let mut inner = self.lock();
            if let Some(entry) = inner.conns.get_mut(conn) {
                entry.rooms.remove(room);
            }
            inner.unsubscribe_room(conn, room)
        };
        if gone {
            self.unsubscribe(vec![Topic::Room(room.clone())]).await;
        }
    }

    /// Whether the session follows the room (it does for every room its user is a member of).
    pub fn is_attached(&self, conn: &ConnId, room: &RoomId) -> bool {
        self.lock()
            .conns
            .get(conn)
            .is_some_and(|c| c.rooms.contains(room))
    }

    /// The session's floor in a live room: live delivery covers every seq above it.
    pub fn live_floor(&self, conn: &ConnId, room: &RoomId) -> Option<u64> {
        self.lock()
            .rooms
            .get(room)?
            .subs
            .get(conn)
            .copied()
            .filter(|f| *f != NOT_LIVE)
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

    /// Delivers a room message in seq order: now if it is next, later if it is early (then a
    /// repair from the store is scheduled in case the missing ones never arrive), never if stale.
    fn offer_room_message(self: &Arc<Self>, envelope: &Envelope) {
        let Event::Frame {
            frame: ServerFrame::MessageNew { message },
            ..
        } = &envelope.event
        else {
            return;
        };
        let room = &message.room_id;
        let mut inner = self.lock();
        let Some(entry) = inner.rooms.get_mut(room) else {
            return;
        };
        match entry.seq.offer(message.seq) {
            Offer::Deliver => {
                inner.deliver_room_message(room, envelope);
                inner.drain_room(room);
            }
            Offer::Hold => {
                if entry.seq.hold(message.seq, envelope.clone()) {
                    metrics::sequence_gap();
                    tracing::warn!(%room, "too many messages held: skipping a gap");
                }
                let schedule = entry.seq.delivered.is_some()
                    && !std::mem::replace(&mut entry.seq.repairing, true);
                inner.drain_room(room);
                drop(inner);
                if schedule {
                    self.spawn_repair(room.clone(), GAP_WAIT);
                }
            }
            Offer::Stale => {}
        }
    }

    fn spawn_repair(self: &Arc<Self>, room: RoomId, after: Duration) {
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            hub.repair(&room).await;
        });
    }

    /// Reads what this node has not delivered of `room` from the store and offers it, in order.
    /// Gives up (the held messages then wait for the next repair or overflow) when the store fails.
    async fn repair(self: &Arc<Self>, room: &RoomId) {
        for _ in 0..REPAIR_PAGES {
            let Some(from) = self.lock().rooms.get(room).and_then(|r| r.seq.delivered) else {
                return;
            };
            let page = match self.store.messages_after(room, from, REPAIR_PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%room, %error, "gap repair failed; retrying");
                    self.spawn_repair(room.clone(), GAP_WAIT * 5);
                    return;
                }
            };
            let full = page.len() == REPAIR_PAGE;
            if !page.is_empty() {
                tracing::debug!(%room, from, count = page.len(), "repaired from the store");
            }
            for message in page {
                let frame = ServerFrame::MessageNew { message };
                self.offer_room_message(&Envelope::frame(vec![Topic::Room(room.clone())], frame));
            }
            if !full {
                break;
            }
        }
        let mut inner = self.lock();
        if let Some(entry) = inner.rooms.get_mut(room) {
            entry.seq.repairing = false;
            if !entry.seq.held.is_empty() {
                // Still waiting: the missing message is not in the store yet. Look again.
                entry.seq.repairing = true;
                drop(inner);
                self.spawn_repair(room.clone(), GAP_WAIT);
            }
        }
    }

    fn spawn_subscribe(self: &Arc<Self>, topics: Vec<Topic>) {
        if !topics.is_empty() {
            let hub = Arc::clone(self);
            tokio::spawn(async move { hub.subscribe(topics).await });
        }
    }
}

impl Inner {
    /// Adds `conn` to `room` with `floor`; true when the room is new on this node.
    fn attach(&mut self, conn: &ConnId, room: &RoomId, floor: u64) -> bool {
        let Some(entry) = self.conns.get_mut(conn) else {
            return false;
        };
        if !entry.rooms.insert(room.clone()) {
            return false;
        }
        let new = !self.rooms.contains_key(room);
        self.rooms
            .entry(room.clone())
            .or_default()
            .subs
            .insert(conn.clone(), floor);
        new
    }

    /// Removes `conn` from `room`; true when the room has no session left on this node.
    fn unsubscribe_room(&mut self, conn: &ConnId, room: &RoomId) -> bool {
        let Some(entry) = self.rooms.get_mut(room) else {
            return false;
        };
        entry.subs.remove(conn);
        if entry.subs.is_empty() {
            self.rooms.remove(room);
            return true;
        }
        false
    }

    /// Delivers every held message of `room` that is now next in line.
    fn drain_room(&mut self, room: &RoomId) {
        while let Some(envelope) = self.rooms.get_mut(room).and_then(|r| r.seq.next_ready()) {
            self.deliver_room_message(room, &envelope);
        }
    }

    fn deliver_room_message(&self, room: &RoomId, envelope: &Envelope) {
        let Event::Frame {
            frame: frame @ ServerFrame::MessageNew { message },
            skip_conn,
            skip_user,
        } = &envelope.event
        else {
            return;
        };
        let Some(entry) = self.rooms.get(room) else {
            return;
        };
        let mut shared = SharedFrame::new(frame);
        let mut sent = 0;
        for (conn, &floor) in &entry.subs {
            if message.seq <= floor || skip_conn.as_ref() == Some(conn) {
                continue;
            }
            let Some(target) = self.conns.get(conn) else {
                continue;
            };
            if skip_user.as_ref() == Some(&target.handle.user) {
                continue;
            }
            if let Some(bytes) = shared.get(target.handle.codec)
                && target.handle.push(bytes)
            {
                sent += 1;
            }
        }
        metrics::frames_out(sent);
    }

    /// Delivers any frame other than a room message: once per connection across all topics.
    fn deliver_frame(
        &self,
        topics: &[Topic],
        frame: &ServerFrame,
        skip_conn: Option<&ConnId>,
        skip_user: Option<&UserId>,
    ) {
        let mut targets: Vec<&ConnId> = Vec::new();
        for topic in topics {
            match topic {
                Topic::Room(room) => {
                    if let Some(entry) = self.rooms.get(room) {
                        targets.extend(
                            entry
                                .subs
                                .iter()
                                .filter(|(_, floor)| **floor != NOT_LIVE)
                                .map(|(c, _)| c),
                        );
                    }
                }
                Topic::User(user) => {
                    if skip_user != Some(user)
                        && let Some(conns) = self.users.get(user)
                    {
                        targets.extend(conns.iter());
                    }
                }
            }
        }
        if topics.len() > 1 {
            targets.sort_unstable();
            targets.dedup();
        }
        let mut shared = SharedFrame::new(frame);
        let mut sent = 0;
        for conn in targets {
            if skip_conn == Some(conn) {
                continue;
            }
            let Some(target) = self.conns.get(conn) else {
                continue;
            };
            if skip_user == Some(&target.handle.user) {
                continue;
            }
            if let Some(bytes) = shared.get(target.handle.codec)
                && target.handle.push(bytes)
            {
                sent += 1;
            }
        }
        metrics::frames_out(sent);
    }
}

/// Handles what the broker delivers to this node. Needs `Arc<Hub>` to spawn subscriptions.
#[derive(Debug)]
pub struct HubInbox(pub Arc<Hub>);

impl Inbox for HubInbox {
    fn deliver(&self, envelope: &Envelope) {
        let hub = &self.0;
        match &envelope.event {
            Event::Frame {
                frame: ServerFrame::MessageNew { .. },
                ..
            } => hub.offer_room_message(envelope),
            Event::Frame {
                frame,
                skip_conn,
                skip_user,
            } => {
                hub.lock().deliver_frame(
                    &envelope.topics,
                    frame,
                    skip_conn.as_ref(),
                    skip_user.as_ref(),
                );
            }
            Event::MemberJoined {
                user,
                room,
                since_seq,
                skip_conn,
            } => {
                let new = {
                    let mut inner = hub.lock();
                    let conns: Vec<ConnId> = inner
                        .users
                        .get(user)
                        .map(|c| {
                            c.iter()
                                .filter(|c| Some(*c) != skip_conn.as_ref())
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    let mut new = false;
                    for conn in &conns {
                        new |= inner.attach(conn, room, NOT_LIVE);
                    }
                    if let Some(entry) = inner.rooms.get_mut(room) {
                        let floor = match entry.seq.delivered {
                            Some(d) => d.max(*since_seq),
                            None => {
                                entry.seq.start_at(*since_seq);
                                *since_seq
                            }
                        };
                        for conn in &conns {
                            if let Some(f) = entry.subs.get_mut(conn) {
                                *f = floor;
                            }
                        }
                    }
                    new
                };
                if new {
                    hub.spawn_subscribe(vec![Topic::Room(room.clone())]);
                }
            }
            Event::MemberLeft { user, room } => {
                let conns: ConnIds = hub.lock().users.get(user).cloned().unwrap_or_default();
                let hub = Arc::clone(hub);
                let room = room.clone();
                tokio::spawn(async move {
                    for conn in conns {
                        hub.detach(&conn, &room).await;
                    }
                });
            }
            Event::Kick { conn, code } => {
                if let (Some(entry), Some(code)) =
                    (hub.lock().conns.get(conn), CloseCode::from_code(*code))
                {
                    entry.handle.tx.kick(code);
                }
            }
        }
    }

    fn gap(&self, topics: &[Topic]) {
        tracing::warn!(
            count = topics.len(),
            "broker may have lost events: repairing from the store"
        );
        for topic in topics {
            if let Topic::Room(room) = topic {
                self.0.spawn_repair(room.clone(), Duration::ZERO);
            }
        }
    }
}

/// What to do with an arriving room message.
#[derive(Debug, PartialEq, Eq)]
enum Offer {
    /// Next in line: deliver now.
    Deliver,
    /// Early (or the room's position is not known yet): hold it.
    Hold,
    /// Already delivered: drop it.
    Stale,
}

/// Per-room delivery order on this node.
#[derive(Default)]
struct Sequencer {
    /// The last seq delivered; `None` until the first session goes live.
    delivered: Option<u64>,
    held: BTreeMap<u64, Envelope>,
    /// A repair from the store is scheduled; one at a time per room.
    repairing: bool,
}

impl Sequencer {
    fn start_at(&mut self, seq: u64) {
        self.delivered = Some(seq);
        self.held = self.held.split_off(&(seq + 1));
    }

    fn offer(&mut self, seq: u64) -> Offer {
        match self.delivered {
            None => Offer::Hold,
            Some(d) if seq <= d => Offer::Stale,
            Some(d) if seq == d + 1 => {
                self.delivered = Some(seq);
                Offer::Deliver
            }
            Some(_) => Offer::Hold,
        }
    }

    /// Holds an early message. When too many are held, skips the gap (returns true): the
    /// messages after it must not wait forever.
    fn hold(&mut self, seq: u64, envelope: Envelope) -> bool {
        self.held.insert(seq, envelope);
        if self.held.len() <= MAX_HELD {
            return false;
        }
        match (self.delivered, self.held.keys().next()) {
            (Some(_), Some(&first)) => {
                self.delivered = Some(first - 1);
                true
            }
            _ => {
                // Position unknown and overflowing: drop the oldest to stay bounded.
                self.held.pop_first();
                true
            }
        }
    }

    fn next_ready(&mut self) -> Option<Envelope> {
        let next = self.delivered? + 1;
        let envelope = self.held.remove(&next)?;
        self.delivered = Some(next);
        Some(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::MemoryBroker;
    use crate::outbound::{Next, QueueRx};
    use crate::store::memory::MemoryStore;
    use crate::store::{NewMessage, NewRoom};
    use switchboard_protocol::RoomKind;
    use switchboard_protocol::{Message, MessageKind, UserRef};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    fn session(user: &str, codec: Codec) -> (SessionHandle, QueueRx) {
        let (tx, rx) = crate::outbound::queue(8);
        let user = UserId::parse(user).unwrap();
        (SessionHandle { user, codec, tx }, rx)
    }

    fn message_new(room: &RoomId, seq: u64) -> Envelope {
        let message = Message {
            message_id: format!("m{seq}"),
            room_id: room.clone(),
            seq,
            sender: UserRef {
                id: UserId::parse("alice").unwrap(),
                name: "Alice".into(),
            },
            kind: MessageKind::Text,
            content: "hi".into(),
            client_msg_id: format!("c{seq}"),
            created_at: 0,
        };
        Envelope::frame(
            vec![Topic::Room(room.clone())],
            ServerFrame::MessageNew { message },
        )
    }

    fn payload(message: &Outbound) -> (*const u8, usize) {
        match &**message {
            WsMessage::Text(text) => (text.as_str().as_ptr(), text.len()),
            WsMessage::Binary(bytes) => (bytes.as_ptr(), bytes.len()),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_broadcast_is_encoded_once_per_codec_and_delivered_in_seq_order() {
        let hub = Arc::new(Hub::new(
            Arc::new(MemoryBroker::new()),
            Arc::new(MemoryStore::new(100)),
        ));
        let inbox = HubInbox(Arc::clone(&hub));
        let room = RoomId::parse("general").unwrap();
        let mut receivers = Vec::new();
        for (i, codec) in [Codec::Json, Codec::Json, Codec::MsgPack, Codec::MsgPack]
            .into_iter()
            .enumerate()
        {
            let conn = ConnId::new("n", i as u64);
            let (handle, rx) = session(&format!("u{i}"), codec);
            hub.register(&conn, handle).await;
            hub.attach(&conn, std::slice::from_ref(&room)).await;
            assert_eq!(hub.go_live(&conn, &room, 0), Some(0));
            receivers.push(rx);
        }
        // 2 arrives before 1: held, then both delivered in order.
        inbox.deliver(&message_new(&room, 2));
        assert!(receivers[0].try_pop().is_none(), "2 waits for 1");
        inbox.deliver(&message_new(&room, 1));
        let mut firsts = Vec::new();
        for rx in &mut receivers {
            let one = rx.try_pop().expect("seq 1");
            let two = rx.try_pop().expect("seq 2");
            assert_ne!(payload(&one), payload(&two));
            firsts.push(payload(&one));
        }
        assert_eq!(firsts[0], firsts[1], "JSON sessions share one buffer");
        assert_eq!(
            firsts[2], firsts[3],
            "MessagePack sessions share one buffer"
        );
        assert_ne!(firsts[0], firsts[2]);
        inbox.deliver(&message_new(&room, 1));
        assert!(receivers[0].try_pop().is_none(), "a repeat is dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_that_does_not_close_by_itself_is_repaired_from_the_store() {
        let store = Arc::new(MemoryStore::new(100));
        let hub = Arc::new(Hub::new(Arc::new(MemoryBroker::new()), store.clone()));
        let inbox = HubInbox(Arc::clone(&hub));
        let room = RoomId::parse("general").unwrap();
        let alice = UserRef {
            id: UserId::parse("alice").unwrap(),
            name: "Alice".into(),
        };
        let new_room = NewRoom {
            id: room.clone(),
            name: "G".into(),
            kind: RoomKind::Public,
            password_hash: None,
            creator: alice.clone(),
        };
        store.create_room(new_room).await.unwrap();
        let conn = ConnId::new("n", 1);
        let (handle, mut rx) = session("bob", Codec::Json);
        hub.register(&conn, handle).await;
        hub.attach(&conn, std::slice::from_ref(&room)).await;
        hub.go_live(&conn, &room, 0);
        let mut appended = Vec::new();
        for i in 1..=3 {
            let message = NewMessage {
                room: room.clone(),
                sender: alice.clone(),
                kind: MessageKind::Text,
                content: format!("m{i}"),
                client_msg_id: format!("c{i}"),
            };
            appended.push(store.append(message).await.unwrap().message);
        }
        // Only 3 is published (1 and 2 were lost on the way): it waits, then the store fills in.
        let three = appended[2].clone();
        inbox.deliver(&Envelope::frame(
            vec![Topic::Room(room.clone())],
            ServerFrame::MessageNew { message: three },
        ));
        assert!(rx.try_pop().is_none());
        let mut seqs = Vec::new();
        for _ in 0..3 {
            let Next::Frame(frame) = rx.next().await else {
                panic!("kicked")
            };
            let WsMessage::Text(text) = &*frame else {
                panic!()
            };
            let frame: ServerFrame = serde_json::from_str(text.as_str()).unwrap();
            let ServerFrame::MessageNew { message } = frame else {
                panic!("{frame:?}")
            };
            seqs.push(message.seq);
        }
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(rx.try_pop().is_none(), "each once");
    }

    #[tokio::test]
    async fn a_full_queue_kicks_its_session_as_a_slow_consumer() {
        let hub = Arc::new(Hub::new(
            Arc::new(MemoryBroker::new()),
            Arc::new(MemoryStore::new(100)),
        ));
        let inbox = HubInbox(Arc::clone(&hub));
        let room = RoomId::parse("general").unwrap();
        let conn = ConnId::new("n", 1);
        let (handle, mut rx) = session("bob", Codec::Json);
        hub.register(&conn, handle).await;
        hub.attach(&conn, std::slice::from_ref(&room)).await;
        hub.go_live(&conn, &room, 0);
        for seq in 1..=9 {
            inbox.deliver(&message_new(&room, seq));
        }
        assert_eq!(rx.next().await, Next::Kicked(CloseCode::SlowConsumer));
    }

    fn envelope() -> Envelope {
        Envelope::frame(vec![], ServerFrame::Pong { id: None })
    }

    #[test]
    fn sequencer_holds_early_messages_until_the_gap_fills() {
        let mut seq = Sequencer::default();
        assert_eq!(seq.offer(5), Offer::Hold);
        seq.hold(5, envelope());
        seq.start_at(3);
        assert!(seq.next_ready().is_none());
        assert_eq!(seq.offer(4), Offer::Deliver);
        assert!(seq.next_ready().is_some(), "5 follows 4");
        assert_eq!(seq.delivered, Some(5));
        assert_eq!(seq.offer(5), Offer::Stale);
        assert_eq!(seq.offer(7), Offer::Hold);
    }

    #[test]
    fn sequencer_skips_a_gap_rather_than_grow_without_bound() {
        let mut seq = Sequencer::default();
        seq.start_at(0);
        let mut skipped = false;
        for s in 2..=(MAX_HELD as u64 + 2) {
            skipped |= seq.hold(s, envelope());
        }
        assert!(skipped);
        let mut delivered = 0;
        while seq.next_ready().is_some() {
            delivered += 1;
        }
        assert_eq!(delivered, MAX_HELD + 1);
        assert!(seq.held.is_empty());
    }

    #[test]
    fn start_at_drops_what_the_store_read_covered() {
        let mut seq = Sequencer::default();
        seq.hold(3, envelope());
        seq.hold(4, envelope());
        seq.start_at(3);
        assert!(seq.next_ready().is_some());
        assert_eq!(seq.delivered, Some(4));
    }
}

//! The embedded store: everything in one process's memory, lost on restart.
//!
//! Bounded: each room keeps its latest `history` messages (and their idempotency keys); a resume
//! from further back answers `recovered: false`. `push.rs` holds the push rule's passes.

mod push;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use switchboard_protocol::{
    Friend, FriendStatus, Message, Notification, Role, RoomId, RoomInfo, RoomKind, RoomSummary,
    UserId, UserRef,
};

use self::push::{MemberPush, UserPush};
use super::{
    Appended, Ban, NewMessage, NewNotification, NewRoom, RoomRecord, RoomSettings, Store,
    StoreError,
};
use crate::wall_clock::{now_millis, unix_millis};
use crate::webhooks::push::PushPass;
use crate::webhooks::{EventSink, EventType, WebhookEvent};

/// Notifications kept per user; the oldest go first.
const MAX_NOTIFICATIONS: usize = 1_000;

#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    history: usize,
    /// New on every start: positions from another run mean nothing here.
    epoch: String,
    /// With webhooks: the memory outbox, written under the same lock as each change.
    events: Option<EventSink>,
}

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<UserId, UserRef>,
    bans: HashMap<UserId, Ban>,
    rooms: HashMap<RoomId, RoomState>,
    /// user → rooms they are a member of.
    memberships: HashMap<UserId, BTreeSet<RoomId>>,
    /// (user, room) → read watermark.
    reads: HashMap<(UserId, RoomId), u64>,
    notifications: HashMap<UserId, VecDeque<Notification>>,
    next_notification: u64,
    /// (asker, asked) → accepted. An accepted friendship is stored both ways.
    friendships: HashMap<(UserId, UserId), bool>,
    /// Rooms due for a push pass, by when.
    due_rooms: BTreeSet<(u64, RoomId)>,
    /// Users whose notifications are due for a push pass, by when.
    due_users: BTreeSet<(u64, UserId)>,
    /// The push state of users with notifications.
    user_push: HashMap<UserId, UserPush>,
}

/// A member of a room.
#[derive(Debug)]
struct Membership {
    role: Role,
    push: MemberPush,
}

#[derive(Debug)]
struct RoomState {
    record: RoomRecord,
    members: BTreeMap<UserId, Membership>,
    /// When the room is due for a push pass.
    push_due: Option<u64>,
    /// The latest messages, seq ascending and contiguous.
    messages: VecDeque<Message>,
    /// (sender, clientMsgId) → seq, for the messages still kept.
    by_client_id: HashMap<(UserId, String), u64>,
}

impl MemoryStore {
    /// A store keeping the latest `history` messages per room.
    pub fn new(history: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            history: history.max(1),
            epoch: format!("mem-{}", uuid::Uuid::now_v7().simple()),
            events: None,
        }
    }

    /// Writes the events of its changes to `sink` (the memory outbox).
    pub fn with_events(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// Keeps `make`'s event when the app subscribed to `kind` (in `room`). Called with the
    /// store's lock held, so the outbox holds events in the order of the changes.
    fn emit(&self, kind: EventType, room: Option<&RoomId>, make: impl FnOnce() -> WebhookEvent) {
        if let Some(sink) = &self.events
            && sink.wants(kind, room)
        {
            sink.keep([make()]);
        }
    }

    /// When something made at `at` is due for a push pass, if `push` is wanted for it.
    fn push_due(&self, room: Option<&RoomId>, at: u64) -> Option<u64> {
        let rule = self.events.as_ref()?.push_rule(room)?;
        Some(rule.due(at))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn user_ref(&self, id: &UserId) -> UserRef {
        self.users.get(id).cloned().unwrap_or_else(|| UserRef {
            id: id.clone(),
            name: id.to_string(),
        })
    }

    fn room_mut(&mut self, id: &RoomId) -> Result<&mut RoomState, StoreError> {
        self.rooms
            .get_mut(id)
            .ok_or_else(|| StoreError::RoomNotFound(id.clone()))
    }

    fn insert_room(&mut self, record: RoomRecord, members: &[(&UserId, Role)]) -> RoomRecord {
        let id = record.info.room_id.clone();
        let mut state = RoomState {
            record,
            members: BTreeMap::new(),
            push_due: None,
            messages: VecDeque::new(),
            by_client_id: HashMap::new(),
        };
        for (user, role) in members {
            let membership = Membership {
                role: role.clone(),
                push: MemberPush::since(0),
            };
            state.members.insert((*user).clone(), membership);
            self.memberships
                .entry((*user).clone())
                .or_default()
                .insert(id.clone());
        }
        state.record.info.member_count = state.members.len() as u64;
        let record = state.record.clone();
        self.rooms.insert(id, state);
        record
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn upsert_user(&self, user: &UserRef) -> Result<Option<Ban>, StoreError> {
        let mut inner = self.lock();
        inner.users.insert(user.id.clone(), user.clone());
        let now = now_millis();
        Ok(inner.bans.get(&user.id).filter(|b| b.until > now).cloned())
    }

    async fn ban(&self, user: &UserId, ban: &Ban) -> Result<(), StoreError> {
        self.lock().bans.insert(user.clone(), ban.clone());
        Ok(())
    }

    async fn unban(&self, user: &UserId) -> Result<bool, StoreError> {
        let now = now_millis();
        Ok(self.lock().bans.remove(user).is_some_and(|b| b.until > now))
    }

    async fn create_room(&self, room: NewRoom) -> Result<RoomRecord, StoreError> {
        let mut inner = self.lock();
        if inner.rooms.contains_key(&room.id) {
            return Err(StoreError::RoomExists(room.id));
        }
        let record = RoomRecord {
            info: RoomInfo {
                room_id: room.id,
                name: room.name,
                kind: room.kind,
                created_by: room.creator.id.clone(),
                last_seq: 0,
                member_count: 0,
            },
            password_hash: room.password_hash,
        };
        Ok(inner.insert_room(record, &[(&room.creator.id, room.creator_role)]))
    }

    async fn put_room(&self, room: RoomSettings) -> Result<(RoomRecord, bool), StoreError> {
        let mut inner = self.lock();
        if let Some(state) = inner.rooms.get_mut(&room.id) {
            let record = &mut state.record;
            record.info.name = room.name;
            record.info.kind = room.kind;
            record.password_hash = None;
            return Ok((record.clone(), false));
        }
        let record = RoomRecord {
            info: RoomInfo {
                room_id: room.id,
                name: room.name,
                kind: room.kind,
                created_by: room.created_by,
                last_seq: 0,
                member_count: 0,
            },
            password_hash: None,
        };
        Ok((inner.insert_room(record, &[]), true))
    }

    async fn room(&self, id: &RoomId) -> Result<Option<RoomRecord>, StoreError> {
        Ok(self.lock().rooms.get(id).map(|r| r.record.clone()))
    }

    async fn direct_room(&self, from: &UserRef, to: &UserId) -> Result<RoomRecord, StoreError> {
        let id = RoomId::direct(&from.id, to).ok_or(StoreError::SelfDirect)?;
        let mut inner = self.lock();
        if let Some(room) = inner.rooms.get(&id) {
            return Ok(room.record.clone());
        }
        let record = RoomRecord {
            info: RoomInfo {
                room_id: id.clone(),
                name: id.to_string(),
                kind: RoomKind::Direct,
                created_by: from.id.clone(),
                last_seq: 0,
                member_count: 0,
            },
            password_hash: None,
        };
        Ok(inner.insert_room(record, &[(&from.id, Role::member()), (to, Role::member())]))
    }

    async fn add_member(
        &self,
        room: &RoomId,
        user: &UserId,
        role: Option<&Role>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let state = inner.room_mut(room)?;
        if let Some(membership) = state.members.get_mut(user) {
            if let Some(role) = role {
                membership.role = role.clone();
            }
            return Ok(false);
        }
        let role = role.cloned().unwrap_or_default();
        // What was said before they joined is never pushed to them.
        let membership = Membership {
            role: role.clone(),
            push: MemberPush::since(state.record.info.last_seq),
        };
        state.members.insert(user.clone(), membership);
        state.record.info.member_count = state.members.len() as u64;
        inner
            .memberships
            .entry(user.clone())
            .or_default()
            .insert(room.clone());
        self.emit(EventType::MemberJoined, Some(room), || {
            WebhookEvent::member_joined(room, user, &role)
        });
        Ok(true)
    }

    async fn remove_member(&self, room: &RoomId, user: &UserId) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let state = inner.room_mut(room)?;
        let removed = state.members.remove(user).is_some();
        state.record.info.member_count = state.members.len() as u64;
        if removed && let Some(rooms) = inner.memberships.get_mut(user) {
            rooms.remove(room);
        }
        if removed {
            self.emit(EventType::MemberLeft, Some(room), || {
                WebhookEvent::member_left(room, user)
            });
        }
        Ok(removed)
    }

    async fn member_role(&self, room: &RoomId, user: &UserId) -> Result<Option<Role>, StoreError> {
        Ok(self
            .lock()
            .rooms
            .get(room)
            .and_then(|r| r.members.get(user))
            .map(|m| m.role.clone()))
    }

    async fn set_muted(
        &self,
        room: &RoomId,
        user: &UserId,
        muted: bool,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let state = inner.room_mut(room)?;
        let last_seq = state.record.info.last_seq;
        let Some(membership) = state.members.get_mut(user) else {
            return Ok(false);
        };
        membership.push.set_muted(muted, last_seq);
        Ok(true)
    }

    async fn write_due_pushes(&self, now: SystemTime) -> Result<PushPass, StoreError> {
        let Some(sink) = &self.events else {
            return Ok(PushPass::default());
        };
        let Some(rule) = sink.push() else {
            return Ok(PushPass::default());
        };
        let mut inner = self.lock();
        let (batch, more) = inner.push_pass(rule, unix_millis(now));
        let events = batch.into_events();
        let written = events.len();
        // Under the lock that marked them: the outbox holds them before anyone sees the marks.
        sink.keep(events);
        Ok(PushPass { written, more })
    }

    async fn members(&self, room: &RoomId) -> Result<Vec<UserId>, StoreError> {
        let inner = self.lock();
        let state = inner
            .rooms
            .get(room)
            .ok_or_else(|| StoreError::RoomNotFound(room.clone()))?;
        Ok(state.members.keys().cloned().collect())
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomSummary>, StoreError> {
        let inner = self.lock();
        let Some(rooms) = inner.memberships.get(user) else {
            return Ok(Vec::new());
        };
        Ok(rooms
            .iter()
            .filter_map(|id| inner.rooms.get(id))
            .map(|state| {
                let info = &state.record.info;
                let read = inner
                    .reads
                    .get(&(user.clone(), info.room_id.clone()))
                    .copied()
                    .unwrap_or(0);
                RoomSummary {
                    room_id: info.room_id.clone(),
                    name: info.name.clone(),
                    kind: info.kind,
                    last_seq: info.last_seq,
                    last_read_seq: read,
                    unread: info.last_seq.saturating_sub(read),
                    muted: state.members.get(user).is_some_and(|m| m.push.muted),
                    role: state
                        .members
                        .get(user)
                        .map_or_else(Role::member, |m| m.role.clone()),
                }
            })
            .collect())
    }

    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        let history = self.history;
        let mut inner = self.lock();
        let state = inner.room_mut(&message.room)?;
        let key = (message.sender.id.clone(), message.client_msg_id.clone());
        if let Some(&seq) = state.by_client_id.get(&key) {
            let first = state.messages.front().map_or(0, |m| m.seq);
            if let Some(original) = state.messages.get((seq - first) as usize) {
                return Ok(Appended {
                    message: original.clone(),
                    duplicate: true,
                });
            }
        }
        let seq = state.record.info.last_seq + 1;
        let stored = Message {
            message_id: uuid::Uuid::now_v7().to_string(),
            room_id: message.room,
            seq,
            sender: message.sender,
            kind: message.kind,
            content: message.content,
            client_msg_id: message.client_msg_id,
            created_at: now_millis(),
        };
        state.record.info.last_seq = seq;
        state.messages.push_back(stored.clone());
        state.by_client_id.insert(key, seq);
        while state.messages.len() > history {
            if let Some(old) = state.messages.pop_front() {
                state
                    .by_client_id
                    .remove(&(old.sender.id, old.client_msg_id));
            }
        }
        if let Some(due) = self.push_due(Some(&stored.room_id), stored.created_at) {
            inner.room_due(&stored.room_id, due);
        }
        self.emit(EventType::MessageCreated, Some(&stored.room_id), || {
            WebhookEvent::message_created(&stored)
        });
        Ok(Appended {
            message: stored,
            duplicate: false,
        })
    }

    async fn messages_after(
        &self,
        room: &RoomId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let inner = self.lock();
        let state = inner
            .rooms
            .get(room)
            .ok_or_else(|| StoreError::RoomNotFound(room.clone()))?;
        Ok(state
            .messages
            .iter()
            .filter(|m| m.seq > after)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn messages_before(
        &self,
        room: &RoomId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let inner = self.lock();
        let state = inner
            .rooms
            .get(room)
            .ok_or_else(|| StoreError::RoomNotFound(room.clone()))?;
        let mut page: Vec<Message> = state
            .messages
            .iter()
            .rev()
            .filter(|m| m.seq < before)
            .take(limit)
            .cloned()
            .collect();
        page.reverse();
        Ok(page)
    }

    async fn mark_read(
        &self,
        user: &UserId,
        room: &RoomId,
        seq: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut inner = self.lock();
        let last = inner
            .rooms
            .get(room)
            .ok_or_else(|| StoreError::RoomNotFound(room.clone()))?
            .record
            .info
            .last_seq;
        let seq = seq.min(last);
        let watermark = inner.reads.entry((user.clone(), room.clone())).or_insert(0);
        if seq > *watermark {
            *watermark = seq;
            Ok(Some(seq))
        } else {
            Ok(None)
        }
    }

    async fn add_notification(&self, n: NewNotification) -> Result<Notification, StoreError> {
        let mut inner = self.lock();
        inner.next_notification += 1;
        let notification = Notification {
            id: inner.next_notification,
            kind: n.kind,
            title: n.title,
            body: n.body,
            data: n.data,
            created_at: now_millis(),
            read_at: None,
        };
        self.emit(EventType::NotificationCreated, None, || {
            WebhookEvent::notification_created(&n.user, &notification)
        });
        if let Some(due) = self.push_due(None, notification.created_at) {
            inner.user_due(&n.user, due);
        }
        let list = inner.notifications.entry(n.user).or_default();
        list.push_back(notification.clone());
        if list.len() > MAX_NOTIFICATIONS {
            list.pop_front();
        }
        Ok(notification)
    }

    async fn notifications(
        &self,
        user: &UserId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let inner = self.lock();
        let Some(list) = inner.notifications.get(user) else {
            return Ok(Vec::new());
        };
        let before = before.unwrap_or(u64::MAX);
        Ok(list
            .iter()
            .rev()
            .filter(|n| n.id < before)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn mark_notifications_read(&self, user: &UserId, ids: &[u64]) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let Some(list) = inner.notifications.get_mut(user) else {
            return Ok(0);
        };
        let now = now_millis();
        let mut changed = 0;
        for n in list
            .iter_mut()
            .filter(|n| n.read_at.is_none() && ids.contains(&n.id))
        {
            n.read_at = Some(now);
            changed += 1;
        }
        Ok(changed)
    }

    async fn unread_notifications(&self, user: &UserId) -> Result<u64, StoreError> {
        let inner = self.lock();
        Ok(inner.notifications.get(user).map_or(0, |l| {
            l.iter().filter(|n| n.read_at.is_none()).count() as u64
        }))
    }

    async fn request_friend(&self, from: &UserId, to: &UserId) -> Result<FriendStatus, StoreError> {
        if from == to {
            return Err(StoreError::SelfDirect);
        }
        let mut inner = self.lock();
        let (forward, backward) = ((from.clone(), to.clone()), (to.clone(), from.clone()));
        if inner.friendships.get(&forward) == Some(&true) {
            return Ok(FriendStatus::Accepted);
        }
        if inner.friendships.contains_key(&backward) {
            inner.friendships.insert(forward, true);
            inner.friendships.insert(backward, true);
            return Ok(FriendStatus::Accepted);
        }
        inner.friendships.insert(forward, false);
        Ok(FriendStatus::Outgoing)
    }

    async fn accept_friend(&self, user: &UserId, from: &UserId) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let (asked, back) = ((from.clone(), user.clone()), (user.clone(), from.clone()));
        if inner.friendships.get(&asked) != Some(&false) {
            return Ok(false);
        }
        inner.friendships.insert(asked, true);
        inner.friendships.insert(back, true);
        Ok(true)
    }

    async fn remove_friend(&self, user: &UserId, other: &UserId) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let a = inner
            .friendships
            .remove(&(user.clone(), other.clone()))
            .is_some();
        let b = inner
            .friendships
            .remove(&(other.clone(), user.clone()))
            .is_some();
        Ok(a || b)
    }

    async fn friends(&self, user: &UserId) -> Result<Vec<Friend>, StoreError> {
        let inner = self.lock();
        let mut friends: BTreeMap<UserId, FriendStatus> = BTreeMap::new();
        for ((asker, asked), accepted) in &inner.friendships {
            let (other, status) = match (asker == user, asked == user, accepted) {
                (true, _, true) => (asked, FriendStatus::Accepted),
                (true, _, false) => (asked, FriendStatus::Outgoing),
                (_, true, false) => (asker, FriendStatus::Incoming),
                _ => continue,
            };
            friends.insert(other.clone(), status);
        }
        Ok(friends
            .into_iter()
            .map(|(id, status)| Friend {
                user: inner.user_ref(&id),
                status,
            })
            .collect())
    }

    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn epoch(&self) -> String {
        self.epoch.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::MessageKind;

    #[tokio::test]
    async fn the_memory_store_meets_the_store_contract() {
        crate::store::contract::run_all(&MemoryStore::new(1_000), "mem").await;
    }

    #[tokio::test]
    async fn the_memory_store_follows_the_push_rule() {
        use crate::store::contract;
        let outbox = std::sync::Arc::new(crate::webhooks::MemoryOutbox::new(1_000));
        let delay = std::time::Duration::from_secs(2);
        let sink = contract::push_sink(Some(std::sync::Arc::clone(&outbox)), delay);
        let store = MemoryStore::new(1_000).with_events(sink);
        contract::push_is_owed_once_to_those_who_did_not_read(&store, &*outbox, "mem", delay).await;
    }

    #[tokio::test]
    async fn history_is_bounded_to_the_latest_messages() {
        let store = MemoryStore::new(100);
        let id = RoomId::parse("general").unwrap();
        let alice = UserRef {
            id: UserId::parse("alice").unwrap(),
            name: "Alice".into(),
        };
        let room = NewRoom {
            id: id.clone(),
            name: "G".into(),
            kind: RoomKind::Public,
            password_hash: None,
            creator: alice.clone(),
            creator_role: Role::owner(),
        };
        store.create_room(room).await.unwrap();
        for i in 0..150 {
            let message = NewMessage {
                room: id.clone(),
                sender: alice.clone(),
                kind: MessageKind::Text,
                content: "x".into(),
                client_msg_id: format!("c{i}"),
            };
            store.append(message).await.unwrap();
        }
        let kept = store.messages_after(&id, 0, 1_000).await.unwrap();
        assert_eq!((kept.len(), kept.first().map(|m| m.seq)), (100, Some(51)));
    }
}

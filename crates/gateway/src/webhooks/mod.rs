//! Webhooks: what happened, told to the app's backend at least once, signed (docs/webhooks.md).
//!
//! - `mod.rs` — the events ([`EventType`], [`WebhookEvent`]: a stable id and the exact body
//!   every attempt sends) and [`EventSink`], through which the stores write an event **with the
//!   change that caused it**: PostgreSQL in the same transaction (a message's webhook commits with
//!   the message), the in-memory store into the memory outbox under the same call;
//! - `outbox.rs` — the [`WebhookOutbox`] trait: claim due webhooks under a lease, settle them;
//!   `memory.rs` the bounded embedded outbox; with PostgreSQL, `store/postgres/webhooks.rs`, the
//!   table every node claims from with `FOR UPDATE SKIP LOCKED`;
//! - `presence.rs` — `user.online` / `user.offline`, decided by the presence backend
//!   (debounced cluster-wide) and written to the outbox under ids that name the announcement;
//! - `push.rs` — `push`: what a user has not read within a delay, one webhook per user per
//!   batch window, made by the stores' passes with the marks that say it was made;
//! - `delivery.rs` — the worker: signed POSTs, retries with exponential backoff and full jitter
//!   for a bounded time, then kept as failed.
//!
//! **Invariant:** an event is delivered at least once, under one id for all its attempts: the
//! app deduplicates by `webhook-id`. Nothing is retried forever and nothing waits unbounded.

mod delivery;
pub mod memory;
mod outbox;
mod presence;
pub mod push;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};
use switchboard_protocol::{Message, Notification, Role, RoomId, UserId};
use tokio::sync::Notify;

pub use self::delivery::Deliveries;
pub use self::memory::MemoryOutbox;
pub use self::outbox::{Claimed, FailedWebhook, WebhookOutbox};
pub use self::presence::PresenceAnnouncer;
pub use self::push::{PushRule, PushWorker};
use crate::config::Config;
use crate::presence::{Announcement, Subject};
use crate::room_pattern::RoomPatterns;

/// Every event a webhook can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, strum::EnumIter)]
pub enum EventType {
    MessageCreated,
    MemberJoined,
    MemberLeft,
    NotificationCreated,
    UserOnline,
    UserOffline,
    RoomOccupied,
    RoomVacated,
    Push,
}

impl EventType {
    /// The `type` of the payload, and the name in `SWITCHBOARD_WEBHOOK_EVENTS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MessageCreated => "message.created",
            Self::MemberJoined => "room.member_joined",
            Self::MemberLeft => "room.member_left",
            Self::NotificationCreated => "notification.created",
            Self::UserOnline => "user.online",
            Self::UserOffline => "user.offline",
            Self::RoomOccupied => "room.occupied",
            Self::RoomVacated => "room.vacated",
            Self::Push => "push",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        <Self as strum::IntoEnumIterator>::iter().find(|e| e.as_str() == name)
    }
}

/// One event, ready to send: its body is fixed when it is made, so every attempt sends (and
/// signs) the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// `webhook-id`: the same for every attempt.
    pub id: String,
    pub kind: EventType,
    /// `{"type", "timestamp", "data"}`.
    pub body: String,
}

/// The payload every webhook carries, as Standard Webhooks suggests.
#[derive(Serialize)]
struct Payload<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    data: &'a T,
}

#[derive(Serialize)]
struct MessageData<'a> {
    message: &'a Message,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MembershipData<'a> {
    room_id: &'a RoomId,
    user_id: &'a UserId,
    /// Joined only: the role they joined with.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a Role>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NotificationData<'a> {
    user_id: &'a UserId,
    notification: &'a Notification,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomData<'a> {
    room_id: &'a RoomId,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PresenceData<'a> {
    user_id: &'a UserId,
    /// Offline only: Unix ms, as in `user:offline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<u64>,
}

impl WebhookEvent {
    fn new(kind: EventType, data: &impl Serialize) -> Self {
        let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
        Self::with_id(id, kind, SystemTime::now(), data)
    }

    fn with_id(id: String, kind: EventType, at: SystemTime, data: &impl Serialize) -> Self {
        let payload = Payload {
            kind: kind.as_str(),
            timestamp: crate::rfc3339::format(at),
            data,
        };
        Self {
            id,
            kind,
            // Our own types with string keys: serializing them cannot fail.
            body: serde_json::to_string(&payload).unwrap_or_default(),
        }
    }

    /// `user.online` / `user.offline`, `room.occupied` / `room.vacated`. The id is derived from
    /// the announcement, so a node that writes it again (the one that decided it died first)
    /// writes the same webhook; the time is when it happened.
    pub fn presence(announcement: &Announcement) -> Self {
        let kind = Self::presence_kind(announcement);
        let (subject, data) = match &announcement.subject {
            Subject::User(user_id) => {
                let last_seen = (!announcement.online).then_some(announcement.at);
                let data = PresenceData { user_id, last_seen };
                (user_id.as_str(), serde_json::to_value(data))
            }
            Subject::Room(room_id) => {
                let data = RoomData { room_id };
                (room_id.as_str(), serde_json::to_value(data))
            }
        };
        let name = format!(
            "{subject}|{}|{}|{}",
            kind.as_str(),
            announcement.generation,
            announcement.at
        );
        let digest = Sha256::digest(name.as_bytes());
        let id = digest[..16]
            .iter()
            .fold(String::from("evt_"), |mut id, byte| {
                use std::fmt::Write as _;
                let _ = write!(id, "{byte:02x}");
                id
            });
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(announcement.at);
        // Our own types with string keys: serializing them cannot fail.
        Self::with_id(id, kind, at, &data.unwrap_or_default())
    }

    /// The event type of a presence announcement.
    pub fn presence_kind(announcement: &Announcement) -> EventType {
        match (&announcement.subject, announcement.online) {
            (Subject::User(_), true) => EventType::UserOnline,
            (Subject::User(_), false) => EventType::UserOffline,
            (Subject::Room(_), true) => EventType::RoomOccupied,
            (Subject::Room(_), false) => EventType::RoomVacated,
        }
    }

    pub fn message_created(message: &Message) -> Self {
        Self::new(EventType::MessageCreated, &MessageData { message })
    }

    pub fn member_joined(room_id: &RoomId, user_id: &UserId, role: &Role) -> Self {
        let data = MembershipData {
            room_id,
            user_id,
            role: Some(role),
        };
        Self::new(EventType::MemberJoined, &data)
    }

    pub fn member_left(room_id: &RoomId, user_id: &UserId) -> Self {
        let data = MembershipData {
            room_id,
            user_id,
            role: None,
        };
        Self::new(EventType::MemberLeft, &data)
    }

    pub fn notification_created(user_id: &UserId, notification: &Notification) -> Self {
        Self::new(
            EventType::NotificationCreated,
            &NotificationData {
                user_id,
                notification,
            },
        )
    }
}

/// Which events the app subscribed to (`SWITCHBOARD_WEBHOOK_EVENTS`, `SWITCHBOARD_WEBHOOK_ROOMS`).
#[derive(Debug, Clone)]
pub struct Subscription {
    events: BTreeSet<EventType>,
    /// Room events only for these rooms.
    rooms: RoomPatterns,
}

impl Subscription {
    pub fn new(events: &[String], rooms: &[String]) -> Result<Self, String> {
        let events = if events.is_empty() {
            <EventType as strum::IntoEnumIterator>::iter().collect()
        } else {
            events
                .iter()
                .map(|name| {
                    EventType::parse(name.trim())
                        .ok_or_else(|| format!("{name:?} is not an event type"))
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Self {
            events,
            rooms: RoomPatterns::parse(rooms)?,
        })
    }

    /// Whether the app wants `kind`; `room` is the room it is about, if any.
    pub fn wants(&self, kind: EventType, room: Option<&RoomId>) -> bool {
        self.events.contains(&kind) && room.is_none_or(|r| self.rooms.matches(r.as_str()))
    }

    /// Whether `kind` is wanted for some room (or is not about a room).
    pub fn wants_any(&self, kind: EventType) -> bool {
        self.events.contains(&kind)
    }

    /// Whether presence must keep who the app was told is online: for `user.online` /
    /// `user.offline`, and for the rooms' occupancy.
    pub fn wants_presence(&self) -> bool {
        [EventType::UserOnline, EventType::UserOffline]
            .into_iter()
            .chain(ROOM_PRESENCE)
            .any(|kind| self.events.contains(&kind))
    }

    /// Whether `room`'s occupancy is wanted (`room.occupied` / `room.vacated`).
    pub fn wants_occupancy(&self, room: &RoomId) -> bool {
        ROOM_PRESENCE
            .into_iter()
            .any(|kind| self.wants(kind, Some(room)))
    }

    /// Whether any room's occupancy is wanted.
    pub fn wants_presence_of_rooms(&self) -> bool {
        ROOM_PRESENCE
            .into_iter()
            .any(|kind| self.events.contains(&kind))
    }
}

/// The events of a room's occupancy.
const ROOM_PRESENCE: [EventType; 2] = [EventType::RoomOccupied, EventType::RoomVacated];

/// Where the stores write the events of their changes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventSink {
    subscription: Arc<Subscription>,
    /// Embedded mode: the outbox the in-memory store writes to. With PostgreSQL the store writes
    /// rows in its own transactions.
    memory: Option<Arc<MemoryOutbox>>,
    /// When `push` is subscribed to.
    push: Option<PushRule>,
    /// Wakes this node's delivery worker when events were written.
    wake: Arc<Notify>,
}

impl EventSink {
    pub fn new(
        subscription: Subscription,
        memory: Option<Arc<MemoryOutbox>>,
        push_delay: Duration,
        wake: Arc<Notify>,
    ) -> Self {
        let push = subscription
            .wants_any(EventType::Push)
            .then(|| PushRule::new(push_delay));
        Self {
            subscription: Arc::new(subscription),
            memory,
            push,
            wake,
        }
    }

    pub fn wants(&self, kind: EventType, room: Option<&RoomId>) -> bool {
        self.subscription.wants(kind, room)
    }

    /// The push rule, when `push` is subscribed to.
    pub fn push(&self) -> Option<PushRule> {
        self.push
    }

    /// The push rule, when `push` is wanted (for `room`'s messages, or for notifications).
    pub fn push_rule(&self, room: Option<&RoomId>) -> Option<PushRule> {
        self.push.filter(|_| self.wants(EventType::Push, room))
    }

    /// Embedded mode: keeps the events in the memory outbox (a full outbox drops them, counted
    /// and logged there) and wakes the worker.
    pub fn keep(&self, events: impl IntoIterator<Item = WebhookEvent>) {
        if let Some(outbox) = &self.memory {
            let mut any = false;
            for event in events {
                outbox.push(event);
                any = true;
            }
            if any {
                self.wake.notify_one();
            }
        }
    }

    /// PostgreSQL: events were committed; the worker looks now instead of at its next poll.
    pub fn committed(&self) {
        self.wake.notify_one();
    }
}

/// The webhook settings of a node, checked.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: http::Uri,
    pub timeout: Duration,
    pub concurrency: usize,
    pub retry_for: Duration,
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub poll: Duration,
}

impl WebhookSettings {
    /// `None` when no webhook URL is configured.
    pub fn from_config(config: &Config) -> Result<Option<Self>, String> {
        let Some(url) = &config.webhook_url else {
            return Ok(None);
        };
        Ok(Some(Self {
            url: crate::outcall::parse_url(url)?,
            timeout: Duration::from_millis(config.webhook_timeout_ms),
            concurrency: config.webhook_concurrency.max(1),
            retry_for: Duration::from_millis(config.webhook_retry_for_ms),
            backoff: Duration::from_millis(config.webhook_backoff_ms.max(1)),
            backoff_max: Duration::from_millis(config.webhook_backoff_max_ms.max(1)),
            poll: Duration::from_millis(config.webhook_poll_ms.max(10)),
        }))
    }

    /// How long a claimed webhook stays this node's: longer than an attempt can take, so a live
    /// node settles it first; a dead node's lease runs out and another node takes it.
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn subscriptions_filter_by_type_and_room() {
        let all = Subscription::new(&[], &["*".to_owned()]).expect("valid");
        let room = RoomId::parse("lobby").expect("valid id");
        assert!(all.wants(EventType::MessageCreated, Some(&room)));
        assert!(all.wants(EventType::NotificationCreated, None));

        let some = Subscription::new(&["message.created".to_owned()], &["game-*".to_owned()])
            .expect("valid");
        assert!(!some.wants(EventType::MessageCreated, Some(&room)));
        let game = RoomId::parse("game-1").expect("valid id");
        assert!(some.wants(EventType::MessageCreated, Some(&game)));
        assert!(!some.wants(EventType::MemberJoined, Some(&game)));
        assert!(Subscription::new(&["message.sent".to_owned()], &[]).is_err());
    }

    #[test]
    fn an_event_has_a_stable_id_and_the_documented_shape() {
        let room = RoomId::parse("lobby").expect("valid id");
        let user = UserId::parse("bob").expect("valid id");
        let event = WebhookEvent::member_joined(&room, &user, &Role::member());
        assert!(event.id.starts_with("evt_"));
        let body: Value = serde_json::from_str(&event.body).expect("JSON");
        assert_eq!(body["type"], "room.member_joined");
        assert_eq!(
            body["data"],
            json!({"roomId": "lobby", "userId": "bob", "role": "member"})
        );
        assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn a_presence_event_is_named_by_its_announcement() {
        let user = UserId::parse("bob").expect("valid id");
        let gone = Announcement {
            subject: Subject::User(user),
            online: false,
            generation: 3,
            at: 1_795_782_708_123,
        };
        let event = WebhookEvent::presence(&gone);
        assert_eq!(
            event,
            WebhookEvent::presence(&gone),
            "written again, the same webhook"
        );
        assert_eq!(event.id.len(), 4 + 32);
        let body: Value = serde_json::from_str(&event.body).expect("JSON");
        assert_eq!(body["type"], "user.offline");
        assert_eq!(body["timestamp"], "2026-11-27T12:31:48.123Z");
        assert_eq!(
            body["data"],
            json!({"userId": "bob", "lastSeen": 1_795_782_708_123_u64})
        );
        let back = WebhookEvent::presence(&Announcement {
            online: true,
            ..gone
        });
        assert_ne!(back.id, event.id);
        let body: Value = serde_json::from_str(&back.body).expect("JSON");
        assert_eq!(body["data"], json!({"userId": "bob"}));

        let room = RoomId::parse("lobby").expect("valid id");
        let vacated = WebhookEvent::presence(&Announcement {
            subject: Subject::Room(room),
            ..gone
        });
        let body: Value = serde_json::from_str(&vacated.body).expect("JSON");
        assert_eq!(body["type"], "room.vacated");
        assert_eq!(body["data"], json!({"roomId": "lobby"}));
    }
}

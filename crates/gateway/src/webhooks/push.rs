//! `push`: what a user has not read, told to the app's backend for a mobile or web push
//! (docs/webhooks.md#push).
//!
//! The rule, which both stores follow (`store/memory.rs`, `store/postgres/push.rs`):
//! - a message makes its room *due* (one mark per room, not per member or message), a
//!   notification makes its user due, at the end of the batch window that holds the moment its
//!   read delay ([`PushRule::delay_ms`]) runs out: windows are aligned to the clock, so every
//!   room and user due in one window is looked at in the same pass;
//! - at a pass, a due room's messages older than the delay are owed to each member who is not
//!   muted, has not read them (read watermark), was not pushed them before, and did not send them
//!   all; a due user's unread notifications older than the delay likewise;
//! - what a user is owed across rooms and notifications becomes **one** `push` webhook, written
//!   with the marks that say it was made in one step, so it is neither lost nor made twice;
//! - a room or user with newer messages stays due for the window of the oldest of them.
//!
//! [`PushWorker`] runs the passes: on every node, one at a time cluster-wide (the store's lock).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use switchboard_protocol::{Message, MessageKind, Millis, Notification, RoomId, UserId, UserRef};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{EventType, WebhookEvent};
use crate::error::Chain;
use crate::store::Store;

/// Characters of a message's content in its push.
pub const PREVIEW_CHARS: usize = 100;
/// Most rooms, and separately most users, looked at per pass.
pub const PASS_LIMIT: usize = 500;
/// How often a node looks for due pushes.
const POLL: Duration = Duration::from_millis(250);

/// When pushes are owed (`SWITCHBOARD_PUSH_DELAY_MS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushRule {
    /// How long a user has to read something before it is pushed; also the batch window.
    pub delay_ms: u64,
}

impl PushRule {
    pub fn new(delay: Duration) -> Self {
        Self {
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).max(1),
        }
    }

    /// When something made at `at` (Unix ms) is looked at: the end of the window in which its
    /// delay runs out.
    pub fn due(&self, at: Millis) -> Millis {
        let ready = at.saturating_add(self.delay_ms);
        ready.div_ceil(self.delay_ms).saturating_mul(self.delay_ms)
    }

    /// At a pass at `now`, what was made at or before this is old enough to push.
    pub fn cutoff(&self, now: Millis) -> Millis {
        now.saturating_sub(self.delay_ms)
    }
}

/// One room in a push: how much is unread there, and the latest message owed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRoom {
    pub room_id: RoomId,
    pub name: String,
    /// `lastSeq - lastReadSeq` as of the pass, counted as `session:ready` counts it.
    pub unread: u64,
    pub message: PushMessage,
}

/// The latest message owed in a room, sent by someone else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushMessage {
    pub message_id: String,
    pub seq: u64,
    pub sender: UserRef,
    pub kind: MessageKind,
    /// The content's first [`PREVIEW_CHARS`] characters.
    pub preview: String,
    pub created_at: Millis,
}

impl PushMessage {
    pub fn of(message: &Message) -> Self {
        Self {
            message_id: message.message_id.clone(),
            seq: message.seq,
            sender: message.sender.clone(),
            kind: message.kind,
            preview: preview(&message.content),
            created_at: message.created_at,
        }
    }
}

/// The user's unread notifications in a push, and the latest one owed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushNotifications {
    pub unread: u64,
    pub latest: PushNotification,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushNotification {
    pub id: u64,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub created_at: Millis,
}

impl PushNotification {
    pub fn of(notification: &Notification) -> Self {
        Self {
            id: notification.id,
            kind: notification.kind.clone(),
            title: notification.title.clone(),
            body: notification.body.clone(),
            created_at: notification.created_at,
        }
    }
}

/// The `data` of one `push` webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
struct PushData<'a> {
    user_id: &'a UserId,
    /// Every room's `unread` plus the unread notifications: a badge count.
    unread: u64,
    rooms: &'a [PushRoom],
    #[serde(skip_serializing_if = "Option::is_none")]
    notifications: Option<&'a PushNotifications>,
}

/// What one pass owes each user, collapsed into one webhook per user.
#[derive(Debug, Default)]
pub struct PushBatch {
    users: BTreeMap<UserId, Owed>,
}

#[derive(Debug, Default)]
struct Owed {
    rooms: Vec<PushRoom>,
    notifications: Option<PushNotifications>,
}

impl PushBatch {
    pub fn room(&mut self, user: UserId, room: PushRoom) {
        self.users.entry(user).or_default().rooms.push(room);
    }

    pub fn notifications(&mut self, user: UserId, notifications: PushNotifications) {
        self.users.entry(user).or_default().notifications = Some(notifications);
    }

    /// One `push` webhook per user, rooms in id order.
    pub fn into_events(self) -> Vec<WebhookEvent> {
        self.users
            .into_iter()
            .map(|(user_id, mut owed)| {
                owed.rooms.sort_by(|a, b| a.room_id.cmp(&b.room_id));
                let unread = owed.rooms.iter().map(|r| r.unread).sum::<u64>()
                    + owed.notifications.as_ref().map_or(0, |n| n.unread);
                WebhookEvent::new(
                    EventType::Push,
                    &PushData {
                        user_id: &user_id,
                        unread,
                        rooms: &owed.rooms,
                        notifications: owed.notifications.as_ref(),
                    },
                )
            })
            .collect()
    }
}

/// The first [`PREVIEW_CHARS`] characters of `content`.
pub fn preview(content: &str) -> String {
    content.chars().take(PREVIEW_CHARS).collect()
}

/// Runs the passes on this node.
#[derive(Debug, Clone)]
pub struct PushWorker {
    store: Arc<dyn Store>,
    /// Rings the delivery worker after a pass wrote webhooks.
    deliver: Arc<Notify>,
}

impl PushWorker {
    pub fn new(store: Arc<dyn Store>, deliver: Arc<Notify>) -> Self {
        Self { store, deliver }
    }

    pub async fn run(self, stop: CancellationToken) {
        loop {
            let again = match self.store.write_due_pushes(SystemTime::now()).await {
                Ok(pass) => {
                    if pass.written > 0 {
                        self.deliver.notify_one();
                    }
                    // A full pass left more due: look again at once.
                    pass.more
                }
                Err(error) => {
                    // Nothing was marked: what is owed stays due for the next pass.
                    tracing::warn!(error = %Chain(&error), "cannot write push webhooks");
                    false
                }
            };
            if again {
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushPass {
    /// `push` webhooks written.
    pub written: usize,
    /// It looked at [`PASS_LIMIT`] rooms or users: more may be due.
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn things_come_due_at_the_end_of_the_window_their_delay_ends_in() {
        let rule = PushRule::new(Duration::from_secs(10));
        assert_eq!(rule.due(0), 10_000);
        assert_eq!(rule.due(1), 20_000);
        assert_eq!(rule.due(9_999), 20_000);
        assert_eq!(rule.due(10_000), 20_000);
        // Made in the same window: due together, looked at in one pass.
        assert_eq!(rule.due(12_345), rule.due(19_000));
        for at in [0, 1, 5_000, 123_456_789] {
            assert!(rule.cutoff(rule.due(at)) >= at, "old enough when due");
            assert!(
                rule.due(at) - at <= 2 * rule.delay_ms,
                "at most two windows later"
            );
        }
    }

    #[test]
    fn a_preview_is_cut_at_a_character_boundary() {
        assert_eq!(preview("hi"), "hi");
        let long = "é".repeat(PREVIEW_CHARS + 5);
        assert_eq!(preview(&long).chars().count(), PREVIEW_CHARS);
    }
}

//! `user.online` / `user.offline` and `room.occupied` / `room.vacated`: the presence backend
//! decides, debounced cluster-wide (`SWITCHBOARD_PRESENCE_GRACE_MS`), and this worker writes
//! each announcement to the outbox, counts a user announced online toward their rooms (and no
//! longer once announced offline), then settles it. Every node runs one; any node may write any
//! announcement, so one whose node died mid-way is written by another under the same id.

use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::{RoomId, UserId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outbox::WebhookOutbox;
use super::{Subscription, WebhookEvent};
use crate::error::Chain;
use crate::presence::{Announcement, Presence, PresenceError, Subject};
use crate::store::{Store, StoreError};

/// Most announcements decided per look.
const BATCH: usize = 100;
/// How long a decided announcement is this node's to write before another node may.
const LEASE: Duration = Duration::from_secs(10);
/// How often a node looks besides being woken by its own connections: offline announcements
/// come due when a grace ends, and other nodes' users are looked at this way too.
const POLL: Duration = Duration::from_millis(250);

/// Why announcements were not written (they stay owed, and come due again after their lease).
#[derive(Debug, thiserror::Error)]
enum AnnounceError {
    #[error("presence unavailable")]
    Presence(#[from] PresenceError),
    #[error("store unavailable")]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct PresenceAnnouncer {
    presence: Arc<dyn Presence>,
    /// Where a user's rooms are read when they come online.
    store: Arc<dyn Store>,
    outbox: Arc<dyn WebhookOutbox>,
    subscription: Subscription,
    grace: Duration,
    /// Rung when a connection of this node changed someone's presence.
    look: Arc<Notify>,
    /// Rings the delivery worker after writing.
    deliver: Arc<Notify>,
}

impl PresenceAnnouncer {
    pub fn new(
        presence: Arc<dyn Presence>,
        store: Arc<dyn Store>,
        outbox: Arc<dyn WebhookOutbox>,
        subscription: Subscription,
        grace: Duration,
        deliver: Arc<Notify>,
    ) -> Self {
        Self {
            presence,
            store,
            outbox,
            subscription,
            grace,
            look: Arc::new(Notify::new()),
            deliver,
        }
    }

    /// A user's first connection came (`None`), or their last went (`Some(last_seen)`).
    pub async fn changed(&self, user: &UserId, offline_since: Option<u64>) {
        match self.presence.watch(user, offline_since).await {
            Ok(()) => self.look.notify_one(),
            Err(error) => {
                tracing::warn!(%user, error = %Chain(&error), "cannot note a presence change for webhooks")
            }
        }
    }

    /// `user` became a member of `room` (`joined`), or stopped being one.
    pub async fn membership_changed(&self, user: &UserId, room: &RoomId, joined: bool) {
        if !self.subscription.wants_occupancy(room) {
            return;
        }
        let rooms = std::slice::from_ref(room);
        let changed = if joined {
            self.presence.enter_rooms(user, rooms).await
        } else {
            self.presence.leave_rooms(user, Some(rooms)).await
        };
        match changed {
            Ok(()) => self.look.notify_one(),
            Err(error) => {
                tracing::warn!(%user, %room, error = %Chain(&error), "cannot note a room's occupancy for webhooks")
            }
        }
    }

    pub async fn run(self, stop: CancellationToken) {
        loop {
            // After any announcement, look again at once: a user's just made their rooms due.
            let again = match self.announce().await {
                Ok(count) => count > 0,
                Err(error) => {
                    // What was decided stays owed: it is handed out again when its lease ends.
                    tracing::warn!(error = %Chain(&error), "cannot write presence webhooks");
                    false
                }
            };
            if again {
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.look.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Writes the announcements due now; returns how many there were.
    async fn announce(&self) -> Result<usize, AnnounceError> {
        let due = self
            .presence
            .due_announcements(BATCH, self.grace, LEASE)
            .await?;
        let total = due.len();
        // Counted first: once the app hears a user is online, their rooms count them.
        let mut counted = Vec::with_capacity(due.len());
        for announcement in due {
            match self.count_toward_rooms(&announcement).await {
                Ok(()) => counted.push(announcement),
                // Not settled: handed out again after its lease, and counted then.
                Err(error) => {
                    tracing::warn!(error = %Chain(&error), "cannot count a user toward their rooms")
                }
            }
        }
        let events: Vec<WebhookEvent> = counted
            .iter()
            .filter(|a| {
                let room = match &a.subject {
                    Subject::Room(room) => Some(room),
                    Subject::User(_) => None,
                };
                self.subscription
                    .wants(WebhookEvent::presence_kind(a), room)
            })
            .map(WebhookEvent::presence)
            .collect();
        if !events.is_empty() {
            self.outbox.enqueue(events).await?;
            self.deliver.notify_one();
        }
        for announcement in &counted {
            if let Err(error) = self.presence.settled(announcement).await {
                // Handed out again after its lease: written again under the same id, not twice.
                tracing::warn!(error = %Chain(&error), "cannot settle a presence announcement");
            }
        }
        Ok(total)
    }

    /// A user announced online counts toward the occupancy of their rooms (those whose events
    /// are wanted); one announced offline no longer counts toward any.
    async fn count_toward_rooms(&self, announcement: &Announcement) -> Result<(), AnnounceError> {
        let Subject::User(user) = &announcement.subject else {
            return Ok(());
        };
        if !self.subscription.wants_presence_of_rooms() {
            return Ok(());
        }
        let counted = if announcement.online {
            let rooms: Vec<RoomId> = self
                .store
                .rooms_of(user)
                .await?
                .into_iter()
                .map(|r| r.room_id)
                .filter(|room| self.subscription.wants_occupancy(room))
                .collect();
            self.presence.enter_rooms(user, &rooms).await
        } else {
            self.presence.leave_rooms(user, None).await
        };
        Ok(counted?)
    }
}

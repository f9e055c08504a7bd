//! `user.online` / `user.offline`: the presence backend decides, debounced cluster-wide
//! (`SWITCHBOARD_PRESENCE_GRACE_MS`), and this worker writes each announcement to the outbox,
//! then settles it. Every node runs one; any node may write any user's announcement, so one
//! whose node died mid-way is written by another under the same id.

use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::UserId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outbox::WebhookOutbox;
use super::{EventType, Subscription, WebhookEvent};
use crate::error::Chain;
use crate::presence::Presence;

/// Announcements decided per look.
const BATCH: usize = 100;
/// How long a decided announcement is this node's to write before another node may.
const LEASE: Duration = Duration::from_secs(10);
/// How often a node looks besides being woken by its own connections: offline announcements
/// come due when a grace ends, and other nodes' users are looked at this way too.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct PresenceAnnouncer {
    presence: Arc<dyn Presence>,
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
        outbox: Arc<dyn WebhookOutbox>,
        subscription: Subscription,
        grace: Duration,
        deliver: Arc<Notify>,
    ) -> Self {
        Self {
            presence,
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

    pub async fn run(self, stop: CancellationToken) {
        loop {
            let full = match self.announce().await {
                Ok(count) => count == BATCH,
                Err(error) => {
                    // What was decided stays owed: it is handed out again when its lease ends.
                    tracing::warn!(%error, "cannot write presence webhooks");
                    false
                }
            };
            if full {
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
    async fn announce(&self) -> Result<usize, String> {
        let due = self
            .presence
            .due_announcements(BATCH, self.grace, LEASE)
            .await
            .map_err(|e| Chain(&e).to_string())?;
        let events: Vec<WebhookEvent> = due
            .iter()
            .filter(|a| {
                let kind = if a.online {
                    EventType::UserOnline
                } else {
                    EventType::UserOffline
                };
                self.subscription.wants(kind, None)
            })
            .map(WebhookEvent::presence)
            .collect();
        if !events.is_empty() {
            self.outbox
                .enqueue(events)
                .await
                .map_err(|e| Chain(&e).to_string())?;
            self.deliver.notify_one();
        }
        for announcement in &due {
            if let Err(error) = self.presence.settled(announcement).await {
                // Handed out again after its lease: written again under the same id, not twice.
                tracing::warn!(user = %announcement.user, error = %Chain(&error), "cannot settle a presence announcement");
            }
        }
        Ok(due.len())
    }
}

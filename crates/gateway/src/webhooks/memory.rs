//! The embedded outbox: webhooks in this process's memory, bounded. A restart loses what it
//! holds (docs/webhooks.md); with PostgreSQL the outbox is a table instead.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::time::Instant;

use super::outbox::{Claimed, FailedWebhook, WebhookOutbox};
use super::{EventType, WebhookEvent};
use crate::metrics;
use crate::store::StoreError;

#[derive(Debug)]
pub struct MemoryOutbox {
    /// Most pending webhooks, and separately most failed ones kept.
    limit: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// In the order made.
    pending: VecDeque<Pending>,
    /// Oldest first; the oldest goes when it is full.
    failed: VecDeque<FailedWebhook>,
}

#[derive(Debug)]
struct Pending {
    id: String,
    kind: EventType,
    body: String,
    attempts: u32,
    created_at: SystemTime,
    retry_from: SystemTime,
    due: Instant,
    /// Claimed until then.
    leased_until: Option<Instant>,
}

impl MemoryOutbox {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Keeps an event; when the outbox is full it is dropped, counted and logged.
    pub fn push(&self, event: WebhookEvent) {
        let mut state = self.lock();
        if state.pending.len() >= self.limit {
            drop(state);
            metrics::webhook_dropped();
            tracing::warn!(id = %event.id, kind = event.kind.as_str(), limit = self.limit, "webhook outbox full: event dropped");
            return;
        }
        let now = SystemTime::now();
        state.pending.push_back(Pending {
            id: event.id,
            kind: event.kind,
            body: event.body,
            attempts: 0,
            created_at: now,
            retry_from: now,
            due: Instant::now(),
            leased_until: None,
        });
    }

    /// Pending webhooks held.
    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data: a panic elsewhere leaves nothing half-written that matters.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn settle(&self, id: &str, settle: impl FnOnce(&mut State, Pending)) {
        let mut state = self.lock();
        if let Some(at) = state.pending.iter().position(|p| p.id == id)
            && let Some(pending) = state.pending.remove(at)
        {
            settle(&mut state, pending);
        }
    }
}

#[async_trait]
impl WebhookOutbox for MemoryOutbox {
    async fn enqueue(&self, events: Vec<WebhookEvent>) -> Result<(), StoreError> {
        // One process, no other writer: nothing here is written twice.
        for event in events {
            self.push(event);
        }
        Ok(())
    }

    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Claimed>, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        let mut claimed = Vec::new();
        for pending in &mut state.pending {
            if claimed.len() >= max {
                break;
            }
            let free = pending.leased_until.is_none_or(|until| until <= now);
            if pending.due <= now && free {
                pending.leased_until = Some(now + lease);
                pending.attempts += 1;
                claimed.push(Claimed {
                    id: pending.id.clone(),
                    kind: pending.kind.as_str().to_owned(),
                    body: pending.body.clone(),
                    attempts: pending.attempts,
                    created_at: pending.created_at,
                    retry_from: pending.retry_from,
                });
            }
        }
        Ok(claimed)
    }

    async fn delivered(&self, ids: &[String]) -> Result<(), StoreError> {
        for id in ids {
            self.settle(id, |_, _| {});
        }
        Ok(())
    }

    async fn retry_later(&self, id: &str, delay: Duration, _error: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some(pending) = state.pending.iter_mut().find(|p| p.id == id) {
            pending.due = Instant::now() + delay;
            pending.leased_until = None;
        }
        Ok(())
    }

    async fn give_up(&self, id: &str, error: &str) -> Result<(), StoreError> {
        let limit = self.limit;
        self.settle(id, |state, pending| {
            if state.failed.len() >= limit {
                state.failed.pop_front();
            }
            state.failed.push_back(FailedWebhook {
                id: pending.id,
                kind: pending.kind.as_str().to_owned(),
                body: pending.body,
                attempts: pending.attempts,
                created_at: pending.created_at,
                failed_at: SystemTime::now(),
                last_error: error.to_owned(),
            });
        });
        Ok(())
    }

    async fn failed(&self, limit: usize) -> Result<Vec<FailedWebhook>, StoreError> {
        Ok(self
            .lock()
            .failed
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn retry_failed(&self, id: &str) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let Some(at) = state.failed.iter().position(|f| f.id == id) else {
            return Ok(false);
        };
        if state.pending.len() >= self.limit {
            return Err(StoreError::unavailable("the webhook outbox is full"));
        }
        let Some(failed) = state.failed.remove(at) else {
            return Ok(false);
        };
        let Some(kind) = EventType::parse(&failed.kind) else {
            return Ok(false);
        };
        state.pending.push_back(Pending {
            id: failed.id,
            kind,
            body: failed.body,
            attempts: failed.attempts,
            created_at: failed.created_at,
            retry_from: SystemTime::now(),
            due: Instant::now(),
            leased_until: None,
        });
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::{Role, RoomId, UserId};

    fn event() -> WebhookEvent {
        WebhookEvent::member_joined(
            &RoomId::parse("lobby").expect("valid"),
            &UserId::parse("bob").expect("valid"),
            &Role::member(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_leases_until_settled_or_the_lease_runs_out() {
        let outbox = MemoryOutbox::new(10);
        let e = event();
        outbox.push(e.clone());
        let lease = Duration::from_secs(5);
        let first = outbox.claim(10, lease).await.expect("claim");
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].id.as_str(), first[0].attempts),
            (e.id.as_str(), 1)
        );
        assert!(
            outbox.claim(10, lease).await.expect("claim").is_empty(),
            "leased"
        );

        tokio::time::advance(lease).await;
        let again = outbox.claim(10, lease).await.expect("claim");
        assert_eq!(again[0].attempts, 2, "a lapsed lease: claimed again");

        outbox
            .retry_later(&e.id, Duration::from_secs(60), "HTTP 500")
            .await
            .expect("settle");
        assert!(outbox.claim(10, lease).await.expect("claim").is_empty());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(outbox.claim(10, lease).await.expect("claim").len(), 1);
        outbox
            .delivered(std::slice::from_ref(&e.id))
            .await
            .expect("settle");
        assert!(outbox.is_empty());
    }

    #[tokio::test]
    async fn a_full_outbox_drops_and_failed_ones_can_be_sent_again() {
        let outbox = MemoryOutbox::new(2);
        let (a, b) = (event(), event());
        outbox.push(a.clone());
        outbox.push(b.clone());
        outbox.push(event());
        assert_eq!(outbox.len(), 2, "the third was dropped");

        outbox
            .claim(1, Duration::from_secs(5))
            .await
            .expect("claim");
        outbox.give_up(&a.id, "HTTP 410").await.expect("settle");
        let failed = outbox.failed(10).await.expect("list");
        assert_eq!(failed.len(), 1);
        assert_eq!(
            (failed[0].id.as_str(), failed[0].last_error.as_str()),
            (a.id.as_str(), "HTTP 410")
        );
        assert!(outbox.retry_failed(&a.id).await.expect("retry"));
        assert!(!outbox.retry_failed(&a.id).await.expect("retry"), "once");
        assert!(outbox.failed(10).await.expect("list").is_empty());
        let ids: Vec<String> = outbox
            .claim(10, Duration::from_secs(5))
            .await
            .expect("claim")
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, [b.id, a.id]);
    }
}

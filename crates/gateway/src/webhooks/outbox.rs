//! The outbox the delivery worker reads: webhooks waiting for their next attempt, and the ones
//! kept as failed.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::WebhookEvent;
use crate::store::StoreError;

/// A webhook leased to this node for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The event id: `webhook-id`.
    pub id: String,
    /// The event type, e.g. `message.created`.
    pub kind: String,
    pub body: String,
    /// Attempts so far, this one included.
    pub attempts: u32,
    pub created_at: SystemTime,
    /// Where its retry window began: when it was made, or when the app sent a failed one again.
    pub retry_from: SystemTime,
}

/// A webhook whose retries ran out, kept for the app to see and to send again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedWebhook {
    pub id: String,
    pub kind: String,
    pub body: String,
    pub attempts: u32,
    pub created_at: SystemTime,
    pub failed_at: SystemTime,
    /// What the last attempt met: an HTTP status, a timeout, a refused connection.
    pub last_error: String,
}

/// Pending and failed webhooks. Implementations: [`super::MemoryOutbox`] (embedded, bounded),
/// and the PostgreSQL store's table (`store/postgres/webhooks.rs`, shared by every node).
#[async_trait]
pub trait WebhookOutbox: Send + Sync + std::fmt::Debug {
    /// Writes events that no store change carries (presence). An event whose id is already
    /// there is not written twice.
    async fn enqueue(&self, events: Vec<WebhookEvent>) -> Result<(), StoreError>;

    /// Up to `max` webhooks due now, each leased to the caller for `lease`: nobody else claims
    /// it before the lease ends, and a lease that ends unsettled (its node died) makes it due
    /// again. Each claim counts as an attempt.
    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Claimed>, StoreError>;

    /// Delivered: forget them. Called with batches: one write settles many.
    async fn delivered(&self, ids: &[String]) -> Result<(), StoreError>;

    /// Not delivered: due again after `delay`.
    async fn retry_later(&self, id: &str, delay: Duration, error: &str) -> Result<(), StoreError>;

    /// Not delivered, and out of time: kept as failed.
    async fn give_up(&self, id: &str, error: &str) -> Result<(), StoreError>;

    /// Failed webhooks, newest first.
    async fn failed(&self, limit: usize) -> Result<Vec<FailedWebhook>, StoreError>;

    /// A failed webhook due again now, with a new retry window; false when there is none by
    /// that id.
    async fn retry_failed(&self, id: &str) -> Result<bool, StoreError>;
}

//! The delivery worker: claims due webhooks, POSTs each signed, and settles it: delivered,
//! retried later (exponential backoff with full jitter), or, once its retry window is over,
//! kept as failed. One worker per node; with PostgreSQL every node's worker claims from the same
//! table, and a lease keeps two from sending the same webhook at once. Deliveries are recorded
//! in batches (`settle_delivered`): one write forgets many webhooks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::WebhookSettings;
use super::outbox::{Claimed, WebhookOutbox};
use crate::error::Chain;
use crate::metrics;
use crate::outcall::Outcall;

/// Most delivered webhooks recorded in one write.
const SETTLE_BATCH: usize = 512;
/// Under light load a claim or a record of deliveries would carry one webhook or two, and cost
/// the database a transaction each: they wait this long for company (unless the last claim
/// was full: then there is a backlog and no waiting).
const GATHER: Duration = Duration::from_millis(10);

/// The worker's parts.
#[derive(Debug, Clone)]
pub struct Deliveries {
    pub outbox: Arc<dyn WebhookOutbox>,
    pub settings: WebhookSettings,
    pub outcall: Outcall,
    /// Rung when this node wrote events; otherwise the worker looks every `settings.poll`.
    pub wake: Arc<Notify>,
}

impl Deliveries {
    /// Delivers until `stop`. In-flight attempts are left to finish or to their lease.
    pub async fn run(self, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        // Bounded: an attempt waits for room, so delivered ids never pile up unrecorded.
        let (delivered, settled) = mpsc::channel(self.settings.concurrency.max(SETTLE_BATCH));
        tokio::spawn(settle_delivered(Arc::clone(&self.outbox), settled));
        let mut last_claim: Option<(tokio::time::Instant, bool)> = None;
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => return,
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            if let Some((at, false)) = last_claim {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(at + GATHER) => {}
                }
            }
            let free = 1 + slots.available_permits();
            let started = tokio::time::Instant::now();
            let claimed = match self.outbox.claim(free, self.settings.lease()).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(error = %Chain(&error), "cannot claim webhooks");
                    Vec::new()
                }
            };
            last_claim = Some((started, claimed.len() >= free));
            if claimed.is_empty() {
                drop(first);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(self.settings.poll) => {}
                }
                continue;
            }
            let mut slot = Some(first);
            for webhook in claimed {
                let slot = match slot.take() {
                    Some(slot) => slot,
                    // Claimed no more than the free slots; one is free for each.
                    None => match Arc::clone(&slots).try_acquire_owned() {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                };
                let worker = self.clone();
                let delivered = delivered.clone();
                tokio::spawn(async move {
                    if let Some(id) = worker.attempt(webhook).await {
                        // The worker is gone only when the node stops: the lease runs out and
                        // the webhook is sent again, at least once.
                        let _ = delivered.send(id).await;
                    }
                    drop(slot);
                });
            }
        }
    }

    /// One attempt, settled in the outbox unless it was delivered: then its id is returned, for
    /// the batch that records deliveries.
    async fn attempt(&self, mut webhook: Claimed) -> Option<String> {
        let settings = &self.settings;
        let body = Bytes::from(std::mem::take(&mut webhook.body).into_bytes());
        let sent = tokio::time::timeout(
            settings.timeout,
            self.outcall.post(&settings.url, &webhook.id, body),
        )
        .await;
        let error = match sent {
            Ok(Ok((status, _))) if status.is_success() => {
                metrics::webhook_attempt("delivered");
                if let Ok(age) = SystemTime::now().duration_since(webhook.created_at) {
                    metrics::webhook_latency(age);
                }
                return Some(webhook.id);
            }
            Ok(Ok((status, _))) => format!("HTTP {}", status.as_u16()),
            Ok(Err(error)) => Chain(&error).to_string(),
            Err(_) => format!("no answer within {:?}", settings.timeout),
        };
        let window_over = SystemTime::now()
            .duration_since(webhook.retry_from)
            .is_ok_and(|spent| spent >= settings.retry_for);
        let settled = if window_over {
            metrics::webhook_attempt("failed");
            metrics::webhook_failed();
            tracing::warn!(id = %webhook.id, kind = %webhook.kind, attempts = webhook.attempts, %error, "webhook failed: retries exhausted");
            self.outbox.give_up(&webhook.id, &error).await
        } else {
            metrics::webhook_attempt("retry");
            let delay = backoff(settings, webhook.attempts);
            tracing::debug!(id = %webhook.id, attempts = webhook.attempts, ?delay, %error, "webhook not delivered; retrying");
            self.outbox.retry_later(&webhook.id, delay, &error).await
        };
        if let Err(error) = settled {
            tracing::warn!(id = %webhook.id, error = %Chain(&error), "cannot record a webhook attempt");
        }
        None
    }
}

/// Records deliveries many per write: whatever arrived while the last write ran, or within
/// [`GATHER`] of the first, goes in the next one.
async fn settle_delivered(outbox: Arc<dyn WebhookOutbox>, mut delivered: mpsc::Receiver<String>) {
    let mut batch = Vec::with_capacity(SETTLE_BATCH);
    while delivered.recv_many(&mut batch, SETTLE_BATCH).await > 0 {
        if batch.len() < SETTLE_BATCH {
            tokio::time::sleep(GATHER).await;
            while batch.len() < SETTLE_BATCH {
                match delivered.try_recv() {
                    Ok(id) => batch.push(id),
                    Err(_) => break,
                }
            }
        }
        if let Err(error) = outbox.delivered(&batch).await {
            // Their leases run out and they are sent again: at least once.
            tracing::warn!(webhooks = batch.len(), error = %Chain(&error), "cannot record delivered webhooks");
        }
        batch.clear();
    }
}

/// Full jitter: a random wait up to `backoff × 2^(attempts-1)`, capped at `backoff_max`.
fn backoff(settings: &WebhookSettings, attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    let cap = settings
        .backoff
        .saturating_mul(1 << exponent)
        .min(settings.backoff_max);
    let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_up_to_its_cap_with_full_jitter() {
        let settings = WebhookSettings {
            url: "http://127.0.0.1/".parse().expect("a URL"),
            timeout: Duration::from_secs(1),
            concurrency: 1,
            retry_for: Duration::from_secs(60),
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1_000),
            poll: Duration::from_secs(1),
        };
        for (attempts, cap) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (40, 1_000),
        ] {
            let waits: Vec<Duration> = (0..200).map(|_| backoff(&settings, attempts)).collect();
            assert!(
                waits.iter().all(|w| *w <= Duration::from_millis(cap)),
                "attempt {attempts}: {waits:?}"
            );
            // Jittered: not all the same (200 draws from hundreds of values).
            assert!(waits.iter().any(|w| *w != waits[0]), "attempt {attempts}");
        }
    }
}

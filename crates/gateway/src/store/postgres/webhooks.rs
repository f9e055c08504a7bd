//! The webhook outbox on PostgreSQL (`switchboard_webhooks`, migration 0005): the stores write
//! rows in the transactions of their changes (`batch.rs`, `queries.rs`); every node's delivery
//! worker claims from here. `FOR UPDATE SKIP LOCKED` lets workers claim side by side without
//! waiting on each other, and the lease (`locked_until`) keeps a claimed row from being sent by
//! another node until its worker settles it, or dies and the lease runs out.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use switchboard_protocol::RoomId;

use super::PgStore;
use super::error::unavailable;
use super::rows::get;
use crate::store::StoreError;
use crate::webhooks::{Claimed, EventType, FailedWebhook, WebhookEvent, WebhookOutbox};

/// The columns of [`WebhookEvent`]s to insert, as arrays for `unnest`.
#[derive(Debug, Default)]
pub(super) struct EventRows {
    pub(super) ids: Vec<String>,
    pub(super) kinds: Vec<&'static str>,
    pub(super) bodies: Vec<String>,
}

impl EventRows {
    pub(super) fn push(&mut self, event: WebhookEvent) {
        self.ids.push(event.id);
        self.kinds.push(event.kind.as_str());
        self.bodies.push(event.body);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Inserts [`EventRows`] (`$1` ids, `$2` types, `$3` bodies).
pub(super) const INSERT_EVENTS: &str = "INSERT INTO switchboard_webhooks (event_id, type, body) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[])";

/// As [`INSERT_EVENTS`], leaving out events already there.
const INSERT_NEW_EVENTS: &str = "INSERT INTO switchboard_webhooks (event_id, type, body) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
     ON CONFLICT (event_id) DO NOTHING";

/// An event's id and body as statement parameters; both NULL for none.
pub(super) fn event_columns(event: Option<&WebhookEvent>) -> (Option<&str>, Option<&str>) {
    (event.map(|e| e.id.as_str()), event.map(|e| e.body.as_str()))
}

impl PgStore {
    pub(super) fn wants_event(&self, kind: EventType, room: Option<&RoomId>) -> bool {
        self.events
            .as_ref()
            .is_some_and(|sink| sink.wants(kind, room))
    }

    /// `make`'s event when the app subscribed to `kind` (in `room`).
    pub(super) fn event_for(
        &self,
        kind: EventType,
        room: Option<&RoomId>,
        make: impl FnOnce() -> WebhookEvent,
    ) -> Option<WebhookEvent> {
        self.wants_event(kind, room).then(make)
    }

    /// Wakes this node's worker after a commit that wrote events.
    pub(super) fn events_committed(&self, wrote: bool) {
        if wrote && let Some(sink) = &self.events {
            sink.committed();
        }
    }
}

impl PgStore {
    /// One statement in a transaction that does not wait for its commit to reach the disk.
    /// For claims and deletions of delivered webhooks only: one lost in a PostgreSQL crash
    /// makes a webhook due again, which sends it once more, and at least once holds; the
    /// event rows themselves are written with the changes, durably.
    async fn relaxed(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(unavailable)?;
            let statement = tx.prepare_cached(sql).await.map_err(unavailable)?;
            // Sent together: one round trip for both.
            let (_, rows) = tokio::try_join!(
                tx.batch_execute("SET LOCAL synchronous_commit = off"),
                tx.query(&statement, params)
            )
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(rows)
        })
        .await
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl WebhookOutbox for PgStore {
    async fn enqueue(&self, events: Vec<WebhookEvent>) -> Result<(), StoreError> {
        let mut rows = EventRows::default();
        for event in events {
            rows.push(event);
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.execute(INSERT_NEW_EVENTS, &[&rows.ids, &rows.kinds, &rows.bodies])
            .await
            .map(drop)
    }

    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Claimed>, StoreError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = self
            .relaxed(
                "UPDATE switchboard_webhooks w
                 SET locked_until = now() + $2::bigint * interval '1 millisecond',
                     attempts = w.attempts + 1
                 FROM (SELECT id FROM switchboard_webhooks
                       WHERE failed_at IS NULL AND next_attempt_at <= now()
                         AND (locked_until IS NULL OR locked_until <= now())
                       ORDER BY next_attempt_at, id
                       LIMIT $1
                       FOR UPDATE SKIP LOCKED) due
                 WHERE w.id = due.id
                 RETURNING w.event_id, w.type, w.body, w.attempts, w.created_at, w.retry_from",
                &[&max, &millis(lease)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let attempts: i32 = get(row, 3)?;
                Ok(Claimed {
                    id: get(row, 0)?,
                    kind: get(row, 1)?,
                    body: get(row, 2)?,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                    created_at: get(row, 4)?,
                    retry_from: get(row, 5)?,
                })
            })
            .collect()
    }

    async fn delivered(&self, ids: &[String]) -> Result<(), StoreError> {
        self.relaxed(
            "DELETE FROM switchboard_webhooks WHERE event_id = ANY($1::text[])",
            &[&ids],
        )
        .await
        .map(drop)
    }

    async fn retry_later(&self, id: &str, delay: Duration, error: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE switchboard_webhooks
             SET next_attempt_at = now() + $2::bigint * interval '1 millisecond',
                 locked_until = NULL, last_error = $3
             WHERE event_id = $1",
            &[&id, &millis(delay), &error],
        )
        .await
        .map(drop)
    }

    async fn give_up(&self, id: &str, error: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE switchboard_webhooks
             SET failed_at = now(), locked_until = NULL, last_error = $2
             WHERE event_id = $1",
            &[&id, &error],
        )
        .await
        .map(drop)
    }

    async fn failed(&self, limit: usize) -> Result<Vec<FailedWebhook>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                "SELECT event_id, type, body, attempts, created_at, failed_at,
                        coalesce(last_error, '')
                 FROM switchboard_webhooks WHERE failed_at IS NOT NULL
                 ORDER BY failed_at DESC, id DESC LIMIT $1",
                &[&limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let attempts: i32 = get(row, 3)?;
                let failed_at: SystemTime = get(row, 5)?;
                Ok(FailedWebhook {
                    id: get(row, 0)?,
                    kind: get(row, 1)?,
                    body: get(row, 2)?,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                    created_at: get(row, 4)?,
                    failed_at,
                    last_error: get(row, 6)?,
                })
            })
            .collect()
    }

    async fn retry_failed(&self, id: &str) -> Result<bool, StoreError> {
        let updated = self
            .execute(
                "UPDATE switchboard_webhooks
                 SET failed_at = NULL, retry_from = now(), next_attempt_at = now()
                 WHERE event_id = $1 AND failed_at IS NOT NULL",
                &[&id],
            )
            .await?;
        Ok(updated > 0)
    }
}

//! The transactional outbox: the app inserts a row into `switchboard_outbox` in its own
//! transaction, and the message is appended to its room exactly when that transaction commits,
//! once, as if the server API had published it.
//!
//! Every gateway with PostgreSQL runs a relay (unless `SWITCHBOARD_OUTBOX_RELAY=false`). It wakes
//! on `NOTIFY switchboard_outbox` (a trigger sends it when an insert commits) and every
//! [`POLL`] in case a notification was missed, and drains in batches. A batch is one
//! transaction: an advisory transaction lock (one relay at a time, so rows are appended in `id`
//! order), the oldest rows `FOR UPDATE SKIP LOCKED`, their append (idempotent: each row's
//! `clientMsgId` is `outbox-<id>`), their publication, and their deletion, committed last. A relay
//! that dies mid-batch leaves the rows in place and unlocked; the next batch appends them again,
//! which the store answers with the messages already stored, so each row is one message. Rows
//! are deleted only after the broker confirmed their publication ([`Broker::flush`]): a message
//! stored but never published would reach other nodes only with the room's next message.
//!
//! [`Broker::flush`]: crate::broker::Broker::flush

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use switchboard_protocol::{MessageKind, RoomId, UserId, UserRef};
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::error::unavailable;
use crate::app::App;
use crate::auth::display_name;
use crate::store::{NewMessage, StoreError};
use crate::{actions, metrics};

/// Rows one batch takes.
const BATCH: i64 = 256;
/// How often a relay looks without being woken (a lost notification, a reconnect).
pub const POLL: Duration = Duration::from_secs(1);
/// The advisory lock that lets one relay drain at a time ("sbx" + "outbox" in ASCII).
const RELAY_LOCK: i64 = 0x7362_786f_7574_626f;

/// What a relay needs of the store: its pool for batches, and its connection settings for the
/// connection that listens.
#[derive(Clone)]
pub struct Outbox {
    pub(super) pool: Pool,
    pub(super) pg: tokio_postgres::Config,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox")
    }
}

impl Outbox {
    /// Relays until the node shuts down.
    pub async fn run(self, app: Arc<App>) {
        let wake = Arc::new(Notify::new());
        tokio::spawn(listen(
            self.pg.clone(),
            Arc::clone(&wake),
            app.shutdown.clone(),
        ));
        loop {
            if let Err(error) = self.drain(&app).await {
                tracing::warn!(error = %crate::error::Chain(&error), "outbox relay failed; retrying");
            }
            tokio::select! {
                () = app.shutdown.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Relays batches until one comes back short.
    async fn drain(&self, app: &App) -> Result<(), StoreError> {
        while self.relay_batch(app).await? == BATCH as usize {}
        Ok(())
    }

    /// Relays the oldest rows; returns how many it took (0 when another relay holds the lock).
    async fn relay_batch(&self, app: &App) -> Result<usize, StoreError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RELAY_LOCK])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(unavailable)?;
        if !locked {
            return Ok(0);
        }
        let rows = tx
            .query(
                "SELECT id, room, content, kind, sender_id, sender_name FROM switchboard_outbox \
                 WHERE failed_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&BATCH],
            )
            .await
            .map_err(unavailable)?;
        let taken = rows.len();
        if taken == 0 {
            return Ok(0);
        }
        let mut failed: Vec<(i64, String)> = Vec::new();
        let mut ids = Vec::new();
        let mut messages = Vec::new();
        for row in &rows {
            let id: i64 = row.try_get(0).map_err(unavailable)?;
            match message(app, id, row) {
                Ok(message) => {
                    ids.push(id);
                    messages.push(message);
                }
                Err(why) => failed.push((id, why)),
            }
        }
        let mut relayed = Vec::new();
        let mut unavailable_now = None;
        for (id, answer) in ids.into_iter().zip(app.store.append_many(messages).await) {
            match answer {
                Ok(appended) => {
                    if !appended.duplicate {
                        metrics::message_stored();
                    }
                    // Published before the row is deleted: a relay that dies in between
                    // appends the row again, which finds the message stored and publishes it
                    // again; receivers drop the repeat.
                    actions::publish_message(app, appended.message, None).await;
                    relayed.push(id);
                }
                Err(StoreError::RoomNotFound(room)) => {
                    failed.push((id, format!("room {room} does not exist")));
                }
                // Left in place for the next batch.
                Err(error) => unavailable_now = Some(error),
            }
        }
        if !relayed.is_empty() {
            // The rows go only once their messages are on their way to every node: a relay
            // killed before that must leave them for the next one to publish.
            app.broker.flush().await.map_err(StoreError::unavailable)?;
        }
        tx.execute(
            "DELETE FROM switchboard_outbox WHERE id = ANY($1)",
            &[&relayed],
        )
        .await
        .map_err(unavailable)?;
        if !failed.is_empty() {
            let (ids, errors): (Vec<i64>, Vec<String>) = failed.into_iter().unzip();
            tx.execute(
                "UPDATE switchboard_outbox o SET failed_at = now(), error = f.error \
                 FROM unnest($1::bigint[], $2::text[]) AS f(id, error) WHERE o.id = f.id",
                &[&ids, &errors],
            )
            .await
            .map_err(unavailable)?;
            for (id, error) in ids.iter().zip(&errors) {
                tracing::warn!(id, %error, "outbox row cannot be relayed; kept as failed");
            }
            metrics::outbox_failed(ids.len() as u64);
        }
        tx.commit().await.map_err(unavailable)?;
        metrics::outbox_relayed(relayed.len() as u64);
        match unavailable_now {
            Some(error) => Err(error),
            None => Ok(taken),
        }
    }
}

/// A row as a message, or why it cannot be one.
fn message(app: &App, id: i64, row: &tokio_postgres::Row) -> Result<NewMessage, String> {
    let text = |i: usize| -> Result<Option<String>, String> {
        row.try_get::<_, Option<String>>(i)
            .map_err(|e| e.to_string())
    };
    let room = RoomId::parse(text(1)?.unwrap_or_default()).map_err(|e| e.to_string())?;
    let client_msg_id = format!("outbox-{id}");
    let content = actions::check_message(&app.config, text(2)?.unwrap_or_default(), &client_msg_id)
        .map_err(|e| e.to_string())?;
    let kind = match text(3)?.as_deref() {
        Some("text") | None => MessageKind::Text,
        Some("image") => MessageKind::Image,
        Some("file") => MessageKind::File,
        Some(other) => return Err(format!("kind {other:?} is not text, image or file")),
    };
    let sender = match text(4)? {
        None => actions::system_user(),
        Some(id) if id == actions::SYSTEM_USER_ID => actions::system_user(),
        Some(id) => {
            let id = UserId::parse(id).map_err(|e| e.to_string())?;
            UserRef {
                name: display_name(text(5)?.as_deref(), &id),
                id,
            }
        }
    };
    Ok(NewMessage {
        room,
        sender,
        kind,
        content,
        client_msg_id,
    })
}

/// Keeps a connection listening for `switchboard_outbox` and wakes the relay on each
/// notification, reconnecting after a pause when the connection fails.
async fn listen(pg: tokio_postgres::Config, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        match pg.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let subscribe = client.batch_execute("LISTEN switchboard_outbox");
                tokio::pin!(subscribe);
                let mut listening = false;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        done = &mut subscribe, if !listening => {
                            if let Err(error) = done {
                                tracing::warn!(%error, "outbox: LISTEN failed");
                                break;
                            }
                            listening = true;
                            // Whatever committed before the LISTEN took effect.
                            wake.notify_one();
                        }
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                            Some(Ok(_)) => {}
                            Some(Err(error)) => {
                                tracing::warn!(%error, "outbox: the listening connection failed");
                                break;
                            }
                            None => break,
                        },
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "outbox: cannot connect to listen"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

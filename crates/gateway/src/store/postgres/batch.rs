//! Group commit: concurrent appends share one transaction.
//!
//! [`PgStore::append`](super::PgStore) puts the message on a bounded queue (a *lane*; a room
//! always uses the same lane, so a room's messages are sequenced in arrival order) and awaits
//! a reply. Each lane's [`Committer`] takes what is queued, waits up to the batch delay for more
//! (counted from when the oldest was queued) or until the batch is full, then in one
//! transaction:
//!
//! 1. locks the batch's rooms, in id order (`SELECT … ORDER BY id FOR NO KEY UPDATE`), so
//!    committers on this or another gateway never deadlock and never interleave seqs in a room
//!    (`NO KEY`: inserting members or watermarks, which only share-lock the room's key, does not
//!    wait for the batch);
//! 2. gives each new message its room's next seq ([`Plan::assign`]), moves every room's
//!    `last_seq` in one `UPDATE … FROM unnest(…)`, and inserts every new row in one
//!    `INSERT … SELECT … FROM unnest(…) ON CONFLICT (room, sender, client_msg_id) DO NOTHING`;
//! 3. commits, and only then replies to every waiter.
//!
//! Idempotency is optimistic: a retried `clientMsgId` is rare, and looking up every key of every
//! batch costs PostgreSQL a fifth of its time per message (see docs/benchmarks.md). When the
//! insert skipped a row, a key was stored before: the transaction is rolled back (so no seq is
//! taken) and run again with a lookup of the batch's `(room, sender, clientMsgId)` keys after
//! the locks (so a concurrent writer's row for a locked room is committed and seen), which
//! answers those keys with the original.
//!
//! A retried key gets the original (`duplicate: true`), whether the original is in the table or
//! in the same batch. A message for a missing room gets `RoomNotFound`; the others are unaffected.
//! If the transaction fails before `COMMIT` is sent, every waiter of the batch gets
//! `Unavailable`: nothing was stored. If no answer to `COMMIT` comes (the timeout, a lost
//! connection), they get `OutcomeUnknown`: PostgreSQL may still commit. Either way the client
//! retries with the same `clientMsgId`, which settles it. A unique violation (a writer that did not
//! lock, or a race this design does not foresee) runs the transaction again, which then finds
//! the original row.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use switchboard_protocol::{Message, RoomId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;

use super::error::{TimedOut, is_race, timed_out};
use super::rows::{self, message_columns, to_i64, to_u64};
use super::webhooks;
use crate::error::Chain;
use crate::store::{Appended, NewMessage, StoreError};
use crate::webhooks::{EventSink, EventType, WebhookEvent};

/// Transactions committed by the group committers: with the messages stored
/// (`switchboard_messages_stored_total`), how many messages share a commit.
pub const COMMITS: &str = "switchboard_store_commits_total";

/// Times a batch's transaction is tried when it lost a race to another writer or met a stored
/// key (the first try does not look keys up).
const MAX_ATTEMPTS: usize = 3;

/// A message waiting for its batch.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) message: NewMessage,
    /// When it was queued: the batch delay counts from its oldest message.
    pub(super) queued_at: Instant,
    pub(super) reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// What the committers have done, for tests and the benchmark.
#[derive(Debug, Default)]
pub(super) struct Stats {
    /// Transactions committed by the group committers.
    pub(super) batches: AtomicU64,
    /// New rows they inserted (duplicates not counted).
    pub(super) messages: AtomicU64,
}

/// One lane's writer: the only task that writes messages of its rooms.
#[derive(Debug)]
pub(super) struct Committer {
    pub(super) pool: Pool,
    pub(super) queue: mpsc::Receiver<Pending>,
    pub(super) max_messages: usize,
    pub(super) max_delay: Duration,
    /// Bounds one batch's transaction, retries included.
    pub(super) timeout: Duration,
    pub(super) stats: Arc<Stats>,
    /// With webhooks: `message.created` events written in each batch's transaction.
    pub(super) events: Option<EventSink>,
}

impl Committer {
    /// Commits batches until every sender (the store) is gone.
    pub(super) async fn run(mut self) {
        let max = self.max_messages.max(1);
        let mut batch = Vec::with_capacity(max);
        loop {
            if self.queue.recv_many(&mut batch, max).await == 0 {
                return;
            }
            // The queue is FIFO: the first message is the one that has waited longest.
            let oldest = batch
                .first()
                .map_or_else(Instant::now, |p: &Pending| p.queued_at);
            let deadline = oldest + self.max_delay;
            while batch.len() < max {
                let room_left = max - batch.len();
                let more = self.queue.recv_many(&mut batch, room_left);
                match tokio::time::timeout_at(deadline, more).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            self.commit(std::mem::take(&mut batch)).await;
        }
    }

    /// Writes one batch and answers each of its waiters.
    async fn commit(&self, batch: Vec<Pending>) {
        // A waiter that gave up was told "unavailable": do not store its message behind its back.
        let (batch, abandoned): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|p| !p.reply.is_closed());
        if !abandoned.is_empty() {
            tracing::debug!(
                count = abandoned.len(),
                "dropping appends whose callers timed out"
            );
        }
        if batch.is_empty() {
            return;
        }
        let plan = Plan::new(batch.iter().map(|p| &p.message));
        let deadline = Instant::now() + self.timeout;
        let mut attempt = 0;
        let mut look_up = false;
        // Set once `COMMIT` is on its way: from then on a timeout or a lost connection leaves the
        // outcome unknown, since PostgreSQL may still commit (a frozen server does, on waking).
        let committing = AtomicBool::new(false);
        let result = loop {
            attempt += 1;
            let run = self.transaction(&batch, &plan, look_up, &committing);
            match tokio::time::timeout_at(deadline, run).await {
                Ok(Ok(outcomes)) => break Ok(outcomes),
                Ok(Err(error)) if attempt < MAX_ATTEMPTS && error.is_race() => {
                    tracing::debug!(error = %Chain(&error), attempt, "group commit lost a race; retrying");
                    look_up = true;
                }
                Ok(Err(CommitError::KeyStored)) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, "a retried key in the batch; looking keys up");
                    look_up = true;
                }
                Ok(Err(error)) => break Err(error.into_store_error()),
                Err(_) if committing.load(Ordering::Acquire) => {
                    break Err(StoreError::OutcomeUnknown(Arc::new(TimedOut(self.timeout))));
                }
                Err(_) => break Err(timed_out(self.timeout)),
            }
        };
        match result {
            Ok(outcomes) => {
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(COMMITS).increment(1);
                let new = outcomes
                    .iter()
                    .filter(|o| matches!(o, Outcome::New { .. }))
                    .count();
                self.stats.messages.fetch_add(new as u64, Ordering::Relaxed);
                for (i, pending) in batch.into_iter().enumerate() {
                    let answer = plan.answer(i, &outcomes, &pending.message.room);
                    // The caller may have timed out meanwhile; its retry will find the row.
                    let _ = pending.reply.send(answer);
                }
            }
            Err(error) => {
                tracing::debug!(error = %Chain(&error), messages = batch.len(), "group commit failed");
                for pending in batch {
                    let _ = pending.reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// The transaction of one batch; the outcome of each distinct message of `plan`. Without
    /// `look_up`, fails with [`CommitError::KeyStored`] (and stores nothing) if a key was stored
    /// before.
    async fn transaction(
        &self,
        batch: &[Pending],
        plan: &Plan,
        look_up: bool,
        committing: &AtomicBool,
    ) -> Result<Vec<Outcome>, CommitError> {
        let messages: Vec<&NewMessage> = plan.distinct.iter().map(|&i| &batch[i].message).collect();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let lock = tx
            .prepare_cached(
                "SELECT id, last_seq FROM rooms WHERE id = ANY($1::text[]) \
                 ORDER BY id FOR NO KEY UPDATE",
            )
            .await?;
        let rooms: Vec<&str> = messages
            .iter()
            .map(|m| m.room.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let lock_params: [&(dyn ToSql + Sync); 1] = [&rooms];
        let (locked, existing) = if look_up {
            let lookup = tx
                .prepare_cached(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM unnest($1::text[], $2::text[], $3::text[])",
                    " AS k(room, sender, client_msg_id)",
                    // LATERAL … LIMIT 1: one unique-index probe per key, whatever the statistics
                    // say (a join may become a hash join over a sequential scan of the table).
                    " CROSS JOIN LATERAL (SELECT * FROM messages WHERE room = k.room",
                    " AND sender = k.sender AND client_msg_id = k.client_msg_id LIMIT 1) m"
                ))
                .await?;
            let key_rooms: Vec<&str> = messages.iter().map(|m| m.room.as_str()).collect();
            let key_senders: Vec<&str> = messages.iter().map(|m| m.sender.id.as_str()).collect();
            let key_ids: Vec<&str> = messages.iter().map(|m| m.client_msg_id.as_str()).collect();
            // Pipelined: the lookup runs after the locks are held, in the same round trip.
            let lookup_params: [&(dyn ToSql + Sync); 3] = [&key_rooms, &key_senders, &key_ids];
            tokio::try_join!(
                tx.query(&lock, &lock_params),
                tx.query(&lookup, &lookup_params),
            )?
        } else {
            (tx.query(&lock, &lock_params).await?, Vec::new())
        };
        let mut last_seqs = HashMap::with_capacity(locked.len());
        for row in &locked {
            let room: &str = row.try_get(0)?;
            let last_seq: i64 = row.try_get(1)?;
            last_seqs.insert(room.to_owned(), to_u64(last_seq));
        }
        let stored_messages = existing
            .iter()
            .map(rows::message)
            .collect::<Result<Vec<_>, _>>()?;
        let stored: HashMap<Key<'_>, &Message> = stored_messages
            .iter()
            .map(|message| (Key::of_message(message), message))
            .collect();
        let assigned = Plan::assign(&messages, &last_seqs, &stored, rows::now_to_the_milli());
        if !assigned.new_last_seqs.is_empty() {
            let (seq_rooms, seq_values): (Vec<&str>, Vec<i64>) = assigned
                .new_last_seqs
                .iter()
                .map(|(room, seq)| (room.as_str(), to_i64(*seq)))
                .unzip();
            let push_due = self.push_due(&assigned);
            let update = tx
                .prepare_cached(
                    "UPDATE rooms r SET last_seq = v.last_seq, \
                     push_due_at = coalesce(r.push_due_at, v.push_due) \
                     FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) \
                     AS v(id, last_seq, push_due) WHERE r.id = v.id",
                )
                .await?;
            let insert = tx
                .prepare_cached(
                    "INSERT INTO messages (room, seq, id, sender, sender_name, kind, content, \
                     client_msg_id, created_at) \
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], \
                     $5::text[], $6::text[], $7::text[], $8::text[], $9::timestamptz[]) \
                     ON CONFLICT (room, sender, client_msg_id) DO NOTHING",
                )
                .await?;
            let rows = NewRows::of(&assigned.outcomes);
            let update_params: [&(dyn ToSql + Sync); 3] = [&seq_rooms, &seq_values, &push_due];
            let insert_params: [&(dyn ToSql + Sync); 9] = [
                &rows.room,
                &rows.seq,
                &rows.id,
                &rows.sender,
                &rows.sender_name,
                &rows.kind,
                &rows.content,
                &rows.client_msg_id,
                &rows.created_at,
            ];
            // Each new message's webhook commits with it (or not at all).
            let events = self.message_events(&assigned.outcomes);
            let insert_events = tx.prepare_cached(webhooks::INSERT_EVENTS).await?;
            let event_params: [&(dyn ToSql + Sync); 3] =
                [&events.ids, &events.kinds, &events.bodies];
            let (_, inserted, _) = tokio::try_join!(
                tx.execute(&update, &update_params),
                tx.execute(&insert, &insert_params),
                async {
                    if events.is_empty() {
                        Ok(0)
                    } else {
                        tx.execute(&insert_events, &event_params).await
                    }
                },
            )?;
            if inserted != rows.seq.len() as u64 {
                // Dropping the transaction rolls it back: no seq was taken.
                return Err(CommitError::KeyStored);
            }
            committing.store(true, Ordering::Release);
            tx.commit().await.map_err(CommitError::Commit)?;
            if !events.is_empty()
                && let Some(sink) = &self.events
            {
                sink.committed();
            }
            return Ok(assigned.outcomes);
        }
        committing.store(true, Ordering::Release);
        tx.commit().await.map_err(CommitError::Commit)?;
        Ok(assigned.outcomes)
    }
}

impl Committer {
    /// For each room of `assigned.new_last_seqs`: when its new messages make it due for a push
    /// pass, if `push` is wanted for it (kept when the room is due already).
    fn push_due(&self, assigned: &Assigned) -> Vec<Option<SystemTime>> {
        // Without `push` subscribed, nothing to look up per room.
        let Some(sink) = self.events.as_ref().filter(|sink| sink.push().is_some()) else {
            return vec![None; assigned.new_last_seqs.len()];
        };
        assigned
            .new_last_seqs
            .iter()
            .map(|(room, _)| {
                let rule = RoomId::parse(room)
                    .ok()
                    .and_then(|r| sink.push_rule(Some(&r)))?;
                Some(UNIX_EPOCH + Duration::from_millis(rule.due(assigned.created_at)))
            })
            .collect()
    }

    /// The `message.created` events of a batch's new messages, for the rooms subscribed to.
    fn message_events(&self, outcomes: &[Outcome]) -> webhooks::EventRows {
        let mut events = webhooks::EventRows::default();
        let Some(sink) = &self.events else {
            return events;
        };
        for outcome in outcomes {
            if let Outcome::New { message, .. } = outcome
                && sink.wants(EventType::MessageCreated, Some(&message.room_id))
            {
                events.push(WebhookEvent::message_created(message));
            }
        }
        events
    }
}

/// Why a batch's transaction failed.
#[derive(Debug, thiserror::Error)]
enum CommitError {
    #[error("no database connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `COMMIT` itself failed: answered by PostgreSQL, the transaction was rolled back; cut off
    /// with the connection, it may have committed.
    #[error("commit failed")]
    Commit(#[source] tokio_postgres::Error),
    /// A key of the batch was stored before; the transaction was rolled back.
    #[error("a message of the batch was stored before")]
    KeyStored,
}

impl CommitError {
    /// What the batch's waiters are told: nothing was stored, unless `COMMIT` was sent and no
    /// answer from PostgreSQL came back.
    fn into_store_error(self) -> StoreError {
        match self {
            Self::Store(error) => error,
            Self::Commit(error) if error.as_db_error().is_none() => {
                StoreError::OutcomeUnknown(Arc::new(error))
            }
            other => StoreError::Unavailable(Arc::new(other)),
        }
    }

    /// Another writer won a race: the same transaction, run again, may succeed.
    fn is_race(&self) -> bool {
        matches!(self, Self::Db(error) | Self::Commit(error) if is_race(error))
    }
}

/// Idempotency key: a message is the same when room, sender and `clientMsgId` are. Borrowed
/// from the message it belongs to: planning a batch copies no strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key<'a> {
    room: &'a str,
    sender: &'a str,
    client_msg_id: &'a str,
}

impl<'a> Key<'a> {
    fn of(message: &'a NewMessage) -> Self {
        Self {
            room: message.room.as_str(),
            sender: message.sender.id.as_str(),
            client_msg_id: &message.client_msg_id,
        }
    }

    fn of_message(message: &'a Message) -> Self {
        Self {
            room: message.room_id.as_str(),
            sender: message.sender.id.as_str(),
            client_msg_id: &message.client_msg_id,
        }
    }
}

/// What happened to one distinct message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Stored now under this seq; `id` is `message.message_id`.
    New {
        message: Message,
        id: uuid::Uuid,
    },
    /// Stored before: the original.
    Existing(Message),
    NoRoom,
}

/// The distinct messages of a batch: a key sent twice in one batch is written once.
#[derive(Debug)]
struct Plan {
    /// Batch index of the first message of each key, in batch order.
    distinct: Vec<usize>,
    /// For each batch index, its key's position in `distinct`.
    first_of: Vec<usize>,
}

/// The seqs given out in a batch.
#[derive(Debug)]
struct Assigned {
    /// One per distinct message, in `Plan::distinct` order.
    outcomes: Vec<Outcome>,
    /// Each room that got new messages, with its new `last_seq`.
    new_last_seqs: Vec<(String, u64)>,
    /// When the new messages were made (Unix ms).
    created_at: u64,
}

impl Plan {
    fn new<'a>(batch: impl Iterator<Item = &'a NewMessage>) -> Self {
        let mut seen: HashMap<Key<'a>, usize> = HashMap::new();
        let mut distinct = Vec::new();
        let first_of = batch
            .enumerate()
            .map(|(i, message)| {
                *seen.entry(Key::of(message)).or_insert_with(|| {
                    distinct.push(i);
                    distinct.len() - 1
                })
            })
            .collect();
        Self { distinct, first_of }
    }

    /// Gives each new message its room's next seq, in batch order. `last_seqs` holds the locked
    /// rooms (a room missing from it does not exist); `stored` the keys found in the table.
    fn assign(
        messages: &[&NewMessage],
        last_seqs: &HashMap<String, u64>,
        stored: &HashMap<Key<'_>, &Message>,
        now: SystemTime,
    ) -> Assigned {
        let mut next: HashMap<&str, u64> = HashMap::new();
        let outcomes = messages
            .iter()
            .map(|&message| {
                if let Some(&original) = stored.get(&Key::of(message)) {
                    return Outcome::Existing(original.clone());
                }
                let room = message.room.as_str();
                let Some(&last) = last_seqs.get(room) else {
                    return Outcome::NoRoom;
                };
                let seq = next.entry(room).or_insert(last);
                *seq += 1;
                let id = uuid::Uuid::now_v7();
                let message = Message {
                    message_id: id.to_string(),
                    room_id: message.room.clone(),
                    seq: *seq,
                    sender: message.sender.clone(),
                    kind: message.kind,
                    content: message.content.clone(),
                    client_msg_id: message.client_msg_id.clone(),
                    created_at: rows::millis(now),
                };
                Outcome::New { message, id }
            })
            .collect();
        let mut new_last_seqs: Vec<(String, u64)> = next
            .into_iter()
            .map(|(room, seq)| (room.to_owned(), seq))
            .collect();
        new_last_seqs.sort();
        Assigned {
            outcomes,
            new_last_seqs,
            created_at: rows::millis(now),
        }
    }

    /// The reply to the message at batch index `i`.
    fn answer(
        &self,
        i: usize,
        outcomes: &[Outcome],
        room: &RoomId,
    ) -> Result<Appended, StoreError> {
        let first = self.first_of.get(i).copied();
        let is_first = first.and_then(|d| self.distinct.get(d)) == Some(&i);
        match first.and_then(|d| outcomes.get(d)) {
            Some(Outcome::New { message, .. }) => Ok(Appended {
                message: message.clone(),
                duplicate: !is_first,
            }),
            Some(Outcome::Existing(message)) => Ok(Appended {
                message: message.clone(),
                duplicate: true,
            }),
            Some(Outcome::NoRoom) => Err(StoreError::RoomNotFound(room.clone())),
            None => Err(StoreError::unavailable(
                "group commit lost track of a message",
            )),
        }
    }
}

/// The columns of the new rows, one array per column for `unnest`.
#[derive(Debug, Default)]
struct NewRows<'a> {
    room: Vec<&'a str>,
    seq: Vec<i64>,
    id: Vec<uuid::Uuid>,
    sender: Vec<&'a str>,
    sender_name: Vec<&'a str>,
    kind: Vec<&'static str>,
    content: Vec<&'a str>,
    client_msg_id: Vec<&'a str>,
    created_at: Vec<SystemTime>,
}

impl<'a> NewRows<'a> {
    fn of(outcomes: &'a [Outcome]) -> Self {
        let mut rows = Self::default();
        for outcome in outcomes {
            let Outcome::New { message: m, id } = outcome else {
                continue;
            };
            rows.room.push(m.room_id.as_str());
            rows.seq.push(to_i64(m.seq));
            rows.id.push(*id);
            rows.sender.push(m.sender.id.as_str());
            rows.sender_name.push(&m.sender.name);
            rows.kind.push(rows::message_kind_text(m.kind));
            rows.content.push(&m.content);
            rows.client_msg_id.push(&m.client_msg_id);
            rows.created_at
                .push(UNIX_EPOCH + Duration::from_millis(m.created_at));
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::{MessageKind, UserRef};

    fn new(room: &str, sender: &str, client_msg_id: &str) -> NewMessage {
        NewMessage {
            room: RoomId::parse(room).unwrap(),
            sender: UserRef {
                id: switchboard_protocol::UserId::parse(sender).unwrap(),
                name: sender.to_uppercase(),
            },
            kind: MessageKind::Text,
            content: format!("{sender} {client_msg_id}"),
            client_msg_id: client_msg_id.into(),
        }
    }

    fn seqs(outcomes: &[Outcome]) -> Vec<Option<u64>> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::New { message, .. } | Outcome::Existing(message) => Some(message.seq),
                Outcome::NoRoom => None,
            })
            .collect()
    }

    #[test]
    fn a_key_sent_twice_in_a_batch_is_written_once_and_both_get_it() {
        let batch = [
            new("a", "ann", "1"),
            new("a", "ann", "1"),
            new("a", "bob", "1"),
            new("b", "ann", "1"),
        ];
        let plan = Plan::new(batch.iter());
        assert_eq!(plan.distinct, vec![0, 2, 3]);
        assert_eq!(plan.first_of, vec![0, 0, 1, 2]);
        let distinct: Vec<&NewMessage> = plan.distinct.iter().map(|&i| &batch[i]).collect();
        let last_seqs = HashMap::from([("a".to_owned(), 10), ("b".to_owned(), 0)]);
        let assigned = Plan::assign(&distinct, &last_seqs, &HashMap::new(), SystemTime::now());
        assert_eq!(seqs(&assigned.outcomes), vec![Some(11), Some(12), Some(1)]);
        assert_eq!(
            assigned.new_last_seqs,
            vec![("a".to_owned(), 12), ("b".to_owned(), 1)]
        );
        let room = RoomId::parse("a").unwrap();
        let first = plan.answer(0, &assigned.outcomes, &room).unwrap();
        let again = plan.answer(1, &assigned.outcomes, &room).unwrap();
        assert!(!first.duplicate && again.duplicate);
        assert_eq!(first.message, again.message);
    }

    #[test]
    fn stored_keys_return_the_original_and_take_no_seq() {
        let batch = [new("a", "ann", "old"), new("a", "ann", "new")];
        let messages: Vec<&NewMessage> = batch.iter().collect();
        let mut original = match &Plan::assign(
            &messages[..1],
            &HashMap::from([("a".to_owned(), 0)]),
            &HashMap::new(),
            SystemTime::now(),
        )
        .outcomes[0]
        {
            Outcome::New { message, .. } => message.clone(),
            other => panic!("{other:?}"),
        };
        original.seq = 7;
        let stored = HashMap::from([(Key::of(&batch[0]), &original)]);
        let assigned = Plan::assign(
            &messages,
            &HashMap::from([("a".to_owned(), 9)]),
            &stored,
            SystemTime::now(),
        );
        assert_eq!(assigned.outcomes[0], Outcome::Existing(original));
        assert_eq!(seqs(&assigned.outcomes), vec![Some(7), Some(10)]);
        assert_eq!(assigned.new_last_seqs, vec![("a".to_owned(), 10)]);
    }

    #[test]
    fn a_missing_room_fails_its_messages_only() {
        let batch = [new("gone", "ann", "1"), new("a", "ann", "1")];
        let plan = Plan::new(batch.iter());
        let messages: Vec<&NewMessage> = batch.iter().collect();
        let assigned = Plan::assign(
            &messages,
            &HashMap::from([("a".to_owned(), 0)]),
            &HashMap::new(),
            SystemTime::now(),
        );
        assert_eq!(seqs(&assigned.outcomes), vec![None, Some(1)]);
        assert!(matches!(
            plan.answer(0, &assigned.outcomes, &batch[0].room),
            Err(StoreError::RoomNotFound(_))
        ));
        assert!(plan.answer(1, &assigned.outcomes, &batch[1].room).is_ok());
    }
}

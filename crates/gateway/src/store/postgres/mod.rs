//! The durable store on PostgreSQL: deadpool-postgres + tokio-postgres, no TLS.
//!
//! - `migrate.rs` — the embedded schema migrations, applied at connect under an advisory lock.
//! - `batch.rs` — group commit: the only writer of messages and room seqs.
//! - `queries.rs` — every other [`Store`](crate::store::Store) method, one statement each (or
//!   one short transaction).
//! - `rows.rs` — rows to domain values; `error.rs` — failures to [`StoreError`].
//! - `webhooks.rs` — the webhook outbox table: what the changes' transactions write, and
//!   [`WebhookOutbox`](crate::webhooks::WebhookOutbox) for the delivery workers.
//!
//! **Invariant:** no call waits longer than about the configured timeout: pool checkout, connect
//! and recycle are bounded by it, every connection runs with `statement_timeout` set to it, and
//! each call is cut off client-side at it. A failure is [`StoreError::Unavailable`]; the pool drops
//! broken connections and opens new ones, so the store recovers by itself when the database
//! returns.

mod batch;
mod error;
mod migrate;
mod outbox;
mod push;
mod queries;
mod rows;
mod webhooks;

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use self::batch::{Committer, Pending, Stats};
use self::error::{TimedOut, timed_out, unavailable};
pub use self::outbox::Outbox;
use super::{Appended, NewMessage, StoreError};
use crate::config::Config;
use crate::webhooks::EventSink;

/// Messages queued per committer lane (at least), beyond the batch being written.
const MIN_QUEUE: usize = 1_024;
/// Extra time an append waits for its batch's reply, beyond the timeout and the batch delay:
/// the committer bounds its transaction by the timeout, this only absorbs scheduling.
const REPLY_GRACE: Duration = Duration::from_millis(250);

/// How to reach PostgreSQL and how to write to it.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `postgres://user:pass@host:port/db`; options in it (`?options=…`) are kept.
    pub url: String,
    /// Connections in the pool, the committers' included.
    pub pool_size: usize,
    /// Longest a statement runs, and a pool checkout or connect waits, before the call fails
    /// with [`StoreError::Unavailable`].
    pub timeout: Duration,
    /// Group commit: most messages in one transaction (1 = a transaction per message).
    pub batch_max_messages: usize,
    /// Group commit: longest a message waits for others to share its transaction.
    pub batch_max_delay: Duration,
    /// Group-commit lanes, each with its own queue and committer task. A room always uses the
    /// same lane, so its messages are sequenced in arrival order.
    pub committers: usize,
    /// With webhooks: the events to write with the changes that cause them.
    pub events: Option<EventSink>,
}

impl PgConfig {
    /// The PostgreSQL settings of a node; `None` when `DATABASE_URL` is unset.
    pub fn from_config(config: &Config) -> Option<Self> {
        let url = config.database_url.clone()?;
        let mut pg = Self {
            url,
            pool_size: config.db_pool_size.max(1),
            timeout: Duration::from_millis(config.db_timeout_ms.max(1)),
            batch_max_messages: config.batch_max_messages.max(1),
            batch_max_delay: Duration::from_micros(config.batch_max_delay_us),
            committers: 1,
            events: None,
        };
        pg.committers = pg.default_committers();
        Some(pg)
    }

    /// A quarter of the pool, 1 to 4: enough lanes to overlap one batch's commit with the next
    /// one's collection, leaving most connections to reads. With one message per transaction,
    /// as many lanes as connections, as a store without group commit would have.
    pub fn default_committers(&self) -> usize {
        if self.batch_max_messages <= 1 {
            self.pool_size.max(1)
        } else {
            (self.pool_size / 4).clamp(1, 4)
        }
    }
}

/// The PostgreSQL [`Store`](crate::store::Store).
#[derive(Debug)]
pub struct PgStore {
    pool: Pool,
    /// How to open a connection of its own (the outbox relay listens on one).
    pg: tokio_postgres::Config,
    /// One queue per committer lane; dropping the store ends the committers.
    lanes: Vec<mpsc::Sender<Pending>>,
    /// Picks a room's lane; fixed keys, so a room keeps its lane.
    lane_hasher: BuildHasherDefault<DefaultHasher>,
    timeout: Duration,
    batch_max_delay: Duration,
    /// Created once by the first migration; cached, it never changes.
    epoch: String,
    stats: Arc<Stats>,
    /// With webhooks: the events written with memberships and notifications.
    events: Option<EventSink>,
}

impl PgStore {
    /// Applies the migrations, then opens the pool and starts the committers. Fails with
    /// [`StoreError::Unavailable`] when the database cannot be reached or migrated.
    pub async fn connect(config: &PgConfig) -> Result<Self, StoreError> {
        let pg = connection_config(config)?;
        let epoch = tokio::time::timeout(migrate::MIGRATION_TIMEOUT, migrate_once(&pg))
            .await
            .unwrap_or_else(|_| Err(timed_out(migrate::MIGRATION_TIMEOUT)))?;
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .build()
            .map_err(unavailable)?;
        let stats = Arc::new(Stats::default());
        let max_messages = config.batch_max_messages.max(1);
        let lanes = (0..config.committers.max(1))
            .map(|_| {
                let (queue, receiver) =
                    mpsc::channel(max_messages.saturating_mul(4).max(MIN_QUEUE));
                let committer = Committer {
                    pool: pool.clone(),
                    queue: receiver,
                    max_messages,
                    max_delay: config.batch_max_delay,
                    timeout: config.timeout,
                    stats: Arc::clone(&stats),
                    events: config.events.clone(),
                };
                tokio::spawn(committer.run());
                queue
            })
            .collect();
        tracing::info!(
            pool_size = config.pool_size,
            committers = config.committers,
            batch_max_messages = max_messages,
            batch_max_delay_us = config.batch_max_delay.as_micros() as u64,
            %epoch,
            "PostgreSQL store ready"
        );
        Ok(Self {
            pool,
            pg,
            lanes,
            lane_hasher: BuildHasherDefault::default(),
            timeout: config.timeout,
            batch_max_delay: config.batch_max_delay,
            epoch,
            stats,
            events: config.events.clone(),
        })
    }

    /// The outbox relay of this store (see `outbox.rs`).
    pub fn outbox(&self) -> Outbox {
        Outbox {
            pool: self.pool.clone(),
            pg: self.pg.clone(),
        }
    }

    /// Transactions the group committers have committed. Well below the number of appends
    /// when group commit works.
    pub fn batches_committed(&self) -> u64 {
        self.stats.batches.load(Ordering::Relaxed)
    }

    /// New messages the group committers have stored (retries not counted).
    pub fn messages_committed(&self) -> u64 {
        self.stats.messages.load(Ordering::Relaxed)
    }

    /// Queues a message for its lane's committer and waits for the commit.
    async fn append_batched(&self, message: NewMessage) -> Result<Appended, StoreError> {
        let start = Instant::now();
        let queued = self.enqueue(message, start).await?;
        self.commit_of(queued, start).await
    }

    /// Queues every message before waiting for any commit, so they can share a transaction; a
    /// room's messages are queued (and so sequenced) in the order given.
    async fn append_all_batched(
        &self,
        messages: Vec<NewMessage>,
    ) -> Vec<Result<Appended, StoreError>> {
        let start = Instant::now();
        let mut queued = Vec::with_capacity(messages.len());
        for message in messages {
            queued.push(self.enqueue(message, start).await);
        }
        let mut answers = Vec::with_capacity(queued.len());
        for answer in queued {
            answers.push(match answer {
                Ok(answer) => self.commit_of(answer, start).await,
                Err(error) => Err(error),
            });
        }
        answers
    }

    /// Puts a message on its lane's queue; the receiver gets the commit's answer.
    async fn enqueue(
        &self,
        message: NewMessage,
        start: Instant,
    ) -> Result<oneshot::Receiver<Result<Appended, StoreError>>, StoreError> {
        if [
            &message.content,
            &message.client_msg_id,
            &message.sender.name,
        ]
        .iter()
        .any(|text| text.contains('\0'))
        {
            // PostgreSQL text cannot hold NUL; refused here so it cannot fail a whole batch.
            return Err(StoreError::unavailable(
                "message contains a NUL character, which PostgreSQL cannot store",
            ));
        }
        let lane = self.lane_hasher.hash_one(message.room.as_str()) as usize % self.lanes.len();
        let queue = self
            .lanes
            .get(lane)
            .ok_or_else(|| StoreError::unavailable("no group committer"))?;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            message,
            queued_at: Instant::now(),
            reply,
        };
        match tokio::time::timeout_at(start + self.timeout, queue.send(pending)).await {
            Ok(Ok(())) => Ok(answer),
            Ok(Err(_)) => Err(StoreError::unavailable("group committer stopped")),
            Err(_) => Err(StoreError::unavailable(format!(
                "write queue still full after {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Waits for the answer to a message queued at `start`.
    async fn commit_of(
        &self,
        answer: oneshot::Receiver<Result<Appended, StoreError>>,
        start: Instant,
    ) -> Result<Appended, StoreError> {
        let reply_deadline = start + self.timeout + self.batch_max_delay + REPLY_GRACE;
        match tokio::time::timeout_at(reply_deadline, answer).await {
            Ok(Ok(result)) => result,
            // Queued, so perhaps committed: only a retry with the same key can tell.
            Ok(Err(_)) => Err(StoreError::outcome_unknown("group committer stopped")),
            Err(_) => Err(StoreError::OutcomeUnknown(Arc::new(TimedOut(self.timeout)))),
        }
    }

    /// Runs `op` with the store's timeout.
    async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, op)
            .await
            .unwrap_or_else(|_| Err(timed_out(self.timeout)))
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(unavailable)
    }

    /// One statement's rows, through the connection's statement cache, within the timeout.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client.prepare_cached(sql).await.map_err(unavailable)?;
            client.query(&statement, params).await.map_err(unavailable)
        })
        .await
    }

    /// One statement's single row.
    async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, StoreError> {
        self.query(sql, params)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::unavailable("a query returned no row"))
    }

    /// One statement's count of affected rows.
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client.prepare_cached(sql).await.map_err(unavailable)?;
            client
                .execute(&statement, params)
                .await
                .map_err(unavailable)
        })
        .await
    }
}

/// The connection settings: the URL plus the timeout, as `statement_timeout` and TCP limits.
fn connection_config(config: &PgConfig) -> Result<tokio_postgres::Config, StoreError> {
    let mut pg: tokio_postgres::Config = config
        .url
        .parse()
        .map_err(|e| StoreError::unavailable(format!("invalid DATABASE_URL: {e}")))?;
    let statement_timeout = format!("-c statement_timeout={}", config.timeout.as_millis().max(1));
    let options = match pg.get_options() {
        Some(options) if !options.trim().is_empty() => format!("{options} {statement_timeout}"),
        _ => statement_timeout,
    };
    pg.options(options);
    if pg.get_application_name().is_none() {
        pg.application_name("switchboard-gateway");
    }
    pg.connect_timeout(config.timeout)
        // A dead peer fails the connection instead of leaving a call waiting.
        .tcp_user_timeout(config.timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    Ok(pg)
}

/// Runs the migrations on a connection of their own, closed afterwards, so a run cut short
/// leaves nothing behind in the pool.
async fn migrate_once(pg: &tokio_postgres::Config) -> Result<String, StoreError> {
    let (mut client, connection) = pg.connect(NoTls).await.map_err(unavailable)?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "migration connection ended");
        }
    });
    let epoch = migrate::migrate(&mut client).await;
    drop(client);
    // The connection ends once the client is gone; never wait on it for long.
    let _ = tokio::time::timeout(Duration::from_secs(1), driver).await;
    epoch
}

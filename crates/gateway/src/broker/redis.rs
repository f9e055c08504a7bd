//! The cluster broker: fan-out between gateway nodes over Redis pub/sub (fred).
//!
//! Room events go to `sb:room:<roomId>`, user events to `sb:user:<userId>`. A publish is
//! delivered to this node's hub directly, encoded once, and `PUBLISH`ed on each of its topics'
//! channels in one pipeline; a receiving node decodes it once, drops its own, lets an envelope
//! that came on several channels through once, and hands it to its hub.
//!
//! **Invariant:** a node is subscribed to a channel only while it has a local session on its
//! topic. One manager task turns the hub's subscribe / unsubscribe calls into batched
//! `SUBSCRIBE` / `UNSUBSCRIBE` commands; `subscribe` returns once Redis confirmed it, so the hub
//! may read the store right after.
//!
//! **Invariant:** at-most-once, never silent. When events may have been lost (the subscriber
//! connection was replaced, the reader lagged, a subscribe was not confirmed in time), every
//! affected topic is reported through [`Inbox::gap`] once the subscriptions are back, and the
//! hub repairs those rooms from the store.
//!
//! **Invariant:** no unbounded buffer. While Redis is unreachable, publishes fail at once
//! (after the local delivery) and subscription changes wait for the reconnection as state, not
//! as queued commands; every command is bounded in time and fred's queues are capped. A
//! connection that stops answering is replaced (see `Watchdog`).

mod interest;
mod publisher;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{
    Builder, Client, ClientLike, Config, EventInterface, Options, PubsubInterface, ReconnectPolicy,
    Value,
};
use fred::types::config::UnresponsiveConfig;
use metrics::{counter, gauge};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use self::interest::{Batch, Interest};
use self::publisher::PublishQueue;
use self::wire::Recent;
use super::{Broker, BrokerError, Envelope, Inbox, Topic};

/// Messages received from Redis (before dropping this node's own and repeats).
pub const RECEIVED: &str = "switchboard_broker_received_total";
/// Channels this node is subscribed to.
pub const SUBSCRIPTIONS: &str = "switchboard_broker_subscriptions";
/// Times the broker told the hub events may have been lost, by reason.
pub const GAPS: &str = "switchboard_broker_gaps_total";
/// Messages that could not be decoded (another version on the same Redis?).
pub const UNDECODABLE: &str = "switchboard_broker_undecodable_total";

/// How long a publish may take before it counts as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `subscribe` waits for Redis to confirm before the hub goes on without it.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on any other command, and on connecting.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Both connections are pinged this often, so a silent one is noticed and replaced.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Pings in a row a connection may leave unanswered before it is replaced.
const MISSED_HEARTBEATS: u32 = 2;
/// A connection with a command unanswered this long after its last write is replaced.
const UNRESPONSIVE: Duration = Duration::from_secs(4);
/// Pause before the manager retries a batch that failed.
const RETRY: Duration = Duration::from_millis(500);
/// Received messages waiting for the reader task; past this the reader lags (and reports a gap).
const RECEIVE_BUFFER: usize = 4_096;
/// Commands fred may hold for a connection; past this they fail with backpressure.
const COMMAND_BUFFER: usize = 10_000;
/// (origin, id) pairs remembered to let a multi-channel envelope through once.
const RECENT_IDS: usize = 4_096;

/// A [`Broker`] over Redis pub/sub. Build with [`RedisBroker::connect`], then
/// [`RedisBroker::attach`] the hub.
pub struct RedisBroker {
    shared: Arc<Shared>,
    /// Publishes (and health checks). A connection in subscribe mode cannot publish.
    publisher: Client,
    /// Per-publish options: fail at once while disconnected, never retry (at-most-once).
    publish_options: Options,
    /// Envelopes on their way to Redis: a publish does not wait for Redis's reply.
    outgoing: PublishQueue,
    /// Ids of this node's envelopes; starts at a random value (see [`wire::Incoming::id`]).
    next_id: AtomicU64,
    /// Stops the manager and the reader when the broker is dropped.
    stop: CancellationToken,
}

/// What the broker shares with its manager and reader tasks.
struct Shared {
    node_id: String,
    /// The hub; set once at start-up, after the hub (which needs the broker) exists.
    inbox: OnceLock<Arc<dyn Inbox>>,
    /// The connection in subscribe mode; only the manager sends it commands.
    subscriber: Client,
    interest: Mutex<Interest>,
    /// Wakes the manager: the wanted channels changed.
    wake: Notify,
    /// Bumped each time the manager applied a batch; subscribe / unsubscribe wait on it.
    applied: watch::Sender<u64>,
    received: AtomicU64,
    recent: Mutex<Recent>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node_id", &self.shared.node_id)
            .finish_non_exhaustive()
    }
}

fn unavailable(error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(error.to_string())
}

/// A fred client that reconnects with backoff, bounds every command in time and its queue in
/// length, and replaces a connection that stops answering.
pub(crate) fn client(url: &str, receive_buffer: usize) -> Result<Client, fred::error::Error> {
    let config = Config::from_url(url)?;
    Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = COMMAND_TIMEOUT;
            c.internal_command_timeout = COMMAND_TIMEOUT;
            c.max_command_attempts = 1;
            c.max_command_buffer_len = COMMAND_BUFFER;
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(UNRESPONSIVE),
                interval: Duration::from_secs(1),
            };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
            p.broadcast_channel_capacity = receive_buffer;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build()
}

/// Connects `client`, failing if Redis does not answer within a bound.
pub(crate) async fn init(client: &Client) -> Result<(), String> {
    match tokio::time::timeout(COMMAND_TIMEOUT * 2, client.init()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out connecting to redis".to_owned()),
    }
}

impl RedisBroker {
    /// Connects to Redis (failing if it does not answer now) and starts the subscription
    /// manager and the reader. `node_id` must be unique in the cluster.
    pub async fn connect(url: &str, node_id: &str) -> Result<Arc<Self>, BrokerError> {
        let publisher = client(url, 16).map_err(unavailable)?;
        let subscriber = client(url, RECEIVE_BUFFER).map_err(unavailable)?;
        // Listen before connecting: no message and no reconnection goes unseen.
        let messages = subscriber.message_rx();
        let mut reconnects = subscriber.reconnect_rx();
        for client in [&publisher, &subscriber] {
            if let Err(error) = init(client).await {
                // Stop both: a client left running would keep reconnecting forever.
                let _ = publisher.quit().await;
                let _ = subscriber.quit().await;
                return Err(BrokerError::Unavailable(error));
            }
        }
        // The first connection is reported as a reconnect too; nothing was lost before it.
        while reconnects.try_recv().is_ok() {}
        let shared = Arc::new(Shared {
            node_id: node_id.to_owned(),
            inbox: OnceLock::new(),
            subscriber,
            interest: Mutex::new(Interest::default()),
            wake: Notify::new(),
            applied: watch::Sender::new(0),
            received: AtomicU64::new(0),
            recent: Mutex::new(Recent::new(RECENT_IDS)),
        });
        let stop = CancellationToken::new();
        tokio::spawn(manage(Arc::clone(&shared), reconnects, stop.clone()));
        tokio::spawn(watch_publisher(publisher.clone(), stop.clone()));
        tokio::spawn(read(Arc::clone(&shared), messages, stop.clone()));
        let publish_options = Options {
            fail_fast: true,
            max_attempts: Some(1),
            timeout: Some(PUBLISH_TIMEOUT),
            ..Options::default()
        };
        let outgoing =
            PublishQueue::start(publisher.clone(), publish_options.clone(), PUBLISH_TIMEOUT);
        Ok(Arc::new(Self {
            shared,
            publisher,
            publish_options,
            outgoing,
            next_id: AtomicU64::new(rand::random::<u64>() >> 1),
            stop,
        }))
    }

    /// Connects the hub that receives what this node publishes and what other nodes publish
    /// on its channels. Set once at start-up.
    pub fn attach(&self, inbox: Arc<dyn Inbox>) {
        // A second attach would be a wiring bug; the first inbox stays.
        let _ = self.shared.inbox.set(inbox);
    }

    /// Messages received from Redis so far (this node's own and repeats included).
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Publishes that were queued but then failed (Redis did not take them in time).
    pub fn publishes_failed(&self) -> u64 {
        self.outgoing.failed()
    }

    /// Queues the envelope for the other nodes (see [`publisher`]).
    fn publish_remote(&self, envelope: &Envelope) -> Result<(), BrokerError> {
        if envelope.topics.is_empty() {
            return Ok(());
        }
        if !self.publisher.is_connected() {
            return Err(unavailable("redis is not connected"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let payload = wire::encode(&self.shared.node_id, id, envelope).map_err(unavailable)?;
        let channels = envelope.topics.iter().map(interest::channel).collect();
        self.outgoing.push(channels, payload)
    }

    /// Changes the references of `topics` by `delta`, wakes the manager, and waits until Redis
    /// matches (`done`) or the timeout passes.
    async fn change(
        &self,
        topics: &[Topic],
        delta: i32,
        done: fn(&Interest, &[Topic]) -> bool,
    ) -> Result<(), Vec<Topic>> {
        if topics.is_empty() {
            return Ok(());
        }
        let mut applied = self.shared.applied.subscribe();
        {
            let mut interest = self.shared.lock_interest();
            for topic in topics {
                interest.add(topic, delta);
            }
        }
        self.shared.wake.notify_one();
        if !self.shared.subscriber.is_connected() {
            return Err(topics.to_vec());
        }
        let wait = async {
            loop {
                if done(&self.shared.lock_interest(), topics) {
                    return;
                }
                if applied.changed().await.is_err() {
                    // The manager is gone (the broker is being dropped).
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(SUBSCRIBE_TIMEOUT, wait)
            .await
            .map_err(|_| topics.to_vec())
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let publisher = self.publisher.clone();
            let subscriber = self.shared.subscriber.clone();
            runtime.spawn(async move {
                let _ = publisher.quit().await;
                let _ = subscriber.quit().await;
            });
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    /// Delivers to this node's hub, then queues the envelope for the others; it does not wait
    /// for Redis. When Redis is unreachable or the queue is full the local delivery stands and
    /// the error is about the remote part only.
    async fn publish(&self, envelope: Envelope) -> Result<(), BrokerError> {
        if let Some(inbox) = self.shared.inbox.get() {
            inbox.deliver(&envelope);
        }
        self.publish_remote(&envelope)
    }

    /// Returns once Redis confirmed the subscriptions. On failure (Redis unreachable or slow)
    /// the interest is kept: the manager subscribes when it can and reports the gap then.
    async fn subscribe(&self, topics: &[Topic]) -> Result<(), BrokerError> {
        self.change(topics, 1, Interest::confirmed)
            .await
            .map_err(|topics| {
                self.shared.lock_interest().mark_late(&topics);
                unavailable(format!(
                    "{} subscription(s) not confirmed yet; they will be repaired from the store",
                    topics.len()
                ))
            })
    }

    /// Returns once Redis confirmed; without a connection there is nothing to unsubscribe.
    async fn unsubscribe(&self, topics: &[Topic]) -> Result<(), BrokerError> {
        match self.change(topics, -1, Interest::released).await {
            Ok(()) => Ok(()),
            Err(_) if !self.shared.subscriber.is_connected() => Ok(()),
            Err(topics) => Err(unavailable(format!(
                "{} unsubscription(s) not confirmed yet",
                topics.len()
            ))),
        }
    }

    async fn health(&self) -> Result<(), BrokerError> {
        if !self.shared.subscriber.is_connected() {
            return Err(unavailable("redis subscriber is not connected"));
        }
        let publisher = self.publisher.with_options(&self.publish_options);
        match tokio::time::timeout(PUBLISH_TIMEOUT, publisher.ping::<Value>(None)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(unavailable(error)),
            Err(_) => Err(unavailable("redis ping timed out")),
        }
    }

    async fn flush(&self) -> Result<(), BrokerError> {
        self.outgoing.flush().await
    }

    async fn followed_rooms(&self) -> Result<Option<u64>, BrokerError> {
        // A node subscribes to a room's channel exactly while it follows the room.
        let publisher = self.publisher.with_options(&self.publish_options);
        let channels: Vec<String> = publisher
            .pubsub_channels(interest::ROOM_CHANNELS)
            .await
            .map_err(unavailable)?;
        Ok(Some(channels.len() as u64))
    }
}

impl Shared {
    fn lock_interest(&self) -> MutexGuard<'_, Interest> {
        self.interest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn gap(&self, topics: &[Topic], reason: &'static str) {
        if topics.is_empty() {
            return;
        }
        counter!(GAPS, "reason" => reason).increment(1);
        tracing::warn!(
            reason,
            topics = topics.len(),
            "redis broker may have lost events"
        );
        if let Some(inbox) = self.inbox.get() {
            inbox.gap(topics);
        }
    }

    /// Sends the batch, then a `PING` on the same connection: its answer means Redis processed
    /// everything before it (fred reports (un)subscribes as soon as they are written).
    async fn send(&self, batch: &Batch, reset: bool) -> Result<(), fred::error::Error> {
        if reset {
            // Whatever the old connection's queue still held is dropped: start from nothing.
            self.subscriber.unsubscribe(Vec::<String>::new()).await?;
        } else if !batch.unsubscribe.is_empty() {
            self.subscriber
                .unsubscribe(interest::channels(&batch.unsubscribe))
                .await?;
        }
        if !batch.subscribe.is_empty() {
            self.subscriber
                .subscribe(interest::channels(&batch.subscribe))
                .await?;
        }
        self.subscriber.ping::<Value>(None).await?;
        Ok(())
    }

    /// Brings Redis in line with the wanted channels, one batch at a time.
    async fn reconcile(&self, reset: &mut bool) -> Result<(), fred::error::Error> {
        loop {
            let batch = if *reset {
                Batch {
                    subscribe: self.lock_interest().reset(),
                    unsubscribe: Vec::new(),
                }
            } else {
                self.lock_interest().diff()
            };
            if batch.is_empty() && !*reset {
                // Nothing to send, but the wanted set may have changed under a waiter.
                self.applied.send_modify(|n| *n += 1);
                return Ok(());
            }
            self.send(&batch, *reset).await?;
            let (repair, reason, subscribed) = {
                let mut interest = self.lock_interest();
                let repair = if *reset {
                    interest.reset_applied(&batch.subscribe)
                } else {
                    interest.applied(&batch)
                };
                let reason = if *reset { "reconnect" } else { "late" };
                (repair, reason, interest.subscribed())
            };
            *reset = false;
            gauge!(SUBSCRIPTIONS).set(subscribed as f64);
            tracing::debug!(
                subscribed = batch.subscribe.len(),
                unsubscribed = batch.unsubscribe.len(),
                "redis subscriptions applied"
            );
            self.applied.send_modify(|n| *n += 1);
            self.gap(&repair, reason);
        }
    }
}

/// The subscription manager: the only task sending commands on the subscriber connection.
async fn manage(
    shared: Arc<Shared>,
    mut reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    stop: CancellationToken,
) {
    // Set by every reconnection: the new connection has no subscriptions.
    let mut reset = false;
    let mut watchdog = Watchdog::new("subscriber");
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut beat = false;
        tokio::select! {
            () = stop.cancelled() => return,
            () = shared.wake.notified() => {}
            event = reconnects.recv() => match event {
                Ok(server) => {
                    tracing::info!(%server, "redis subscriber (re)connected: resubscribing");
                    reset = true;
                }
                Err(RecvError::Lagged(_)) => reset = true,
                Err(RecvError::Closed) => return,
            },
            _ = heartbeat.tick() => beat = true,
        }
        if !shared.subscriber.is_connected() {
            // The reconnect event will come; commands sent now would only queue.
            continue;
        }
        match shared.reconcile(&mut reset).await {
            Ok(()) if beat => watchdog.beat(&shared.subscriber).await,
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(%error, "redis subscription batch failed; retrying");
                // Unknown what Redis applied: start over once the connection answers.
                reset = true;
                watchdog.record(&shared.subscriber, false).await;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
                shared.wake.notify_one();
            }
        }
    }
}

/// Pings the publisher connection, replacing it when it stops answering.
async fn watch_publisher(publisher: Client, stop: CancellationToken) {
    let mut watchdog = Watchdog::new("publisher");
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = heartbeat.tick() => {}
        }
        if publisher.is_connected() {
            watchdog.beat(&publisher).await;
        }
    }
}

/// Replaces a connection that stopped answering. fred notices a closed socket, not a silent
/// one (a half-open TCP connection, a frozen server); its own check misses a connection that
/// keeps being written to. A replaced subscriber connection ends in a resubscribe and a gap.
#[derive(Debug)]
struct Watchdog {
    connection: &'static str,
    missed: u32,
}

impl Watchdog {
    fn new(connection: &'static str) -> Self {
        Self {
            connection,
            missed: 0,
        }
    }

    async fn beat(&mut self, client: &Client) {
        let answered = client.ping::<Value>(None).await.is_ok();
        self.record(client, answered).await;
    }

    async fn record(&mut self, client: &Client, answered: bool) {
        if answered {
            self.missed = 0;
            return;
        }
        self.missed += 1;
        if self.missed < MISSED_HEARTBEATS {
            return;
        }
        self.missed = 0;
        tracing::warn!(
            connection = self.connection,
            "redis stopped answering: replacing the connection"
        );
        let replaced = tokio::time::timeout(COMMAND_TIMEOUT, client.force_reconnection()).await;
        if let Ok(Err(error)) = replaced {
            tracing::debug!(%error, connection = self.connection, "redis reconnect failed");
        }
    }
}

/// The reader: decodes each message once and hands it to the hub.
async fn read(
    shared: Arc<Shared>,
    mut messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
    stop: CancellationToken,
) {
    let received = counter!(RECEIVED);
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            message = messages.recv() => message,
        };
        match message {
            Ok(message) => {
                shared.received.fetch_add(1, Ordering::Relaxed);
                received.increment(1);
                shared.on_message(&message.value);
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "redis reader fell behind");
                let topics = shared.lock_interest().wanted_topics();
                shared.gap(&topics, "lagged");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

impl Shared {
    fn on_message(&self, value: &Value) {
        let Some(bytes) = value.as_bytes() else {
            counter!(UNDECODABLE).increment(1);
            return;
        };
        let incoming = match wire::decode(bytes) {
            Ok(incoming) => incoming,
            Err(error) => {
                counter!(UNDECODABLE).increment(1);
                tracing::warn!(%error, "undecodable message on redis");
                return;
            }
        };
        if incoming.origin == self.node_id {
            // Delivered locally when it was published.
            return;
        }
        if incoming.envelope.topics.len() > 1
            && !self
                .recent
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .first_time(&incoming.origin, incoming.id)
        {
            return;
        }
        if let Some(inbox) = self.inbox.get() {
            inbox.deliver(&incoming.envelope);
        }
    }
}

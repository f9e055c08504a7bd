//! Everything a session needs from its node, built once at start-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Api;
use crate::auth::{Authenticator, TokenSigner};
use switchboard_protocol::{FriendStatus, RoomId, ServerFrame, UserId};

use crate::broker::{Broker, ConnId, Envelope, Topic};
use crate::config::Config;
use crate::connect_limit::{Cidr, ConnectLimiter};
use crate::hooks::Hooks;
use crate::hub::Hub;
use crate::metrics;
use crate::presence::Presence;
use crate::store::postgres::Outbox;
use crate::store::{Store, StoreError};
use crate::webhooks::{Deliveries, PresenceAnnouncer, PushWorker};

pub struct App {
    pub config: Config,
    pub node_id: String,
    /// The backends, behind their traits: session code never knows which one it talks to.
    pub store: Arc<dyn Store>,
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn Presence>,
    pub hub: Arc<Hub>,
    pub auth: Arc<dyn Authenticator>,
    /// Calls to the app's backend that decide (connect, join, rpc).
    pub hooks: Hooks,
    /// With webhooks: the delivery worker's parts, and the outbox the server API lists.
    pub webhooks: Option<Deliveries>,
    /// With presence webhooks (`user.*`, `room.occupied` / `room.vacated`): hears this node's
    /// presence and membership changes.
    pub announcer: Option<PresenceAnnouncer>,
    /// With `push` webhooks: the passes that make them.
    pub push: Option<PushWorker>,
    /// Dev mode only: signs tokens for the chat page.
    pub dev_signer: Option<TokenSigner>,
    /// The server API; `None` when it is off (no key).
    pub api: Option<Api>,
    /// The PostgreSQL outbox this node relays, if any.
    pub outbox: Option<Outbox>,
    pub metrics: Option<PrometheusHandle>,
    /// Cancelled when the node starts draining: sessions say goodbye and close with 1001.
    pub shutdown: CancellationToken,
    /// Every session task, so shutdown can wait for them within the drain time.
    pub sessions: TaskTracker,
    pub draining: AtomicBool,
    /// The store answered its last health check; `/readyz` fails while it does not.
    pub store_healthy: AtomicBool,
    /// The broker answered its last health check; `/readyz` fails while it does not.
    pub broker_healthy: AtomicBool,
    /// New connections per client address (`SWITCHBOARD_CONNECT_RATE_PER_IP`).
    pub connect_limiter: ConnectLimiter,
    /// Connections open on this node, counted before the upgrade so the limit holds.
    pub open: AtomicUsize,
    /// Admission to a session's start-up calls (`SWITCHBOARD_MAX_STARTING_SESSIONS`): fair, so
    /// sessions start in the order they arrived.
    pub starts: Semaphore,
    next_conn: AtomicU64,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// The backends and keys an [`App`] is built from.
#[derive(Debug)]
pub struct Parts {
    pub hooks: Hooks,
    pub webhooks: Option<Deliveries>,
    pub announcer: Option<PresenceAnnouncer>,
    /// With `push` webhooks: the passes that make them.
    pub push: Option<PushWorker>,
    pub store: Arc<dyn Store>,
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn Presence>,
    pub hub: Arc<Hub>,
    pub auth: Arc<dyn Authenticator>,
    pub dev_signer: Option<TokenSigner>,
    /// Server API keys: the configured ones, or dev mode's random one.
    pub api_keys: Vec<String>,
    /// With PostgreSQL (and `SWITCHBOARD_OUTBOX_RELAY`), the outbox this node relays.
    pub outbox: Option<Outbox>,
    pub metrics: Option<PrometheusHandle>,
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}
impl std::fmt::Debug for dyn Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Broker")
    }
}
impl std::fmt::Debug for dyn Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Presence")
    }
}
impl std::fmt::Debug for dyn Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator")
    }
}

impl App {
    pub fn new(config: Config, node_id: String, parts: Parts) -> Self {
        let starts = Semaphore::new(config.starting_sessions().min(Semaphore::MAX_PERMITS));
        let api = Api::new(
            &parts.api_keys,
            config.api_rate_per_sec,
            config.api_rate_burst,
        );
        let trusted = config
            .trusted_proxies
            .iter()
            .filter_map(|p| Cidr::parse(p).ok())
            .collect();
        let connect_limiter = ConnectLimiter::new(
            config.connect_rate_per_ip,
            config.connect_burst_per_ip,
            trusted,
        );
        Self {
            connect_limiter,
            config,
            node_id,
            store: parts.store,
            broker: parts.broker,
            presence: parts.presence,
            hub: parts.hub,
            auth: parts.auth,
            hooks: parts.hooks,
            webhooks: parts.webhooks,
            announcer: parts.announcer,
            push: parts.push,
            dev_signer: parts.dev_signer,
            api,
            outbox: parts.outbox,
            metrics: parts.metrics,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            draining: AtomicBool::new(false),
            store_healthy: AtomicBool::new(true),
            broker_healthy: AtomicBool::new(true),
            open: AtomicUsize::new(0),
            starts,
            next_conn: AtomicU64::new(1),
        }
    }

    pub fn next_conn_id(&self) -> ConnId {
        ConnId::new(
            &self.node_id,
            self.next_conn.fetch_add(1, Ordering::Relaxed),
        )
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Why the node should not get new connections now, if it should not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.is_draining() {
            Some("draining")
        } else if !self.store_healthy.load(Ordering::Acquire) {
            Some("store unavailable")
        } else if !self.broker_healthy.load(Ordering::Acquire) {
            Some("broker unavailable")
        } else {
            None
        }
    }

    /// Checks the store and the broker every `interval` until shutdown, logging each change.
    pub async fn watch_health(&self, interval: std::time::Duration) {
        loop {
            let limit = interval * 5;
            let store = matches!(
                tokio::time::timeout(limit, self.store.health()).await,
                Ok(Ok(()))
            );
            let broker = matches!(
                tokio::time::timeout(limit, self.broker.health()).await,
                Ok(Ok(()))
            );
            for (flag, healthy, what) in [
                (&self.store_healthy, store, "store"),
                (&self.broker_healthy, broker, "broker"),
            ] {
                if flag.swap(healthy, Ordering::AcqRel) != healthy {
                    if healthy {
                        tracing::info!("{what} is back");
                    } else {
                        tracing::warn!("{what} unavailable: not ready");
                    }
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Everyone who should hear about `user`'s presence: members of the rooms they share and
    /// their friends. One envelope to all these topics reaches each watcher once.
    pub async fn watcher_topics(&self, user: &UserId) -> Result<Vec<Topic>, StoreError> {
        let rooms = self.store.rooms_of(user).await?;
        let friends = self.store.friends(user).await?;
        Ok(rooms
            .into_iter()
            .map(|r| Topic::Room(r.room_id))
            .chain(
                friends
                    .into_iter()
                    .filter(|f| f.status == FriendStatus::Accepted)
                    .map(|f| Topic::User(f.user.id)),
            )
            .collect())
    }

    /// Keeps this node's presence lease alive and announces the users of dead nodes as offline.
    pub async fn maintain_presence(&self) {
        let interval = self.config.presence_refresh();
        loop {
            if let Err(error) = self.presence.report(self.hub.stats()).await {
                tracing::debug!(%error, "cannot report this node's counts");
            }
            match self.presence.maintain().await {
                Ok(departed) => {
                    for gone in departed {
                        tracing::info!(user = %gone.user, "offline: their node stopped answering");
                        self.presence_changed(&gone.user, Some(gone.last_seen))
                            .await;
                        let frame = ServerFrame::UserOffline {
                            user_id: gone.user.clone(),
                            last_seen: gone.last_seen,
                        };
                        match self.watcher_topics(&gone.user).await {
                            Ok(topics) if !topics.is_empty() => {
                                self.publish(Envelope::frame(topics, frame)).await
                            }
                            Ok(_) => {}
                            Err(error) => tracing::warn!(%error, "cannot announce a departed user"),
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "presence maintenance failed"),
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Tells the presence webhooks, if any, that `user` came online (`None`) or went
    /// (`Some(last_seen)`).
    pub async fn presence_changed(&self, user: &UserId, offline_since: Option<u64>) {
        if let Some(announcer) = &self.announcer {
            announcer.changed(user, offline_since).await;
        }
    }

    /// Tells the presence webhooks, if any, that `user` became a member of `room` (`joined`) or
    /// stopped being one: a room is occupied while a member is online.
    pub async fn membership_changed(&self, user: &UserId, room: &RoomId, joined: bool) {
        if let Some(announcer) = &self.announcer {
            announcer.membership_changed(user, room, joined).await;
        }
    }

    pub fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.config.read_buffer_bytes)
            // Writes are flushed per batch; this is the size at which a batch is written early.
            .write_buffer_size(16 * 1024)
            .max_write_buffer_size(self.config.max_frame_bytes.max(1 << 20) * 2)
            .max_message_size(Some(self.config.max_frame_bytes))
            .max_frame_size(Some(self.config.max_frame_bytes))
    }

    /// Publishes an event; a failure is logged and counted, never fatal. Durable state is
    /// already in the store, and receivers repair from it.
    pub async fn publish(&self, envelope: Envelope) {
        if let Err(error) = self.broker.publish(envelope).await {
            metrics::broker_publish_failed();
            tracing::warn!(%error, "publish failed");
        }
    }
}

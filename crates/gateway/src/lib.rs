//! The Switchboard gateway: terminates WebSockets, authenticates them, and fans events out
//! between sessions through the [`broker::Broker`], [`store::Store`] and
//! [`presence::Presence`] seams. See ARCHITECTURE.md for the map and the invariants.

pub mod actions;
pub mod api;
pub mod app;
pub mod auth;
pub mod broker;
pub mod config;
pub mod connect_limit;
pub mod error;
pub mod event_stream;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod jwks;
pub mod limiter;
pub mod metrics;
pub mod outbound;
pub mod outcall;
pub mod passwords;
pub mod presence;
pub mod rfc3339;
pub mod room_pattern;
pub mod server;
pub mod session;
pub mod signing;
pub mod socketio;
pub mod store;
pub mod wall_clock;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchboard_protocol::{UserId, UserRef};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::app::{App, Parts};
use crate::auth::{Authenticator, JwtAuthenticator, KeyError, TokenSigner};
use crate::broker::Broker;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::RedisBroker;
use crate::config::{Config, ConfigError};
use crate::hooks::Hooks;
use crate::hub::{Hub, HubInbox};
use crate::jwks::JwksAuthenticator;
use crate::outcall::Outcall;
use crate::presence::Presence;
use crate::presence::memory::MemoryPresence;
use crate::presence::redis::RedisPresence;
use crate::server::Role;
use crate::signing::Signer;
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::postgres::{Outbox, PgConfig, PgStore};
use crate::webhooks::{
    Deliveries, EventSink, EventType, MemoryOutbox, PresenceAnnouncer, PushWorker, Subscription,
    WebhookOutbox, WebhookSettings,
};

/// How often `/readyz` re-checks the store and the broker.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(store::StoreError),
    #[error("cannot connect the broker: {0}")]
    Broker(broker::BrokerError),
    #[error("cannot connect presence: {0}")]
    Presence(presence::PresenceError),
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
}

/// Builds the node from its configuration: backends (PostgreSQL when `DATABASE_URL` is set,
/// else in memory), keys, metrics.
pub async fn build(config: Config) -> Result<Arc<App>, StartError> {
    config.validate()?;
    let node_id = config.node_id.clone().unwrap_or_else(|| {
        let id = uuid::Uuid::now_v7().simple().to_string();
        format!("n{}", &id[id.len() - 8..])
    });
    // First: backends resolve their metric handles when they start.
    let metrics = metrics::install()?;
    let dev_secret: Option<[u8; 32]> = config.dev_mode().then(rand::random);
    let dev_signer = dev_secret.as_ref().map(|secret| TokenSigner::hs256(secret));
    let api_keys = if config.api_keys.is_empty() && config.dev_mode() {
        let key: String = rand::random::<[u8; 16]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // Dev mode only: a real deployment sets its keys, which are never logged.
        tracing::warn!(
            "dev mode: the server API (/api/v1/) takes the random key dev-{key} \
             (set SWITCHBOARD_API_KEYS for keys of your own)"
        );
        vec![format!("dev-{key}")]
    } else {
        config.api_keys.clone()
    };
    let signer = Signer::new(&config.signing_secrets).map_err(|p| ConfigError(vec![p]))?;
    let webhook_settings =
        WebhookSettings::from_config(&config).map_err(|p| ConfigError(vec![p]))?;
    let authorities = match &config.outcall_ca_file {
        Some(path) => outcall::read_authorities(path)
            .map_err(|p| ConfigError(vec![format!("SWITCHBOARD_OUTCALL_CA_FILE: {p}")]))?,
        None => Vec::new(),
    };
    let outcall = Outcall::new(
        signer,
        config.hook_concurrency.max(config.webhook_concurrency),
        config.hook_timeout().max(
            webhook_settings
                .as_ref()
                .map_or(Duration::ZERO, |w| w.timeout),
        ),
        &authorities,
    )
    .map_err(|p| ConfigError(vec![format!("TLS for outcalls: {p}")]))?;
    let auth: Arc<dyn Authenticator> = match &config.jwt_jwks_url {
        Some(url) => {
            let jwks = JwksAuthenticator::start(&config, url, outcall.clone())
                .await
                .map_err(|p| ConfigError(vec![p]))?;
            let jwks = Arc::new(jwks);
            tokio::spawn(Arc::clone(&jwks).refresh_every(config.jwks_refresh()));
            jwks
        }
        None => Arc::new(JwtAuthenticator::from_config(
            &config,
            dev_secret.as_ref().map(|s| &s[..]),
        )?),
    };
    let subscription = webhook_settings
        .as_ref()
        .map(|_| Subscription::new(&config.webhook_events, &config.webhook_rooms))
        .transpose()
        .map_err(|p| ConfigError(vec![p]))?;
    let subscription_wants_push = subscription
        .as_ref()
        .is_some_and(|s| s.wants_any(EventType::Push));
    let wake = Arc::new(tokio::sync::Notify::new());
    let opened = with_patience("PostgreSQL", || {
        open_store(&config, subscription.clone(), &wake)
    })
    .await?;
    let (store, outbox) = (opened.store, opened.relay);
    let webhooks = webhook_settings
        .zip(opened.webhooks)
        .map(|(settings, outbox)| Deliveries {
            outbox,
            settings,
            outcall: outcall.clone(),
            wake,
        });
    let outbox = outbox.filter(|_| config.outbox_relay);
    let (broker, presence, hub): (Arc<dyn Broker>, Arc<dyn Presence>, Arc<Hub>) =
        match &config.redis_url {
            None => {
                tracing::info!("broker and presence: in process (set REDIS_URL for a cluster)");
                let broker = Arc::new(MemoryBroker::new());
                let hub = Arc::new(Hub::new(broker.clone(), Arc::clone(&store)));
                broker.attach(Arc::new(HubInbox(Arc::clone(&hub))));
                (broker, Arc::new(MemoryPresence::new()), hub)
            }
            Some(url) => {
                let broker = with_patience("Redis", || async {
                    RedisBroker::connect(url, &node_id)
                        .await
                        .map_err(StartError::Broker)
                })
                .await?;
                let hub = Arc::new(Hub::new(broker.clone(), Arc::clone(&store)));
                broker.attach(Arc::new(HubInbox(Arc::clone(&hub))));
                let ttl = config.presence_ttl();
                let presence = with_patience("Redis", || async {
                    RedisPresence::connect(url, &node_id, ttl)
                        .await
                        .map_err(StartError::Presence)
                })
                .await?;
                tracing::info!(node = %node_id, "broker and presence: Redis");
                (broker, Arc::new(presence), hub)
            }
        };
    let hooks = Hooks::new(&config, &node_id, outcall).map_err(|p| ConfigError(vec![p]))?;
    let announcer = webhooks
        .as_ref()
        .zip(subscription)
        .filter(|(_, subscription)| subscription.wants_presence())
        .map(|(deliveries, subscription)| {
            PresenceAnnouncer::new(
                Arc::clone(&presence),
                Arc::clone(&store),
                Arc::clone(&deliveries.outbox),
                subscription,
                config.presence_grace(),
                Arc::clone(&deliveries.wake),
            )
        });
    let push = webhooks
        .as_ref()
        .filter(|_| subscription_wants_push)
        .map(|deliveries| PushWorker::new(Arc::clone(&store), Arc::clone(&deliveries.wake)));
    let parts = Parts {
        hooks,
        webhooks,
        announcer,
        push,
        store,
        broker,
        presence,
        hub,
        auth,
        dev_signer,
        api_keys,
        outbox,
        metrics: Some(metrics),
    };
    Ok(Arc::new(App::new(config, node_id, parts)))
}

/// How long start-up keeps trying to reach a backend before giving up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// Retries `connect` with backoff until it succeeds or [`CONNECT_PATIENCE`] runs out: in a
/// cluster, backends often start at the same time as the gateways.
async fn with_patience<T, F, Fut>(what: &str, mut connect: F) -> Result<T, StartError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StartError>>,
{
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut backoff = Duration::from_millis(200);
    loop {
        match connect().await {
            Ok(value) => return Ok(value),
            Err(error) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::warn!(%error, "{what} not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
}

/// What [`open_store`] opened.
struct Opened {
    store: Arc<dyn Store>,
    /// With PostgreSQL: the relay of the app's outbox table.
    relay: Option<Outbox>,
    /// With webhooks: where the delivery worker finds them.
    webhooks: Option<Arc<dyn WebhookOutbox>>,
}

/// The store, and with PostgreSQL its outbox relay. With a webhook `subscription` the store
/// writes the subscribed events with its changes (in memory, or in its PostgreSQL
/// transactions), and `wake` rings this node's delivery worker.
async fn open_store(
    config: &Config,
    subscription: Option<Subscription>,
    wake: &Arc<tokio::sync::Notify>,
) -> Result<Opened, StartError> {
    let Some(mut pg) = PgConfig::from_config(config) else {
        tracing::info!(
            history = config.memory_history,
            "store: in memory (set DATABASE_URL for PostgreSQL)"
        );
        let store = MemoryStore::new(config.memory_history);
        let Some(subscription) = subscription else {
            return Ok(Opened {
                store: Arc::new(store),
                relay: None,
                webhooks: None,
            });
        };
        let outbox = Arc::new(MemoryOutbox::new(config.webhook_memory_limit));
        let sink = EventSink::new(
            subscription,
            Some(Arc::clone(&outbox)),
            config.push_delay(),
            Arc::clone(wake),
        );
        return Ok(Opened {
            store: Arc::new(store.with_events(sink)),
            relay: None,
            webhooks: Some(outbox),
        });
    };
    let with_webhooks = subscription.is_some();
    pg.events =
        subscription.map(|s| EventSink::new(s, None, config.push_delay(), Arc::clone(wake)));
    let store = Arc::new(PgStore::connect(&pg).await.map_err(StartError::Store)?);
    tracing::info!(
        pool = pg.pool_size,
        batch = pg.batch_max_messages,
        "store: PostgreSQL"
    );
    let relay = Some(store.outbox());
    let webhooks = with_webhooks.then(|| Arc::clone(&store) as Arc<dyn WebhookOutbox>);
    Ok(Opened {
        store,
        relay,
        webhooks,
    })
}

/// A listener with the configured accept queue (`TcpListener::bind` would ask for 1,024).
fn listen(addr: std::net::SocketAddr, backlog: u32) -> Result<TcpListener, StartError> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restarted node must not wait for old connections'
        // TIME_WAIT to bind its port again.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    bind().map_err(|source| StartError::Bind { addr, source })
}

/// Serves until SIGTERM or SIGINT, then drains: readiness flips, every session gets
/// `server:shutdown` and close 1001, and the call returns within the drain timeout.
pub async fn serve(app: Arc<App>) -> Result<(), StartError> {
    let config = &app.config;
    let bind = |addr| listen(addr, config.listen_backlog);
    let main = bind(config.listen)?;
    let admin = match config.admin_listen {
        Some(addr) => Some(bind(addr)?),
        None => None,
    };
    let local = main.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let stop_accepting = CancellationToken::new();
    let mut loops = tokio::task::JoinSet::new();
    let role = Role::Main {
        with_admin: admin.is_none(),
    };
    loops.spawn(server::accept_loop(
        Arc::clone(&app),
        main,
        role,
        stop_accepting.clone(),
    ));
    if let Some(admin) = admin {
        let stop = stop_accepting.clone();
        loops.spawn(server::accept_loop(
            Arc::clone(&app),
            admin,
            Role::Admin,
            stop,
        ));
    }
    tracing::info!(addr = %local, node = %app.node_id, "gateway listening");
    if let Some(signer) = &app.dev_signer {
        announce_dev_mode(signer, local);
    }
    let health = Arc::clone(&app);
    tokio::spawn(async move { health.watch_health(HEALTH_INTERVAL).await });
    let presence = Arc::clone(&app);
    tokio::spawn(async move { presence.maintain_presence().await });
    if let Some(outbox) = app.outbox.clone() {
        tokio::spawn(outbox.run(Arc::clone(&app)));
    }
    if let Some(deliveries) = app.webhooks.clone() {
        tokio::spawn(deliveries.run(stop_accepting.clone()));
    }
    if let Some(announcer) = app.announcer.clone() {
        tokio::spawn(announcer.run(stop_accepting.clone()));
    }
    if let Some(push) = app.push.clone() {
        tokio::spawn(push.run(stop_accepting.clone()));
    }

    wait_for_signal().await;
    tracing::info!(
        open = app.open.load(Ordering::Acquire),
        "shutting down: draining connections"
    );
    app.draining.store(true, Ordering::Release);
    app.shutdown.cancel();
    app.sessions.close();
    if tokio::time::timeout(config.drain_timeout(), app.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(left = app.sessions.len(), "drain timeout: closing the rest");
    }
    stop_accepting.cancel();
    while loops.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

fn announce_dev_mode(signer: &TokenSigner, addr: std::net::SocketAddr) {
    let Ok(id) = UserId::parse("dev") else { return };
    let user = UserRef {
        id,
        name: "Dev".into(),
    };
    match signer.sign(&user, Duration::from_secs(24 * 3_600)) {
        Ok(token) => tracing::warn!(
            "dev mode: no SWITCHBOARD_JWT_SECRET set, tokens are signed with a random key. \
             Chat page: {}  Sample token (user \"dev\", 24 h): {token}",
            chat_page_url(addr)
        ),
        Err(error) => tracing::error!(%error, "cannot sign the dev token"),
    }
}

/// The chat page's address as a person opens it from this machine. `0.0.0.0` and `[::]` mean
/// "every interface" to `bind` but are no address to browse to, so they become `localhost`.
fn chat_page_url(addr: std::net::SocketAddr) -> String {
    match addr {
        addr if addr.ip().is_unspecified() => format!("http://localhost:{}/", addr.port()),
        // A URL escapes the `%` before a link-local address's zone (RFC 6874).
        std::net::SocketAddr::V6(v6) if v6.scope_id() != 0 => {
            format!("http://[{}%25{}]:{}/", v6.ip(), v6.scope_id(), v6.port())
        }
        addr => format!("http://{addr}/"),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the node");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::chat_page_url;

    #[test]
    fn the_chat_page_is_announced_at_an_address_a_browser_opens() {
        let url = |addr: &str| chat_page_url(addr.parse().expect("an address"));
        assert_eq!(url("0.0.0.0:8080"), "http://localhost:8080/");
        assert_eq!(url("[::]:8080"), "http://localhost:8080/");
        assert_eq!(url("127.0.0.1:9000"), "http://127.0.0.1:9000/");
        assert_eq!(url("192.168.1.20:8080"), "http://192.168.1.20:8080/");
        assert_eq!(url("[::1]:8080"), "http://[::1]:8080/");
        assert_eq!(url("[fe80::1%2]:8080"), "http://[fe80::1%252]:8080/");
    }
}

/// Docs that must stay true: every setting in the README, every metric in docs/operations.md.
#[cfg(test)]
mod tidy {
    const README: &str = include_str!("../../../README.md");
    const OPERATIONS: &str = include_str!("../../../docs/operations.md");

    fn quoted_after<'a>(source: &'a str, marker: &'a str) -> impl Iterator<Item = &'a str> {
        source
            .split(marker)
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
    }

    #[test]
    fn every_setting_is_in_the_readme_table() {
        let names: Vec<_> = quoted_after(include_str!("config.rs"), "env = \"").collect();
        assert!(names.len() > 20, "found {names:?}");
        for name in names {
            assert!(
                README.contains(&format!("| `{name}` |")),
                "{name} is missing from README.md's table"
            );
        }
    }

    #[test]
    fn every_metric_is_in_the_operations_guide() {
        let sources = [
            include_str!("metrics.rs"),
            include_str!("broker/redis.rs"),
            include_str!("presence/redis.rs"),
            include_str!("store/postgres/batch.rs"),
        ];
        let names: Vec<_> = sources
            .iter()
            .flat_map(|source| quoted_after(source, ": &str = \""))
            .filter(|name| name.starts_with("switchboard_"))
            .collect();
        assert!(names.len() > 15, "found {names:?}");
        for name in names {
            assert!(
                OPERATIONS.contains(&format!("| `{name}` |")),
                "{name} is missing from docs/operations.md"
            );
        }
    }
}

//! Configuration: command-line flags, each with an environment variable.
//!
//! Every setting is listed in the README's configuration table. [`Config::validate`] reports
//! every problem at once, so an operator fixes a bad deployment in one round.
//!
//! The variables are read through [`Environment`], not by clap from the process: `main` passes
//! [`ProcessEnv`], tests pass a map, so a variable exported in a developer's or CI's shell cannot
//! change a test's outcome, and no test needs `set_var` (which `clippy.toml` forbids).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::hash::{BuildHasher, Hash};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::room_pattern::RoomPatterns;
use crate::signing::Signer;

#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Switchboard real-time WebSocket gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

impl Cli {
    /// Parses `args` (the program name first) with `env` standing in for the process
    /// environment: a flag wins over its variable, a variable over the built-in default.
    pub fn try_parse_with<I, T>(args: I, env: &impl Environment) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = with_env(Self::command(), env);
        let mut matches = command.try_get_matches_from_mut(args)?;
        Self::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
    }
}

/// Where settings come from besides the command line.
pub trait Environment {
    /// The variable's value, `None` when unset.
    fn var(&self, name: &str) -> Option<OsString>;
}

/// The process environment, for `main`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }
}

impl<K, V, S> Environment for HashMap<K, V, S>
where
    K: Borrow<str> + Eq + Hash,
    V: AsRef<OsStr>,
    S: BuildHasher,
{
    fn var(&self, name: &str) -> Option<OsString> {
        self.get(name).map(|v| v.as_ref().to_owned())
    }
}

impl<K, V> Environment for BTreeMap<K, V>
where
    K: Borrow<str> + Ord,
    V: AsRef<OsStr>,
{
    fn var(&self, name: &str) -> Option<OsString> {
        self.get(name).map(|v| v.as_ref().to_owned())
    }
}

/// `command` with every argument's variable looked up in `env`. clap's `env` captures the
/// process's value when the argument is built, so it is removed, and a value found in `env`
/// becomes the argument's default instead: clap applies a default exactly where it would apply
/// a variable (only when the flag is absent, split at the value delimiter).
fn with_env(command: clap::Command, env: &impl Environment) -> clap::Command {
    command
        .mut_args(|arg| env_as_default(arg, env))
        .mut_subcommands(|sub| with_env(sub, env))
}

fn env_as_default(arg: Arg, env: &impl Environment) -> Arg {
    let Some(name) = arg.get_env().map(|n| n.to_string_lossy().into_owned()) else {
        return arg;
    };
    let value = env.var(&name);
    // `--help` still names each variable, and its value unless it is a secret, as clap would;
    // the built-in default stays visible rather than the variable's value posing as one.
    let mut note = match &value {
        Some(v) if !arg.is_hide_env_values_set() => format!("[env: {name}={}]", v.display()),
        _ => format!("[env: {name}]"),
    };
    let arg = arg.env(None::<&str>);
    let Some(value) = value else {
        return with_help_note(arg, &note);
    };
    let defaults: Vec<_> = arg
        .get_default_values()
        .iter()
        .map(|d| d.to_string_lossy())
        .collect();
    if !defaults.is_empty() && !arg.is_hide_default_value_set() {
        note.push_str(&format!(" [default: {}]", defaults.join(" ")));
    }
    with_help_note(arg, &note)
        .default_value(value)
        .hide_default_value(true)
}

fn with_help_note(arg: Arg, note: &str) -> Arg {
    let help = arg.get_help().map(|h| format!("{h} {note}"));
    let long_help = arg.get_long_help().map(|h| format!("{h}\n\n{note}"));
    let arg = arg.help(help.unwrap_or_else(|| note.to_owned()));
    match long_help {
        Some(long) => arg.long_help(long),
        None => arg,
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Print a token signed with the configured key (HS256 secret or RS256/ES256 private key).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// User id, the token's `sub`.
    #[arg(long)]
    pub user: String,
    /// Display name, the token's `name`; the user id when absent.
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime, like `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// PEM private key, needed to sign RS256/ES256 tokens.
    #[arg(long, env = "SWITCHBOARD_JWT_PRIVATE_KEY_FILE")]
    pub private_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum JwtAlgorithm {
    Hs256,
    Rs256,
    Es256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Shortest server API key: long enough not to be guessed.
pub const MIN_API_KEY_BYTES: usize = 16;
/// Longest server API key.
pub const MAX_API_KEY_BYTES: usize = 256;

/// Every setting of a gateway node.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Main listener: WebSockets at /ws, plus health, metrics and (dev mode) the chat page.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Separate listener for /metrics, /healthz and /readyz; on the main listener when unset.
    #[arg(long, env = "SWITCHBOARD_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Name of this node in logs and connection ids; random when unset.
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<String>,

    /// HS256 shared secret. With no key at all the gateway runs in dev mode.
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// HS256 secret being rotated out: tokens signed with it are still accepted until
    /// `SWITCHBOARD_JWT_PREVIOUS_SECRET_UNTIL`, then refused (no restart needed).
    #[arg(long, env = "SWITCHBOARD_JWT_PREVIOUS_SECRET", hide_env_values = true)]
    pub jwt_previous_secret: Option<String>,
    /// When the previous secret stops being accepted: RFC 3339 UTC, like `2026-12-01T00:00:00Z`.
    #[arg(long, env = "SWITCHBOARD_JWT_PREVIOUS_SECRET_UNTIL")]
    pub jwt_previous_secret_until: Option<String>,
    /// Token algorithm; pinned, tokens signed otherwise are refused.
    #[arg(
        long,
        env = "SWITCHBOARD_JWT_ALGORITHM",
        value_enum,
        default_value = "HS256"
    )]
    pub jwt_algorithm: JwtAlgorithm,
    /// PEM public key for RS256/ES256.
    #[arg(long, env = "SWITCHBOARD_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` claim, checked when set.
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, checked when set.
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// An identity provider's JSON Web Key Set (Auth0, Keycloak, Cognito...): tokens are
    /// verified with the key their `kid` names (RS256, ES256, EdDSA), instead of a configured
    /// secret or key file.
    #[arg(long, env = "SWITCHBOARD_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// How often the key set is fetched again in the background.
    #[arg(
        long,
        env = "SWITCHBOARD_JWT_JWKS_REFRESH_MS",
        default_value_t = 300_000
    )]
    pub jwt_jwks_refresh_ms: u64,
    /// Least time between two fetches asked for by tokens naming a key the set lacks.
    #[arg(
        long,
        env = "SWITCHBOARD_JWT_JWKS_MIN_REFRESH_MS",
        default_value_t = 10_000
    )]
    pub jwt_jwks_min_refresh_ms: u64,
    /// Time allowed for the first-frame `auth` when no Authorization header was sent.
    #[arg(long, env = "SWITCHBOARD_AUTH_TIMEOUT_MS", default_value_t = 5_000)]
    pub auth_timeout_ms: u64,

    /// The server pings every connection this often.
    #[arg(
        long,
        env = "SWITCHBOARD_HEARTBEAT_INTERVAL_MS",
        default_value_t = 25_000
    )]
    pub heartbeat_interval_ms: u64,
    /// A connection silent for this long is closed (4004).
    #[arg(
        long,
        env = "SWITCHBOARD_HEARTBEAT_TIMEOUT_MS",
        default_value_t = 75_000
    )]
    pub heartbeat_timeout_ms: u64,

    /// How long before a connection's token expires the server sends `auth:expiring`, for the
    /// client to send `auth:refresh` in time; 0: never.
    #[arg(
        long,
        env = "SWITCHBOARD_TOKEN_REFRESH_NOTICE_MS",
        default_value_t = 60_000
    )]
    pub token_refresh_notice_ms: u64,
    /// Largest accepted frame; larger ones close the connection (1009).
    #[arg(long, env = "SWITCHBOARD_MAX_FRAME_BYTES", default_value_t = 65_536)]
    pub max_frame_bytes: usize,
    /// Longest message content, in characters.
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_CHARS", default_value_t = 5_000)]
    pub max_message_chars: usize,
    /// Frames per second a connection may send, sustained.
    #[arg(long, env = "SWITCHBOARD_RATE_PER_SEC", default_value_t = 50)]
    pub rate_per_sec: u32,
    /// Frames a connection may send in a burst.
    #[arg(long, env = "SWITCHBOARD_RATE_BURST", default_value_t = 100)]
    pub rate_burst: u32,
    /// Rate-limited frames within 10 s after which the connection is closed (4006).
    #[arg(long, env = "SWITCHBOARD_RATE_STRIKES", default_value_t = 20)]
    pub rate_strikes: u32,
    /// Connections one user may hold; opening one more closes the oldest (4007).
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_CONNECTIONS_PER_USER",
        default_value_t = 8
    )]
    pub max_connections_per_user: usize,
    /// Connections this node accepts; beyond it upgrades are refused with HTTP 503.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Allowed `Origin` values, comma-separated; any origin when empty.
    #[arg(long, env = "SWITCHBOARD_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Where `socket.io-client` apps connect (docs/socketio.md); empty turns Socket.IO off.
    #[arg(long, env = "SWITCHBOARD_SOCKETIO_PATH", default_value = "/socket.io/")]
    pub socketio_path: String,
    /// How long after its first connect a Socket.IO socket may be recovered (its missed events
    /// replayed from the store); 0 turns recovery off.
    #[arg(
        long,
        env = "SWITCHBOARD_SOCKETIO_RECOVERY_WINDOW_MS",
        default_value_t = 7_200_000
    )]
    pub socketio_recovery_window_ms: u64,
    /// Frames queued for one connection before it is closed as a slow consumer (4005).
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_QUEUE", default_value_t = 1_024)]
    pub outbound_queue: usize,
    /// Time a connection may take to accept one batch of writes before it is closed (4005).
    #[arg(long, env = "SWITCHBOARD_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_timeout_ms: u64,
    /// Time a connection's outbound queue may stay non-empty before it is closed (4005): a
    /// client (or, on an overloaded node, its session) this far behind is cut off and resumes
    /// from the store, rather than falling further behind.
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUE_DELAY_MS", default_value_t = 2_000)]
    pub max_queue_delay_ms: u64,
    /// Connections the kernel queues for each listener before they are accepted. A node that
    /// died sends its clients to the others all at once; a short queue drops their connects,
    /// which retry only after a second. Linux caps it at `net.core.somaxconn`.
    #[arg(long, env = "SWITCHBOARD_LISTEN_BACKLOG", default_value_t = 4_096)]
    pub listen_backlog: u32,
    /// Bytes read from a socket at a time; small keeps idle connections cheap.
    #[arg(long, env = "SWITCHBOARD_READ_BUFFER_BYTES", default_value_t = 512)]
    pub read_buffer_bytes: usize,
    /// Threads running sessions; the CPUs this process may use when unset. `1` selects tokio's
    /// current-thread scheduler (runnable sessions in one FIFO queue), which is also the default
    /// on one CPU in embedded mode (no Redis, no PostgreSQL).
    #[arg(long, env = "SWITCHBOARD_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Longest time graceful shutdown waits for connections to close.
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// Largest `room:emit` data, in bytes of its JSON encoding.
    #[arg(long, env = "SWITCHBOARD_MAX_EVENT_BYTES", default_value_t = 8_192)]
    pub max_event_bytes: usize,
    /// `room:emit` events a connection may send per second (a token bucket of its own, inside
    /// the general rate limit).
    #[arg(long, env = "SWITCHBOARD_EVENT_RATE_PER_SEC", default_value_t = 30)]
    pub event_rate_per_sec: u32,
    /// Burst size of the `room:emit` token bucket.
    #[arg(long, env = "SWITCHBOARD_EVENT_RATE_BURST", default_value_t = 60)]
    pub event_rate_burst: u32,
    /// New connections (WebSockets, SSE streams) one client address may open per second,
    /// sustained; more are refused with HTTP 429 before the upgrade. 0 turns the limit off.
    #[arg(long, env = "SWITCHBOARD_CONNECT_RATE_PER_IP", default_value_t = 0)]
    pub connect_rate_per_ip: u32,
    /// Connections one address may open in a burst, above its sustained rate.
    #[arg(long, env = "SWITCHBOARD_CONNECT_BURST_PER_IP", default_value_t = 20)]
    pub connect_burst_per_ip: u32,
    /// Proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` / `X-Real-IP`
    /// name the client, for the per-address limit.
    #[arg(long, env = "SWITCHBOARD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Server API keys (`Authorization: Bearer <key>` on `/api/v1/`), comma-separated: several
    /// at once for rotation. The API is off when none is set; in dev mode a random key is made
    /// and logged.
    #[arg(
        long,
        env = "SWITCHBOARD_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Server API requests one key may make per second.
    #[arg(long, env = "SWITCHBOARD_API_RATE_PER_SEC", default_value_t = 1_000)]
    pub api_rate_per_sec: u32,
    /// Burst size of each API key's token bucket.
    #[arg(long, env = "SWITCHBOARD_API_RATE_BURST", default_value_t = 2_000)]
    pub api_rate_burst: u32,
    /// Largest server API request body, in bytes.
    #[arg(
        long,
        env = "SWITCHBOARD_API_MAX_BODY_BYTES",
        default_value_t = 1_048_576
    )]
    pub api_max_body_bytes: usize,
    /// The connect hook: called after a token is verified, it may refuse the connection, rename
    /// the user or add rooms (docs/hooks.md). Off when unset.
    #[arg(long, env = "SWITCHBOARD_HOOK_CONNECT_URL")]
    pub hook_connect_url: Option<String>,
    /// The join hook: called before a user becomes a member of a room matching
    /// `SWITCHBOARD_HOOK_JOIN_ROOMS` (`room:join`, `room:create`). Off when unset.
    #[arg(long, env = "SWITCHBOARD_HOOK_JOIN_URL")]
    pub hook_join_url: Option<String>,
    /// Room patterns (`*` stands for any characters), comma-separated: the rooms the join hook
    /// decides for.
    #[arg(
        long,
        env = "SWITCHBOARD_HOOK_JOIN_ROOMS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub hook_join_rooms: Vec<String>,
    /// The rpc hook: where `rpc` frames go. `rpc` is refused when unset.
    #[arg(long, env = "SWITCHBOARD_HOOK_RPC_URL")]
    pub hook_rpc_url: Option<String>,
    /// Longest a hook call may take, waiting for a free slot included; then the client is
    /// answered `HOOK_UNAVAILABLE`.
    #[arg(long, env = "SWITCHBOARD_HOOK_TIMEOUT_MS", default_value_t = 2_000)]
    pub hook_timeout_ms: u64,
    /// Hook calls in flight at once on this node; more wait for a slot within their timeout.
    #[arg(long, env = "SWITCHBOARD_HOOK_CONCURRENCY", default_value_t = 256)]
    pub hook_concurrency: usize,
    /// Failed calls in a row after which a hook is not called for a cooldown (circuit breaker).
    #[arg(long, env = "SWITCHBOARD_HOOK_BREAKER_FAILURES", default_value_t = 5)]
    pub hook_breaker_failures: u32,
    /// How long an open breaker answers `HOOK_UNAVAILABLE` before one call tries again.
    #[arg(
        long,
        env = "SWITCHBOARD_HOOK_BREAKER_COOLDOWN_MS",
        default_value_t = 5_000
    )]
    pub hook_breaker_cooldown_ms: u64,
    /// Where webhooks go (docs/webhooks.md). Off when unset.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Event types to send, comma-separated; every type when unset.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_EVENTS", value_delimiter = ',')]
    pub webhook_events: Vec<String>,
    /// Room patterns (`*` stands for any characters), comma-separated: room events only for
    /// these rooms.
    #[arg(
        long,
        env = "SWITCHBOARD_WEBHOOK_ROOMS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub webhook_rooms: Vec<String>,
    /// Longest one delivery attempt may take.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
    /// Delivery attempts in flight at once on this node.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_CONCURRENCY", default_value_t = 32)]
    pub webhook_concurrency: usize,
    /// How long a webhook is retried before it is kept as failed.
    #[arg(
        long,
        env = "SWITCHBOARD_WEBHOOK_RETRY_FOR_MS",
        default_value_t = 86_400_000
    )]
    pub webhook_retry_for_ms: u64,
    /// The first retry's wait at most; each later one doubles it (full jitter).
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_BACKOFF_MS", default_value_t = 1_000)]
    pub webhook_backoff_ms: u64,
    /// The longest wait between two attempts.
    #[arg(
        long,
        env = "SWITCHBOARD_WEBHOOK_BACKOFF_MAX_MS",
        default_value_t = 600_000
    )]
    pub webhook_backoff_max_ms: u64,
    /// How often a node looks for due webhooks besides being woken by its own writes (with
    /// PostgreSQL, other nodes' events and retries come due this way).
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_POLL_MS", default_value_t = 1_000)]
    pub webhook_poll_ms: u64,
    /// Embedded mode: most webhooks the in-memory outbox holds (pending, and failed ones
    /// separately); a new event finding it full is dropped.
    #[arg(
        long,
        env = "SWITCHBOARD_WEBHOOK_MEMORY_LIMIT",
        default_value_t = 10_000
    )]
    pub webhook_memory_limit: usize,
    /// A PEM file of certificate authorities to trust for `https://` hooks, webhooks and JWKS,
    /// besides the built-in Mozilla roots: an internal CA in front of the app's backend.
    #[arg(long, env = "SWITCHBOARD_OUTCALL_CA_FILE")]
    pub outcall_ca_file: Option<PathBuf>,

    /// Standard Webhooks secrets (`whsec_<base64>`), comma-separated, the current one first:
    /// every hook call and webhook is signed with each. Required with hooks or webhooks.
    #[arg(
        long,
        env = "SWITCHBOARD_SIGNING_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub signing_secrets: Vec<String>,
    /// A typing indicator stops by itself this long after the last `typing:start`.
    #[arg(long, env = "SWITCHBOARD_TYPING_TIMEOUT_MS", default_value_t = 3_000)]
    pub typing_timeout_ms: u64,
    /// Missed messages a `room:join {sinceSeq}` replays; beyond it the reply says recovered: false.
    #[arg(long, env = "SWITCHBOARD_MAX_REPLAY", default_value_t = 1_000)]
    pub max_replay: usize,
    /// Messages the in-memory store keeps per room (embedded mode only).
    #[arg(long, env = "SWITCHBOARD_MEMORY_HISTORY", default_value_t = 10_000)]
    pub memory_history: usize,

    /// PostgreSQL for durable storage, e.g. `postgres://user:pass@db:5432/switchboard`. The
    /// in-memory store when unset.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "SWITCHBOARD_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
    /// Longest a statement may run (and a pool checkout or connect may wait) before the request
    /// fails with STORE_UNAVAILABLE.
    #[arg(long, env = "SWITCHBOARD_DB_TIMEOUT_MS", default_value_t = 5_000)]
    pub db_timeout_ms: u64,
    /// Sessions doing their start-up calls (store and presence, before `session:ready`) at
    /// once; the rest wait their turn in arrival order. Default: four per PostgreSQL pool
    /// connection, so a reconnect storm queues in the gateway instead of in the pool, where
    /// every checkout's timeout runs.
    #[arg(long, env = "SWITCHBOARD_MAX_STARTING_SESSIONS")]
    pub max_starting_sessions: Option<usize>,
    /// Whether this node relays the PostgreSQL outbox (`switchboard_outbox`) into rooms; one
    /// relay drains at a time, so any number of nodes may.
    #[arg(
        long,
        env = "SWITCHBOARD_OUTBOX_RELAY",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub outbox_relay: bool,
    /// Group commit: most messages written in one transaction (1 = a transaction per message).
    #[arg(long, env = "SWITCHBOARD_BATCH_MAX_MESSAGES", default_value_t = 256)]
    pub batch_max_messages: usize,
    /// Group commit: longest a message waits for others to share its transaction.
    #[arg(long, env = "SWITCHBOARD_BATCH_MAX_DELAY_US", default_value_t = 2_000)]
    pub batch_max_delay_us: u64,

    /// Redis for fan-out between nodes and cluster-wide presence, e.g. `redis://redis:6379`.
    /// One node with an in-process broker when unset.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// A node whose presence lease is not refreshed for this long is dead: its users go offline
    /// everywhere.
    #[arg(long, env = "SWITCHBOARD_PRESENCE_TTL_MS", default_value_t = 15_000)]
    pub presence_ttl_ms: u64,
    /// How often a node refreshes its lease and looks for dead nodes.
    #[arg(long, env = "SWITCHBOARD_PRESENCE_REFRESH_MS", default_value_t = 5_000)]
    pub presence_refresh_ms: u64,
    /// How long a user may be gone (a page reload, a node failing over) before the
    /// `user.offline` webhook: back within it, on any node, and neither it nor a new
    /// `user.online` is sent.
    #[arg(long, env = "SWITCHBOARD_PRESENCE_GRACE_MS", default_value_t = 5_000)]
    pub presence_grace_ms: u64,

    /// How long a member has to read a message (or a user a notification) before it is owed to
    /// them in a `push` webhook; also the batch window: at most one push per user per window.
    #[arg(long, env = "SWITCHBOARD_PUSH_DELAY_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub push_delay_ms: u64,

    /// Log filter, in `tracing` EnvFilter syntax.
    #[arg(long, env = "SWITCHBOARD_LOG", default_value = "info")]
    pub log: String,
    #[arg(
        long,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// Everything wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl ConfigError {
    fn unless_empty(problems: Vec<String>) -> Result<(), Self> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Self(problems))
        }
    }
}

impl Config {
    /// Checks every setting and reports every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = self.key_problems();
        let mut require = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        // Only verifying needs the public key: `gateway token` signs with the private one.
        if self.jwt_algorithm != JwtAlgorithm::Hs256 && self.jwt_jwks_url.is_none() {
            require(
                self.jwt_public_key_file.is_some(),
                "SWITCHBOARD_JWT_ALGORITHM RS256/ES256 needs SWITCHBOARD_JWT_PUBLIC_KEY_FILE",
            );
        }
        require(
            self.heartbeat_interval_ms > 0,
            "SWITCHBOARD_HEARTBEAT_INTERVAL_MS must be > 0",
        );
        require(
            self.heartbeat_timeout_ms > self.heartbeat_interval_ms,
            "SWITCHBOARD_HEARTBEAT_TIMEOUT_MS must be longer than the heartbeat interval",
        );
        require(
            self.max_frame_bytes >= 1_024,
            "SWITCHBOARD_MAX_FRAME_BYTES must be >= 1024",
        );
        require(
            self.max_message_chars > 0,
            "SWITCHBOARD_MAX_MESSAGE_CHARS must be > 0",
        );
        require(
            self.rate_per_sec > 0,
            "SWITCHBOARD_RATE_PER_SEC must be > 0",
        );
        require(self.rate_burst > 0, "SWITCHBOARD_RATE_BURST must be > 0");
        require(
            self.rate_strikes > 0,
            "SWITCHBOARD_RATE_STRIKES must be > 0",
        );
        require(
            self.max_connections_per_user > 0,
            "SWITCHBOARD_MAX_CONNECTIONS_PER_USER must be > 0",
        );
        require(
            self.max_connections > 0,
            "SWITCHBOARD_MAX_CONNECTIONS must be > 0",
        );
        require(
            self.outbound_queue >= 16,
            "SWITCHBOARD_OUTBOUND_QUEUE must be >= 16",
        );
        require(
            (100..=u64::from(crate::outbound::MAX_DELAY_MS)).contains(&self.max_queue_delay_ms),
            "SWITCHBOARD_MAX_QUEUE_DELAY_MS must be 100-600000",
        );
        require(
            self.listen_backlog >= 1,
            "SWITCHBOARD_LISTEN_BACKLOG must be >= 1",
        );
        require(
            self.read_buffer_bytes >= 256,
            "SWITCHBOARD_READ_BUFFER_BYTES must be >= 256",
        );
        require(
            self.worker_threads != Some(0),
            "SWITCHBOARD_WORKER_THREADS must be >= 1",
        );
        require(
            self.auth_timeout_ms > 0,
            "SWITCHBOARD_AUTH_TIMEOUT_MS must be > 0",
        );
        require(
            self.memory_history >= 100,
            "SWITCHBOARD_MEMORY_HISTORY must be >= 100",
        );
        require(
            self.db_pool_size > 0,
            "SWITCHBOARD_DB_POOL_SIZE must be > 0",
        );
        require(
            self.db_timeout_ms > 0,
            "SWITCHBOARD_DB_TIMEOUT_MS must be > 0",
        );
        require(
            self.max_event_bytes >= 4,
            "SWITCHBOARD_MAX_EVENT_BYTES must be >= 4 (the size of null)",
        );
        require(
            self.event_rate_per_sec > 0 && self.event_rate_burst > 0,
            "SWITCHBOARD_EVENT_RATE_PER_SEC and SWITCHBOARD_EVENT_RATE_BURST must be > 0",
        );
        require(
            self.api_keys.iter().all(|key| {
                (MIN_API_KEY_BYTES..=MAX_API_KEY_BYTES).contains(&key.len())
                    && key.bytes().all(|b| b.is_ascii_graphic())
            }),
            "SWITCHBOARD_API_KEYS: every key must be 16-256 printable ASCII characters without spaces",
        );
        require(
            self.api_rate_per_sec > 0 && self.api_rate_burst > 0,
            "SWITCHBOARD_API_RATE_PER_SEC and SWITCHBOARD_API_RATE_BURST must be > 0",
        );
        require(
            self.api_max_body_bytes >= 1_024,
            "SWITCHBOARD_API_MAX_BODY_BYTES must be >= 1024",
        );
        require(
            self.max_starting_sessions != Some(0),
            "SWITCHBOARD_MAX_STARTING_SESSIONS must be > 0",
        );
        require(
            (1..=10_000).contains(&self.batch_max_messages),
            "SWITCHBOARD_BATCH_MAX_MESSAGES must be 1-10000",
        );
        if let Some(url) = &self.database_url {
            require(
                url.starts_with("postgres://") || url.starts_with("postgresql://"),
                "DATABASE_URL must be a postgres:// URL",
            );
        }
        require(
            self.presence_refresh_ms > 0 && self.presence_ttl_ms > self.presence_refresh_ms * 2,
            "SWITCHBOARD_PRESENCE_TTL_MS must be more than twice SWITCHBOARD_PRESENCE_REFRESH_MS",
        );
        if let Some(url) = &self.redis_url {
            require(
                url.starts_with("redis://") || url.starts_with("rediss://"),
                "REDIS_URL must be a redis:// URL",
            );
        }
        if let Some(node) = &self.node_id {
            require(
                !node.is_empty()
                    && node.len() <= 32
                    && node
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "SWITCHBOARD_NODE_ID must be 1-32 characters of A-Z a-z 0-9 - _",
            );
        }
        problems.extend(self.hook_problems());
        ConfigError::unless_empty(problems)
    }

    /// What is wrong with the hook settings.
    fn hook_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, url) in [
            ("SWITCHBOARD_HOOK_CONNECT_URL", &self.hook_connect_url),
            ("SWITCHBOARD_HOOK_JOIN_URL", &self.hook_join_url),
            ("SWITCHBOARD_HOOK_RPC_URL", &self.hook_rpc_url),
        ] {
            if let Some(url) = url
                && let Err(problem) = crate::outcall::parse_url(url)
            {
                problems.push(format!("{name}: {problem}"));
            }
        }
        if let Err(problem) = RoomPatterns::parse(&self.hook_join_rooms) {
            problems.push(format!("SWITCHBOARD_HOOK_JOIN_ROOMS: {problem}"));
        }
        match Signer::new(&self.signing_secrets) {
            Err(problem) => problems.push(format!("SWITCHBOARD_SIGNING_SECRETS: {problem}")),
            Ok(signer) if signer.is_empty() && (self.any_hook() || self.webhook_url.is_some()) => {
                problems.push(
                    "SWITCHBOARD_SIGNING_SECRETS is required with hooks and webhooks: the app must \
                     be able to tell Switchboard's calls from anyone else's"
                        .to_owned(),
                )
            }
            Ok(_) => {}
        }
        if !(10..=60_000).contains(&self.hook_timeout_ms) {
            problems.push("SWITCHBOARD_HOOK_TIMEOUT_MS must be 10-60000".to_owned());
        }
        if self.hook_concurrency == 0 {
            problems.push("SWITCHBOARD_HOOK_CONCURRENCY must be > 0".to_owned());
        }
        if self.hook_breaker_failures == 0 {
            problems.push("SWITCHBOARD_HOOK_BREAKER_FAILURES must be > 0".to_owned());
        }
        for proxy in &self.trusted_proxies {
            if let Err(problem) = crate::connect_limit::Cidr::parse(proxy) {
                problems.push(format!("SWITCHBOARD_TRUSTED_PROXIES: {problem}"));
            }
        }
        if self.connect_burst_per_ip == 0 {
            problems.push("SWITCHBOARD_CONNECT_BURST_PER_IP must be > 0".to_owned());
        }
        if let Some(url) = &self.webhook_url
            && let Err(problem) = crate::outcall::parse_url(url)
        {
            problems.push(format!("SWITCHBOARD_WEBHOOK_URL: {problem}"));
        }
        if let Err(problem) =
            crate::webhooks::Subscription::new(&self.webhook_events, &self.webhook_rooms)
        {
            problems.push(format!(
                "SWITCHBOARD_WEBHOOK_EVENTS / SWITCHBOARD_WEBHOOK_ROOMS: {problem}"
            ));
        }
        let mut require = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        require(
            (100..=600_000).contains(&self.webhook_timeout_ms),
            "SWITCHBOARD_WEBHOOK_TIMEOUT_MS must be 100-600000",
        );
        require(
            (1..=4_096).contains(&self.webhook_concurrency),
            "SWITCHBOARD_WEBHOOK_CONCURRENCY must be 1-4096",
        );
        require(
            self.webhook_backoff_ms >= 1 && self.webhook_backoff_max_ms >= self.webhook_backoff_ms,
            "SWITCHBOARD_WEBHOOK_BACKOFF_MS must be >= 1 and <= SWITCHBOARD_WEBHOOK_BACKOFF_MAX_MS",
        );
        require(
            self.webhook_poll_ms >= 10,
            "SWITCHBOARD_WEBHOOK_POLL_MS must be >= 10",
        );
        require(
            self.webhook_memory_limit >= 1,
            "SWITCHBOARD_WEBHOOK_MEMORY_LIMIT must be >= 1",
        );
        problems
    }

    /// Whether any hook is configured.
    pub fn any_hook(&self) -> bool {
        self.hook_connect_url.is_some()
            || self.hook_join_url.is_some()
            || self.hook_rpc_url.is_some()
    }

    pub fn hook_timeout(&self) -> Duration {
        Duration::from_millis(self.hook_timeout_ms)
    }

    pub fn hook_breaker_cooldown(&self) -> Duration {
        Duration::from_millis(self.hook_breaker_cooldown_ms)
    }

    /// Checks the key settings alone, with the same words as [`Config::validate`]: `gateway
    /// token` must not print a token signed with a key the server refuses to start with.
    pub fn validate_key(&self) -> Result<(), ConfigError> {
        ConfigError::unless_empty(self.key_problems())
    }

    fn key_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut require = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        match self.jwt_algorithm {
            JwtAlgorithm::Hs256 => require(
                self.jwt_public_key_file.is_none(),
                "SWITCHBOARD_JWT_PUBLIC_KEY_FILE is set but SWITCHBOARD_JWT_ALGORITHM is HS256",
            ),
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => require(
                self.jwt_secret.is_none(),
                "SWITCHBOARD_JWT_SECRET is set but SWITCHBOARD_JWT_ALGORITHM is not HS256",
            ),
        }
        if let Some(url) = &self.jwt_jwks_url {
            if let Err(problem) = crate::outcall::parse_url(url) {
                problems.push(format!("SWITCHBOARD_JWT_JWKS_URL: {problem}"));
            }
            let mut require = |ok: bool, problem: &str| {
                if !ok {
                    problems.push(problem.to_owned());
                }
            };
            require(
                self.jwt_secret.is_none() && self.jwt_public_key_file.is_none(),
                "SWITCHBOARD_JWT_JWKS_URL replaces SWITCHBOARD_JWT_SECRET and SWITCHBOARD_JWT_PUBLIC_KEY_FILE: set one way to verify tokens",
            );
            require(
                self.jwt_jwks_refresh_ms >= 1_000,
                "SWITCHBOARD_JWT_JWKS_REFRESH_MS must be at least 1000",
            );
        }
        let mut require = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        if let Some(secret) = &self.jwt_secret {
            require(
                secret.len() >= 32,
                "SWITCHBOARD_JWT_SECRET must be at least 32 bytes",
            );
        }
        if let Some(previous) = &self.jwt_previous_secret {
            require(
                self.jwt_secret.is_some(),
                "SWITCHBOARD_JWT_PREVIOUS_SECRET needs SWITCHBOARD_JWT_SECRET (HS256), the secret replacing it",
            );
            require(
                previous.len() >= 32,
                "SWITCHBOARD_JWT_PREVIOUS_SECRET must be at least 32 bytes",
            );
            require(
                self.previous_secret_until().is_some(),
                "SWITCHBOARD_JWT_PREVIOUS_SECRET needs SWITCHBOARD_JWT_PREVIOUS_SECRET_UNTIL, an RFC 3339 UTC time like 2026-12-01T00:00:00Z",
            );
        } else {
            require(
                self.jwt_previous_secret_until.is_none(),
                "SWITCHBOARD_JWT_PREVIOUS_SECRET_UNTIL is set without SWITCHBOARD_JWT_PREVIOUS_SECRET",
            );
        }
        problems
    }

    /// When the previous HS256 secret stops being accepted.
    pub fn previous_secret_until(&self) -> Option<std::time::SystemTime> {
        self.jwt_previous_secret_until
            .as_deref()
            .and_then(crate::rfc3339::parse)
    }

    /// Dev mode: no key configured, so the node makes one up and serves the chat page.
    pub fn dev_mode(&self) -> bool {
        self.jwt_secret.is_none()
            && self.jwt_public_key_file.is_none()
            && self.jwt_jwks_url.is_none()
    }

    pub fn token_refresh_notice(&self) -> Option<Duration> {
        (self.token_refresh_notice_ms > 0)
            .then(|| Duration::from_millis(self.token_refresh_notice_ms))
    }
    pub fn socketio_recovery_window(&self) -> Duration {
        Duration::from_millis(self.socketio_recovery_window_ms)
    }
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }

    /// How many sessions may run their start-up calls at once.
    pub fn starting_sessions(&self) -> usize {
        self.max_starting_sessions
            .unwrap_or_else(|| self.db_pool_size.saturating_mul(4))
    }

    pub fn max_queue_delay(&self) -> Duration {
        Duration::from_millis(self.max_queue_delay_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
    pub fn presence_ttl(&self) -> Duration {
        Duration::from_millis(self.presence_ttl_ms)
    }
    pub fn jwks_refresh(&self) -> Duration {
        Duration::from_millis(self.jwt_jwks_refresh_ms)
    }
    pub fn presence_grace(&self) -> Duration {
        Duration::from_millis(self.presence_grace_ms)
    }
    pub fn push_delay(&self) -> Duration {
        Duration::from_millis(self.push_delay_ms)
    }
    pub fn presence_refresh(&self) -> Duration {
        Duration::from_millis(self.presence_refresh_ms)
    }
    pub fn typing_timeout(&self) -> Duration {
        Duration::from_millis(self.typing_timeout_ms)
    }
}

/// Parses `90s`, `30m`, `1h`, `7d` or a bare number of seconds.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        "d" => n * 86_400,
        _ => return Err(format!("invalid duration unit in {s:?}; use s, m, h or d")),
    };
    if secs == 0 {
        return Err("duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration from these flags and variables, and nothing of this process's
    /// environment.
    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Config {
        let env: HashMap<_, _> = env.iter().copied().collect();
        let argv = ["gateway"].iter().chain(args);
        Cli::try_parse_with(argv, &env).expect("parses").config
    }

    fn parse(args: &[&str]) -> Config {
        parse_with(args, &[])
    }

    fn help(env: &[(&str, &str)]) -> String {
        let env: HashMap<_, _> = env.iter().copied().collect();
        let err = Cli::try_parse_with(["gateway", "--help"], &env).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
        err.to_string()
    }

    #[test]
    fn defaults_are_valid_and_in_dev_mode() {
        let config = parse(&[]);
        config.validate().expect("defaults are valid");
        assert!(config.dev_mode());
        assert_eq!(config.heartbeat_interval(), Duration::from_secs(25));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let config = parse(&[
            "--jwt-secret",
            "short",
            "--heartbeat-timeout-ms",
            "10",
            "--jwt-algorithm",
            "RS256",
        ]);
        let err = config.validate().unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
    }

    #[test]
    fn hooks_need_http_urls_valid_patterns_and_a_signing_secret() {
        let config = parse_with(
            &[],
            &[
                ("SWITCHBOARD_HOOK_JOIN_URL", "ftp://backend.example/join"),
                ("SWITCHBOARD_HOOK_RPC_URL", "not a url"),
                ("SWITCHBOARD_HOOK_JOIN_ROOMS", "table-*,a b"),
                ("SWITCHBOARD_HOOK_TIMEOUT_MS", "0"),
            ],
        );
        let problems = config.validate().unwrap_err().0;
        for expected in [
            "SWITCHBOARD_HOOK_JOIN_URL: \"ftp://backend.example/join\" must be an http:// or https:// URL",
            "SWITCHBOARD_HOOK_RPC_URL: \"not a url\"",
            "SWITCHBOARD_HOOK_JOIN_ROOMS: room pattern \"a b\"",
            "SWITCHBOARD_SIGNING_SECRETS is required with hooks",
            "SWITCHBOARD_HOOK_TIMEOUT_MS must be 10-60000",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 5, "{problems:#?}");

        let config = parse_with(
            &[],
            &[
                ("SWITCHBOARD_HOOK_RPC_URL", "http://127.0.0.1:9000/rpc"),
                (
                    "SWITCHBOARD_SIGNING_SECRETS",
                    "whsec_c3dpdGNoYm9hcmQtaG9va3MtdGVzdC1rZXktMzJieSE=",
                ),
            ],
        );
        config.validate().expect("a valid hook configuration");
        assert!(config.any_hook());
        assert!(!parse(&[]).any_hook());
    }

    #[test]
    fn a_previous_secret_needs_a_current_one_and_an_end() {
        let secret = "0123456789abcdef0123456789abcdef";
        let problems = |env: &[(&str, &str)]| {
            parse_with(&[], env)
                .validate()
                .err()
                .map(|e| e.0)
                .unwrap_or_default()
        };
        let alone = problems(&[("SWITCHBOARD_JWT_PREVIOUS_SECRET", secret)]);
        assert!(
            alone
                .iter()
                .any(|p| p.contains("needs SWITCHBOARD_JWT_SECRET")),
            "{alone:?}"
        );
        assert!(
            alone
                .iter()
                .any(|p| p.contains("needs SWITCHBOARD_JWT_PREVIOUS_SECRET_UNTIL"))
        );
        let bad_time = problems(&[
            ("SWITCHBOARD_JWT_SECRET", secret),
            ("SWITCHBOARD_JWT_PREVIOUS_SECRET", secret),
            ("SWITCHBOARD_JWT_PREVIOUS_SECRET_UNTIL", "next tuesday"),
        ]);
        assert_eq!(bad_time.len(), 1, "{bad_time:?}");
        let fine = problems(&[
            ("SWITCHBOARD_JWT_SECRET", secret),
            ("SWITCHBOARD_JWT_PREVIOUS_SECRET", secret),
            (
                "SWITCHBOARD_JWT_PREVIOUS_SECRET_UNTIL",
                "2026-12-01T00:00:00Z",
            ),
        ]);
        assert!(fine.is_empty(), "{fine:?}");
        let orphan = problems(&[(
            "SWITCHBOARD_JWT_PREVIOUS_SECRET_UNTIL",
            "2026-12-01T00:00:00Z",
        )]);
        assert_eq!(orphan.len(), 1, "{orphan:?}");
    }

    #[test]
    fn api_keys_are_a_list_of_long_printable_keys() {
        let config = parse_with(
            &[],
            &[(
                "SWITCHBOARD_API_KEYS",
                "current-key-0123456789,previous-key-0123456789",
            )],
        );
        config.validate().expect("valid keys");
        assert_eq!(config.api_keys.len(), 2);
        for bad in ["short", "has a space in it, too", &"k".repeat(257)] {
            let config = parse_with(&[], &[("SWITCHBOARD_API_KEYS", bad)]);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("SWITCHBOARD_API_KEYS"), "{bad}: {err}");
            assert!(!err.contains(bad), "a key is never repeated in an error");
        }
    }

    #[test]
    fn variables_are_read_from_the_given_environment() {
        let config = parse_with(
            &[],
            &[
                ("SWITCHBOARD_LISTEN", "127.0.0.1:9000"),
                ("SWITCHBOARD_JWT_ALGORITHM", "ES256"),
                (
                    "SWITCHBOARD_ALLOWED_ORIGINS",
                    "https://a.example,https://b.example",
                ),
                ("DATABASE_URL", "postgres://db/switchboard"),
                ("SWITCHBOARD_MAX_REPLAY", "7"),
            ],
        );
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.jwt_algorithm, JwtAlgorithm::Es256);
        assert_eq!(
            config.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(
            config.database_url.as_deref(),
            Some("postgres://db/switchboard")
        );
        assert_eq!(config.max_replay, 7);
    }

    #[test]
    fn a_flag_wins_over_its_variable() {
        let config = parse_with(
            &[
                "--max-replay",
                "9",
                "--allowed-origins",
                "https://c.example",
            ],
            &[
                ("SWITCHBOARD_MAX_REPLAY", "7"),
                (
                    "SWITCHBOARD_ALLOWED_ORIGINS",
                    "https://a.example,https://b.example",
                ),
            ],
        );
        assert_eq!(config.max_replay, 9);
        assert_eq!(config.allowed_origins, ["https://c.example"]);
    }

    #[test]
    fn a_bad_variable_is_refused_by_name() {
        let env: HashMap<_, _> = [("SWITCHBOARD_MAX_REPLAY", "many")].into_iter().collect();
        let err = Cli::try_parse_with(["gateway"], &env).unwrap_err();
        assert!(err.to_string().contains("--max-replay"), "{err}");
    }

    #[test]
    fn the_token_command_reads_its_variable_too() {
        let env: HashMap<_, _> = [("SWITCHBOARD_JWT_PRIVATE_KEY_FILE", "/keys/es256.pem")]
            .into_iter()
            .collect();
        let cli = Cli::try_parse_with(["gateway", "token", "--user", "alice"], &env).unwrap();
        let Some(Command::Token(args)) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(
            args.private_key_file.as_deref(),
            Some(std::path::Path::new("/keys/es256.pem"))
        );
    }

    #[test]
    fn help_names_every_variable_and_shows_no_secret() {
        let secret = "a-secret-nobody-may-read-in-help-output";
        let text = help(&[
            ("SWITCHBOARD_JWT_SECRET", secret),
            ("DATABASE_URL", "postgres://user:password@db/switchboard"),
            ("SWITCHBOARD_MAX_REPLAY", "7"),
        ]);
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains("password"), "{text}");
        assert!(text.contains("[env: SWITCHBOARD_JWT_SECRET]"), "{text}");
        assert!(
            text.contains("[env: SWITCHBOARD_MAX_REPLAY=7] [default: 1000]"),
            "{text}"
        );
        assert!(
            help(&[]).contains("[env: SWITCHBOARD_LISTEN] [default: 0.0.0.0:8080]"),
            "{text}"
        );
    }

    #[test]
    fn the_token_command_is_held_to_the_server_key_rules() {
        let short = parse(&["--jwt-secret", "short"]);
        assert_eq!(
            short.validate_key().unwrap_err().0,
            ["SWITCHBOARD_JWT_SECRET must be at least 32 bytes"]
        );
        // The public key is the verifier's business; signing needs only the private one.
        let es256 = parse(&["--jwt-algorithm", "ES256"]);
        assert!(es256.validate_key().is_ok());
        assert!(es256.validate().is_err());
        let both = parse(&[
            "--jwt-algorithm",
            "ES256",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
        ]);
        assert!(both.validate_key().is_err());
    }

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_ttl("15"), Ok(Duration::from_secs(15)));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("0s").is_err());
    }
}

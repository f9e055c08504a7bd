//! Prometheus metrics: the recorder and the node's metric names. The Redis broker and presence
//! name their own metrics next to the code that records them; docs/operations.md lists every
//! name, checked by the tidy test in lib.rs.
//!
//! Hot-path counters are resolved once into static handles: a fan-out to thousands of
//! connections adds one atomic per dispatch, not a registry lookup per recipient.

use std::sync::LazyLock;

use metrics::{Counter, Gauge, counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use switchboard_protocol::{CloseCode, ErrorCode};

pub const CONNECTIONS: &str = "switchboard_connections";
pub const CONNECTIONS_OPENED: &str = "switchboard_connections_opened_total";
pub const STARTS_WAITING: &str = "switchboard_session_starts_waiting";
pub const CLOSES: &str = "switchboard_closes_total";
pub const HANDSHAKES_REFUSED: &str = "switchboard_handshakes_refused_total";
pub const FRAMES_IN: &str = "switchboard_frames_in_total";
pub const FRAMES_OUT: &str = "switchboard_frames_out_total";
pub const ERRORS: &str = "switchboard_errors_total";
pub const MESSAGES_STORED: &str = "switchboard_messages_stored_total";
pub const SLOW_CONSUMERS: &str = "switchboard_slow_consumers_total";
pub const SEQUENCE_GAPS: &str = "switchboard_sequence_gaps_total";
pub const BROKER_PUBLISH_FAILURES: &str = "switchboard_broker_publish_failures_total";
pub const API_REQUESTS: &str = "switchboard_api_requests_total";
pub const OUTBOX_RELAYED: &str = "switchboard_outbox_relayed_total";
pub const OUTBOX_FAILED: &str = "switchboard_outbox_failed_total";
pub const WEBHOOK_ATTEMPTS: &str = "switchboard_webhook_attempts_total";
pub const WEBHOOKS_FAILED: &str = "switchboard_webhooks_failed_total";
pub const WEBHOOKS_DROPPED: &str = "switchboard_webhooks_dropped_total";
pub const WEBHOOK_LATENCY: &str = "switchboard_webhook_latency_seconds";
pub const HOOK_CALLS: &str = "switchboard_hook_calls_total";
pub const HOOK_DURATION: &str = "switchboard_hook_duration_seconds";
pub const JWKS_REFRESHES: &str = "switchboard_jwks_refreshes_total";

static FRAMES_OUT_COUNTER: LazyLock<Counter> = LazyLock::new(|| counter!(FRAMES_OUT));
static CONNECTIONS_GAUGE: LazyLock<Gauge> = LazyLock::new(|| gauge!(CONNECTIONS));
static STARTS_WAITING_GAUGE: LazyLock<Gauge> = LazyLock::new(|| gauge!(STARTS_WAITING));

/// Installs the global recorder; call once, before serving.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        CONNECTIONS,
        "Open authenticated WebSocket connections on this node"
    );
    describe_counter!(
        CONNECTIONS_OPENED,
        "Authenticated WebSocket connections opened"
    );
    describe_gauge!(
        STARTS_WAITING,
        "Authenticated connections waiting for their turn to start (SWITCHBOARD_MAX_STARTING_SESSIONS)"
    );
    describe_counter!(CLOSES, "Connections closed by the server, by close code");
    describe_counter!(
        HANDSHAKES_REFUSED,
        "Upgrades refused before the WebSocket opened, by HTTP status"
    );
    describe_counter!(FRAMES_IN, "Frames received from clients, by type");
    describe_counter!(FRAMES_OUT, "Frames queued to clients (one per recipient)");
    describe_counter!(ERRORS, "Error replies sent to clients, by code");
    describe_counter!(
        MESSAGES_STORED,
        "Messages appended to the store (retries excluded)"
    );
    describe_counter!(
        SLOW_CONSUMERS,
        "Connections closed because their outbound queue overflowed"
    );
    describe_counter!(
        SEQUENCE_GAPS,
        "Room sequence gaps this node could not close by waiting"
    );
    describe_counter!(
        BROKER_PUBLISH_FAILURES,
        "Events the broker failed to publish"
    );
    describe_counter!(
        API_REQUESTS,
        "Server API requests answered, by operation and HTTP status"
    );
    describe_counter!(
        OUTBOX_RELAYED,
        "Outbox rows appended to their room and deleted by this node"
    );
    describe_counter!(
        OUTBOX_FAILED,
        "Outbox rows this node kept as failed (no such room, bad content)"
    );
    describe_counter!(
        WEBHOOK_ATTEMPTS,
        "Webhook attempts by outcome (delivered, retry, failed)"
    );
    describe_counter!(
        WEBHOOKS_FAILED,
        "Webhooks this node kept as failed after their retry window"
    );
    describe_counter!(
        WEBHOOKS_DROPPED,
        "Webhook events dropped because the in-memory outbox was full (embedded mode)"
    );
    metrics::describe_counter!(
        JWKS_REFRESHES,
        "Fetches of the identity provider's key set (SWITCHBOARD_JWT_JWKS_URL), by outcome"
    );
    metrics::describe_histogram!(
        WEBHOOK_LATENCY,
        metrics::Unit::Seconds,
        "Time from an event's commit to its delivery"
    );
    describe_counter!(
        HOOK_CALLS,
        "Hook calls by hook (connect, join, rpc) and outcome (ok, error, timeout, breaker_open)"
    );
    metrics::describe_histogram!(
        HOOK_DURATION,
        metrics::Unit::Seconds,
        "Time from a hook call's start to its answer or failure, by hook"
    );
}

pub fn connection_opened() {
    CONNECTIONS_GAUGE.increment(1.0);
    counter!(CONNECTIONS_OPENED).increment(1);
}

/// A session begins (`1.0`) or ends (`-1.0`) its wait for a turn to start.
pub fn start_waiting(delta: f64) {
    STARTS_WAITING_GAUGE.increment(delta);
}

/// A session ended: with the server's close code, or `None` when the client closed or vanished.
pub fn connection_closed(code: Option<CloseCode>) {
    CONNECTIONS_GAUGE.decrement(1.0);
    let code = code.map_or_else(|| "client".to_owned(), |c| c.code().to_string());
    counter!(CLOSES, "code" => code).increment(1);
}

pub fn handshake_refused(status: u16) {
    counter!(HANDSHAKES_REFUSED, "status" => status.to_string()).increment(1);
}

pub fn frame_in(kind: &'static str) {
    counter!(FRAMES_IN, "type" => kind).increment(1);
}

pub fn frames_out(n: u64) {
    FRAMES_OUT_COUNTER.increment(n);
}

pub fn error_reply(code: ErrorCode) {
    counter!(ERRORS, "code" => code.as_str()).increment(1);
}

pub fn message_stored() {
    counter!(MESSAGES_STORED).increment(1);
}

pub fn slow_consumer() {
    counter!(SLOW_CONSUMERS).increment(1);
}

pub fn sequence_gap() {
    counter!(SEQUENCE_GAPS).increment(1);
}

/// A server API request was answered; `operation` is its OpenAPI `operationId`, or `none`
/// when it was refused before a route was found.
pub fn api_request(operation: &'static str, status: u16) {
    counter!(API_REQUESTS, "operation" => operation, "status" => status.to_string()).increment(1);
}

pub fn outbox_relayed(n: u64) {
    counter!(OUTBOX_RELAYED).increment(n);
}

pub fn outbox_failed(n: u64) {
    counter!(OUTBOX_FAILED).increment(n);
}

/// A hook call ended (or was not made: `breaker_open`).
pub fn hook_call(hook: &'static str, outcome: &'static str) {
    counter!(HOOK_CALLS, "hook" => hook, "outcome" => outcome).increment(1);
}

pub fn hook_duration(hook: &'static str, took: std::time::Duration) {
    histogram!(HOOK_DURATION, "hook" => hook).record(took.as_secs_f64());
}

pub fn webhook_attempt(outcome: &'static str) {
    counter!(WEBHOOK_ATTEMPTS, "outcome" => outcome).increment(1);
}

pub fn webhook_failed() {
    counter!(WEBHOOKS_FAILED).increment(1);
}

pub fn webhook_dropped() {
    counter!(WEBHOOKS_DROPPED).increment(1);
}

/// `outcome`: `ok` (the set was replaced) or `error` (the last good set was kept).
pub fn jwks_refresh(outcome: &'static str) {
    counter!(JWKS_REFRESHES, "outcome" => outcome).increment(1);
}

pub fn webhook_latency(age: std::time::Duration) {
    histogram!(WEBHOOK_LATENCY).record(age.as_secs_f64());
}

pub fn broker_publish_failed() {
    counter!(BROKER_PUBLISH_FAILURES).increment(1);
}

//! One signed HTTP POST to the app's backend, within a deadline: the pooled keep-alive client,
//! the slot (bounded concurrency per node), the breaker and the metrics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::HookError;
use super::breaker::{Breaker, Tripped};
use crate::metrics;
use crate::signing::Signer;

/// Largest answer read from a hook; a larger one is a failed call.
pub(super) const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Calls hooks for the whole node.
#[derive(Debug)]
pub(super) struct Caller {
    client: Client<HttpConnector, Full<Bytes>>,
    signer: Signer,
    /// Calls in flight on this node (`SWITCHBOARD_HOOK_CONCURRENCY`).
    slots: Semaphore,
    timeout: Duration,
}

/// One configured hook.
#[derive(Debug)]
pub(super) struct Endpoint {
    /// `connect`, `join` or `rpc`: metric label and log field.
    pub(super) name: &'static str,
    pub(super) url: Uri,
    pub(super) breaker: Breaker,
}

impl Caller {
    pub(super) fn new(signer: Signer, slots: usize, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(slots.min(1_024))
            .build(connector);
        Self {
            client,
            signer,
            slots: Semaphore::new(slots.min(Semaphore::MAX_PERMITS)),
            timeout,
        }
    }

    /// POSTs `body` (JSON) to the hook and returns its answer's body. Everything, the wait for a
    /// slot included, ends within the hook timeout.
    pub(super) async fn call(&self, hook: &Endpoint, body: Vec<u8>) -> Result<Bytes, HookError> {
        let started = Instant::now();
        if !hook.breaker.admit(started) {
            metrics::hook_call(hook.name, "breaker_open");
            return Err(HookError::BreakerOpen);
        }
        let outcome = tokio::time::timeout(self.timeout, self.post(hook, body)).await;
        let outcome = match outcome {
            Ok(result) => result,
            Err(_) => Err(HookError::Timeout(self.timeout)),
        };
        metrics::hook_duration(hook.name, started.elapsed());
        match &outcome {
            Ok(_) => {
                hook.breaker.succeeded();
                metrics::hook_call(hook.name, "ok");
            }
            Err(error) => {
                let label = if matches!(error, HookError::Timeout(_)) {
                    "timeout"
                } else {
                    "error"
                };
                metrics::hook_call(hook.name, label);
                if hook.breaker.failed(Instant::now()) == Tripped::Opened {
                    tracing::warn!(hook = hook.name, %error, "hook failing: circuit breaker open");
                }
            }
        }
        outcome
    }

    async fn post(&self, hook: &Endpoint, body: Vec<u8>) -> Result<Bytes, HookError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| HookError::Timeout(self.timeout))?;
        let id = format!("hook_{}", uuid::Uuid::now_v7().simple());
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = self.signer.sign(&id, timestamp, &body);
        let request = Request::post(hook.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("switchboard/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", signature)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| HookError::Unreachable(e.into()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| HookError::Unreachable(e.into()))?;
        let status = response.status();
        let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(HookError::Unreachable)?
            .to_bytes();
        if !status.is_success() {
            return Err(HookError::Status(status.as_u16()));
        }
        Ok(answer)
    }
}

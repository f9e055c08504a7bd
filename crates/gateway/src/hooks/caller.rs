//! One hook call within its deadline: a slot of the node's bounded concurrency, the breaker, the
//! signed POST (`outcall.rs`) and the metrics.

use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::HookError;
use super::breaker::{Breaker, Tripped};
use crate::metrics;
use crate::outcall::Outcall;

/// Calls hooks for the whole node.
#[derive(Debug)]
pub(super) struct Caller {
    outcall: Outcall,
    /// Calls in flight on this node (`SWITCHBOARD_HOOK_CONCURRENCY`).
    slots: Semaphore,
    timeout: Duration,
}

/// One configured hook.
#[derive(Debug)]
pub(super) struct Endpoint {
    /// `connect`, `join` or `rpc`: metric label and log field.
    pub(super) name: &'static str,
    pub(super) url: http::Uri,
    pub(super) breaker: Breaker,
}

impl Caller {
    pub(super) fn new(outcall: Outcall, slots: usize, timeout: Duration) -> Self {
        Self {
            outcall,
            slots: Semaphore::new(slots.min(Semaphore::MAX_PERMITS)),
            timeout,
        }
    }

    /// POSTs `body` (JSON) to the hook and reads its answer as an `A`. Everything, the wait for a
    /// slot included, ends within the hook timeout. An answer that does not read is a failure,
    /// for the breaker and the metrics as for the client.
    pub(super) async fn call<A: DeserializeOwned>(
        &self,
        hook: &Endpoint,
        body: Vec<u8>,
    ) -> Result<A, HookError> {
        let started = Instant::now();
        if !hook.breaker.admit(started) {
            metrics::hook_call(hook.name, "breaker_open");
            return Err(HookError::BreakerOpen);
        }
        let outcome = tokio::time::timeout(self.timeout, self.post(hook, body))
            .await
            .unwrap_or(Err(HookError::Timeout(self.timeout)))
            .and_then(|answer| serde_json::from_slice(&answer).map_err(HookError::BadAnswer));
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
        let (status, answer) = self
            .outcall
            .post(&hook.url, &id, Bytes::from(body))
            .await
            .map_err(HookError::Unreachable)?;
        if !status.is_success() {
            return Err(HookError::Status(status.as_u16()));
        }
        Ok(answer)
    }
}

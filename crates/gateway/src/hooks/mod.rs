//! Hooks: synchronous calls to the app's backend, which decides (docs/hooks.md).
//!
//! - **connect**: after a token is verified; the app may refuse the connection (4010), rename
//!   the user or add rooms.
//! - **join**: before a user becomes a member of a room matching the configured patterns
//!   (`room:join`, `room:create`); the app allows or refuses with its reason (`DENIED`).
//! - **rpc**: an `rpc` frame's method and data; the app's answer is the `ack`.
//!
//! Every call is a signed JSON POST (`signing.rs`) that ends within the hook timeout. A call that
//! fails, times out or meets an open breaker is [`HookError`]: the client is answered
//! `HOOK_UNAVAILABLE` (connect: closed 1013) and its connection stays. Nothing is done on the
//! app's behalf without its answer.

mod breaker;
mod caller;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_protocol::{Role, RoomId, UserRef};

use self::breaker::Breaker;
use self::caller::{Caller, Endpoint};
use crate::broker::ConnId;
use crate::config::Config;
use crate::outcall::{Outcall, OutcallError, parse_url};
use crate::room_pattern::RoomPatterns;

/// Why a hook gave no answer. The client sees only `HOOK_UNAVAILABLE`.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Unreachable(#[from] OutcallError),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("the answer is not what the hook returns")]
    BadAnswer(#[source] serde_json::Error),
    #[error("the circuit breaker is open after failed calls")]
    BreakerOpen,
    #[error("the call could not be encoded")]
    Encode(#[source] serde_json::Error),
}

/// The hook endpoints of this node.
#[derive(Debug)]
pub struct Hooks {
    node: String,
    caller: Caller,
    connect: Option<Endpoint>,
    join: Option<Endpoint>,
    join_rooms: RoomPatterns,
    rpc: Option<Endpoint>,
}

/// The app's word on a connection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnectVerdict {
    /// `Some(reason)`: refuse the connection.
    pub denied: Option<String>,
    /// The display name to use instead of the token's.
    pub name: Option<String>,
    /// Rooms the user is made a member of before `session:ready`.
    pub rooms: Vec<RoomId>,
}

/// What a join or create asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinAction {
    Join,
    Create,
}

/// The app's word on a request: go on, or its reason not to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<T> {
    Allow(T),
    Deny(String),
}

/// What every call says, then what it is about.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Call<'a, T: Serialize> {
    hook: &'static str,
    node: &'a str,
    conn_id: String,
    user: &'a UserRef,
    #[serde(flatten)]
    about: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinCall<'a> {
    room_id: &'a RoomId,
    action: JoinAction,
}

#[derive(Serialize)]
struct RpcCall<'a> {
    method: &'a str,
    data: &'a serde_json::Value,
}

#[derive(Serialize)]
struct Nothing {}

/// `connect` and `join` answers.
#[derive(Deserialize)]
struct Verdict {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    rooms: Vec<RoomId>,
    /// join: the role the user becomes a member with.
    #[serde(default)]
    role: Option<Role>,
}

/// An `rpc` answer: exactly one of the two.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RpcAnswer {
    Result(serde_json::Value),
    Error(String),
}

/// Longest reason or rpc error passed on to a client, in characters.
const MAX_REASON_CHARS: usize = 500;
/// Most rooms one connect hook answer grants.
const MAX_GRANTED_ROOMS: usize = 100;

impl Hooks {
    /// The hooks `config` names (none is fine: every call then allows, and `rpc` is refused).
    pub fn new(config: &Config, node: &str, outcall: Outcall) -> Result<Self, String> {
        let endpoint = |name: &'static str, url: &Option<String>| -> Result<_, String> {
            url.as_deref()
                .map(|url| {
                    Ok(Endpoint {
                        name,
                        url: parse_url(url)?,
                        breaker: Breaker::new(
                            config.hook_breaker_failures,
                            config.hook_breaker_cooldown(),
                        ),
                    })
                })
                .transpose()
        };
        Ok(Self {
            node: node.to_owned(),
            caller: Caller::new(outcall, config.hook_concurrency, config.hook_timeout()),
            connect: endpoint("connect", &config.hook_connect_url)?,
            join: endpoint("join", &config.hook_join_url)?,
            join_rooms: RoomPatterns::parse(&config.hook_join_rooms)?,
            rpc: endpoint("rpc", &config.hook_rpc_url)?,
        })
    }

    pub fn has_rpc(&self) -> bool {
        self.rpc.is_some()
    }

    /// Asks the connect hook about a new connection; allowed as is when there is none.
    pub async fn connect(
        &self,
        user: &UserRef,
        conn: &ConnId,
    ) -> Result<ConnectVerdict, HookError> {
        let Some(hook) = &self.connect else {
            return Ok(ConnectVerdict::default());
        };
        let verdict: Verdict = self.ask(hook, user, conn, Nothing {}).await?;
        if !verdict.allow {
            return Ok(ConnectVerdict {
                denied: Some(reason(verdict.reason)),
                ..ConnectVerdict::default()
            });
        }
        if verdict.rooms.len() > MAX_GRANTED_ROOMS {
            tracing::warn!(
                user = %user.id,
                granted = verdict.rooms.len(),
                "connect hook granted more rooms than a connection takes: the first {MAX_GRANTED_ROOMS} kept"
            );
        }
        Ok(ConnectVerdict {
            denied: None,
            name: verdict.name,
            rooms: verdict.rooms.into_iter().take(MAX_GRANTED_ROOMS).collect(),
        })
    }

    /// Asks the join hook whether `user` may become a member of `room`, and with which role
    /// (`None`: the default); allowed when there is no join hook or the room matches none of
    /// its patterns.
    pub async fn join(
        &self,
        user: &UserRef,
        conn: &ConnId,
        room: &RoomId,
        action: JoinAction,
    ) -> Result<Decision<Option<Role>>, HookError> {
        let Some(hook) = self
            .join
            .as_ref()
            .filter(|_| self.join_rooms.matches(room.as_str()))
        else {
            return Ok(Decision::Allow(None));
        };
        let about = JoinCall {
            room_id: room,
            action,
        };
        let verdict: Verdict = self.ask(hook, user, conn, about).await?;
        Ok(if verdict.allow {
            Decision::Allow(verdict.role)
        } else {
            Decision::Deny(reason(verdict.reason))
        })
    }

    /// Calls the rpc hook; `None` when there is none.
    pub async fn rpc(
        &self,
        user: &UserRef,
        conn: &ConnId,
        method: &str,
        data: &serde_json::Value,
    ) -> Option<Result<Decision<serde_json::Value>, HookError>> {
        let hook = self.rpc.as_ref()?;
        let answer = self
            .ask(hook, user, conn, RpcCall { method, data })
            .await
            .map(|answer| match answer {
                RpcAnswer::Result(value) => Decision::Allow(value),
                RpcAnswer::Error(message) => Decision::Deny(reason(Some(message))),
            });
        Some(answer)
    }

    async fn ask<T: Serialize, A: serde::de::DeserializeOwned>(
        &self,
        hook: &Endpoint,
        user: &UserRef,
        conn: &ConnId,
        about: T,
    ) -> Result<A, HookError> {
        let call = Call {
            hook: hook.name,
            node: &self.node,
            conn_id: conn.to_string(),
            user,
            about,
        };
        let body = serde_json::to_vec(&call).map_err(HookError::Encode)?;
        self.caller.call(hook, body).await
    }
}

/// The app's reason as a client may see it: some text, not too long.
fn reason(reason: Option<String>) -> String {
    let reason = reason.unwrap_or_default();
    let reason = reason.trim();
    if reason.is_empty() {
        "refused by the app".to_owned()
    } else {
        reason.chars().take(MAX_REASON_CHARS).collect()
    }
}

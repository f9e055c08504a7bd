//! The server API (`/api/v1/`): the app's backend publishes, manages rooms and members, and
//! reads history and presence, on any node and reaching users on every node.
//!
//! - `mod.rs` — a request from the wire to an answer: the key, its rate limit, the bounded
//!   body, errors as `{"error": {"code", "message"}}` with the protocol's codes;
//! - `keys.rs` — the API keys (constant-time lookup, a rate limit each);
//! - `routes.rs` — method and path to a [`routes::Route`], and the table the OpenAPI document
//!   (`docs/openapi.json`, served at `/api/v1/openapi.json`) is held to;
//! - `handlers.rs` — one function per route, acting through [`crate::actions`] as a session does.
//!
//! Served on the listener that serves `/metrics`: the admin listener when one is configured.

mod handlers;
mod keys;
mod routes;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use switchboard_protocol::ErrorCode;

use crate::app::App;
use crate::error::{SessionError, Verdict};
use crate::http::{self as responses, Body};
pub use keys::ApiKeys;

use crate::presence::ClusterStats;

/// How long a node reuses the cluster's counts before asking Redis again: counting the users
/// online cluster-wide is a pass over every node's set.
const CLUSTER_STATS_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The server API's state on this node.
#[derive(Debug)]
pub struct Api {
    keys: ApiKeys,
    /// The cluster's counts (and the rooms followed anywhere, when there is a broker to ask),
    /// and when they were read.
    cluster: tokio::sync::Mutex<Option<(tokio::time::Instant, ClusterStats, Option<u64>)>>,
}

impl Api {
    /// The API with these keys; `None` without a key (the API is off).
    pub fn new(keys: &[String], per_sec: u32, burst: u32) -> Option<Self> {
        Some(Self {
            keys: ApiKeys::new(keys, per_sec, burst)?,
            cluster: tokio::sync::Mutex::new(None),
        })
    }

    /// The cluster's counts, read at most once per [`CLUSTER_STATS_TTL`]; callers meanwhile
    /// wait for the one read in progress.
    pub(crate) async fn cluster_stats(
        &self,
        app: &App,
    ) -> Result<(ClusterStats, Option<u64>), ApiError> {
        let mut cached = self.cluster.lock().await;
        if let Some((at, stats, rooms)) = cached.as_ref()
            && at.elapsed() < CLUSTER_STATS_TTL
        {
            return Ok((stats.clone(), *rooms));
        }
        let stats = app.presence.cluster_stats().await?;
        let rooms = app.broker.followed_rooms().await.map_err(|error| {
            tracing::warn!(%error, "cannot count the rooms followed in the cluster");
            ApiError::refused(ErrorCode::StoreUnavailable, "the broker did not answer")
        })?;
        *cached = Some((tokio::time::Instant::now(), stats.clone(), rooms));
        Ok((stats, rooms))
    }
}
pub use routes::ROUTES;

/// The OpenAPI 3.1 document of this API (`docs/openapi.json` links to it).
pub const OPENAPI: &str = include_str!("../../assets/openapi.json");

/// Answers one server API request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let mut operation = "none";
    let response = match serve(&app, req, &mut operation).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    crate::metrics::api_request(operation, response.status().as_u16());
    response
}

/// Answers, naming the `operation` once the route is known.
async fn serve(
    app: &App,
    req: Request<Incoming>,
    operation: &mut &'static str,
) -> Result<Response<Body>, ApiError> {
    let Some(Api { keys, .. }) = &app.api else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "the server API is off: set SWITCHBOARD_API_KEYS",
        ));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .ok_or_else(|| ApiError::unauthorized("send an API key as Authorization: Bearer <key>"))?;
    let key = keys
        .find(presented)
        .ok_or_else(|| ApiError::unauthorized("not a valid API key"))?;
    if !keys.admit(key, tokio::time::Instant::now()) {
        tracing::debug!(key, "server API rate limited");
        return Err(ApiError::refused(
            ErrorCode::RateLimited,
            "too many requests for this API key; slow down",
        ));
    }
    let route = routes::route(req.method(), req.uri().path())?;
    *operation = route.operation();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let idempotency_key = req
        .headers()
        .get("idempotency-key")
        .map(|value| {
            value.to_str().map(str::to_owned).map_err(|_| {
                ApiError::refused(ErrorCode::InvalidField, "Idempotency-Key must be ASCII")
            })
        })
        .transpose()?;
    let body = read_body(req.into_body(), app.config.api_max_body_bytes).await?;
    tracing::debug!(key, ?route, "server API request");
    handlers::answer(
        app,
        handlers::Request {
            route,
            query,
            idempotency_key,
            body,
        },
    )
    .await
}

/// The whole body, refused past `max` bytes.
async fn read_body(body: Incoming, max: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ContentTooLong,
            format!("the request body is larger than {max} bytes"),
        )),
        Err(error) => {
            tracing::debug!(%error, "server API request body failed");
            Err(ApiError::refused(
                ErrorCode::MalformedFrame,
                "the request body could not be read",
            ))
        }
    }
}

/// A refused or failed API request: an HTTP status and the protocol's error code.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// Refused with `code`, under the status [`status_of`] gives it.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(status_of(code), code, message)
    }

    fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    fn into_response(self) -> Response<Body> {
        let mut response = responses::error(self.status, self.code.as_str(), &self.message);
        let headers = response.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<SessionError> for ApiError {
    fn from(error: SessionError) -> Self {
        match error.verdict() {
            Verdict::Reply { code, message } => Self::refused(code, message),
            Verdict::Close(_) => Self::refused(ErrorCode::Internal, "the request failed"),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        SessionError::from(error).into()
    }
}

impl From<crate::presence::PresenceError> for ApiError {
    fn from(error: crate::presence::PresenceError) -> Self {
        SessionError::from(error).into()
    }
}

/// The HTTP status an error code is answered with.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::MalformedFrame
        | ErrorCode::UnknownType
        | ErrorCode::InvalidField
        | ErrorCode::InvalidIdentifier
        | ErrorCode::AlreadyAuthenticated
        | ErrorCode::ContentEmpty
        | ErrorCode::ContentTooLong
        | ErrorCode::InvalidRecipient
        | ErrorCode::NotSupported => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden | ErrorCode::WrongPassword | ErrorCode::Denied => {
            StatusCode::FORBIDDEN
        }
        ErrorCode::RoomNotFound
        | ErrorCode::NotAMember
        | ErrorCode::FriendRequestNotFound
        | ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::RoomExists => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::StoreUnavailable | ErrorCode::HookUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::OutcomeUnknown => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes_served() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("OpenAPI is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .keys()
                    .filter(|k| !matches!(k.as_str(), "parameters" | "summary" | "description"))
                    .map(move |method| (method.to_uppercase(), path.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn every_schema_the_openapi_document_refers_to_exists() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("OpenAPI is JSON");
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for reference in refs {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{reference} is not defined"
            );
        }
    }

    fn collect_refs(value: &serde_json::Value, refs: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                    refs.push(r.clone());
                }
                map.values().for_each(|v| collect_refs(v, refs));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
            _ => {}
        }
    }

    #[test]
    fn every_error_code_has_a_status() {
        for code in ErrorCode::all() {
            let status = status_of(code);
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code}"
            );
            assert_eq!(
                status.is_server_error(),
                code.retryable() && code != ErrorCode::RateLimited,
                "{code}: 5xx exactly for the retryable backend faults"
            );
        }
    }
}

//! The listeners: accept, route, refuse bad upgrades with an HTTP status before the WebSocket
//! opens, hand good ones to a session task, and drain on shutdown.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchboard_protocol::Codec;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::app::App;
use crate::auth::{AuthError, Identity};
use crate::http::{self as routes, Body};
use crate::{metrics, session};

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// WebSockets, dev pages, and health/metrics/server API unless an admin listener exists.
    Main { with_admin: bool },
    /// Only health, metrics and the server API.
    Admin,
}

/// Accepts connections until `stop`, then drops the listener. While the node drains (before
/// `stop`), health checks are still answered — `/readyz` with 503 — and upgrades are refused.
pub async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    role: Role,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            if role != Role::Admin && crate::event_stream::requested(&stream).await {
                crate::event_stream::serve(app, stream, peer.ip()).await;
                return;
            }
            let service = service_fn(move |req: Request<Incoming>| {
                let app = Arc::clone(&app);
                async move {
                    let response = if role.serves_admin() && req.uri().path().starts_with("/api/") {
                        crate::api::handle(app, req).await
                    } else {
                        route(&app, req, role, peer.ip()).await
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = conn.await {
                tracing::debug!(%error, %peer, "http connection ended with an error");
            }
        });
    }
}

impl Role {
    /// Whether this listener serves health, metrics and the server API: the admin listener,
    /// or the main one when there is no admin listener.
    fn serves_admin(self) -> bool {
        match self {
            Role::Admin => true,
            Role::Main { with_admin } => with_admin,
        }
    }
}

async fn route(app: &Arc<App>, req: Request<Incoming>, role: Role, peer: IpAddr) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if role.serves_admin()
        && let Some(response) = routes::admin_route(app, &path)
    {
        return response;
    }
    if role == Role::Admin {
        return routes::text(StatusCode::NOT_FOUND, "not found\n");
    }
    if path == "/ws" {
        return upgrade(app, req, peer, Wire::WebSocket).await;
    }
    if !app.config.socketio_path.is_empty() && path == app.config.socketio_path {
        if let Err(refusal) = crate::socketio::check_query(req.uri().query()) {
            return refusal.response();
        }
        return upgrade(app, req, peer, Wire::SocketIo).await;
    }
    if path == "/sse" {
        // A stream asked for on a connection hyper already serves (a reused keep-alive
        // connection); one that opens its connection never gets here (`event_stream.rs`).
        return crate::event_stream::through_hyper(app, &req, peer).await;
    }
    let query = req.uri().query().map(str::to_owned);
    routes::dev_route(app, &path, query.as_deref())
        .unwrap_or_else(|| routes::text(StatusCode::NOT_FOUND, "not found\n"))
}

/// The wire an upgrade opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// `/ws`: the protocol's frames.
    WebSocket,
    /// `/socket.io/`: Socket.IO packets; the token comes in the connect packet.
    SocketIo,
}

/// Checks an upgrade request and, when it passes, answers 101 and spawns the session.
async fn upgrade(
    app: &Arc<App>,
    mut req: Request<Incoming>,
    peer: IpAddr,
    wire: Wire,
) -> Response<Body> {
    let (codec, identity, key) = match check_upgrade(app, req.headers(), peer).await {
        Ok(checked) => checked,
        Err(refusal) => return refusal.into_response(),
    };
    // Socket.IO speaks JSON in its own packets, and authenticates in its connect packet.
    let (codec, identity) = match wire {
        Wire::WebSocket => (codec, identity),
        Wire::SocketIo => (None, None),
    };
    let guard = match admit(app) {
        Ok(guard) => guard,
        Err(refusal) => return refusal.into_response(),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let session_app = Arc::clone(app);
    match wire {
        Wire::WebSocket => spawn_session(app, guard, async move {
            let socket = upgraded(upgrade.await)?;
            let codec = codec.unwrap_or_default();
            let wire = session::WebSocket::accept(socket, codec, &session_app).await;
            session::start(session_app, wire, identity).await
        }),
        Wire::SocketIo => spawn_session(app, guard, async move {
            let socket = upgraded(upgrade.await)?;
            let wire = session::SocketIo::accept(socket, &session_app).await?;
            session::start(session_app, wire, None).await
        }),
    }
    let mut response = Response::new(routes::whole(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(accept) = header::HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(codec) = codec {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            header::HeaderValue::from_static(codec.subprotocol()),
        );
    }
    response
}

/// The upgraded socket, or `None` (logged) when the upgrade failed.
fn upgraded(
    outcome: Result<hyper::upgrade::Upgraded, hyper::Error>,
) -> Option<TokioIo<hyper::upgrade::Upgraded>> {
    outcome
        .map_err(|error| tracing::debug!(%error, "upgrade failed"))
        .ok()
        .map(TokioIo::new)
}

/// Runs a session on its own task once `start` (the upgrade, the handshake) opened it. `start`
/// is boxed and freed once the session is live: an idle connection's task keeps none of it.
fn spawn_session<C, F>(app: &App, guard: OpenGuard, start: F)
where
    C: session::Connection,
    F: Future<Output = Option<Box<session::Session<C>>>> + Send + 'static,
{
    let start = Box::pin(start);
    app.sessions.spawn(
        async move {
            let _guard = guard;
            if let Some(session) = start.await {
                session.live().await;
            }
        }
        .instrument(tracing::debug_span!("ws")),
    );
}

/// Gives the connection slot back when the session task ends, however it ends.
pub(crate) struct OpenGuard(Arc<App>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

type Checked = (Option<Codec>, Option<Identity>, String);

async fn check_upgrade(app: &App, headers: &HeaderMap, peer: IpAddr) -> Result<Checked, Refusal> {
    if app.is_draining() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DRAINING",
            "this node is shutting down",
        ));
    }
    check_rate(app, headers, peer)?;
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok());
    let (true, true, true, Some(key)) = (
        has(header::UPGRADE, "websocket"),
        has(header::CONNECTION, "upgrade"),
        has(header::SEC_WEBSOCKET_VERSION, "13"),
        key,
    ) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "NOT_WEBSOCKET",
            "expected a WebSocket (version 13) upgrade",
        ));
    };
    check_origin(app, headers)?;
    let offers = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let Ok(codec) = Codec::negotiate(offers) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED_SUBPROTOCOL",
            "offer switchboard.v1.json or switchboard.v1.msgpack",
        ));
    };
    let identity = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(verify(app, bearer(value)?).await?),
    };
    Ok((codec, identity, key.to_owned()))
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(value: &header::HeaderValue) -> Result<&str, Refusal> {
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| Refusal::unauthorized("expected Authorization: Bearer <token>"))
}

async fn verify(app: &App, token: &str) -> Result<Identity, Refusal> {
    app.auth.verify(token).await.map_err(|error| match error {
        AuthError::Expired => Refusal::unauthorized("token expired"),
        AuthError::NotYetValid => Refusal::unauthorized("token not valid yet"),
        error => {
            tracing::debug!(%error, "bearer token refused");
            Refusal::unauthorized("invalid token")
        }
    })
}

/// Refuses a client address opening connections faster than `SWITCHBOARD_CONNECT_RATE_PER_IP`.
fn check_rate(app: &App, headers: &HeaderMap, peer: IpAddr) -> Result<(), Refusal> {
    if app.connect_limiter.admit(peer, headers) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "too many connections from this address; retry later",
        ))
    }
}

/// Refuses a browser page from an origin the node does not allow (when it restricts them).
fn check_origin(app: &App, headers: &HeaderMap) -> Result<(), Refusal> {
    if !app.config.allowed_origins.is_empty()
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| app.config.allowed_origins.iter().any(|a| a == o));
        if !allowed {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "ORIGIN_NOT_ALLOWED",
                "origin not allowed",
            ));
        }
    }
    Ok(())
}

/// Takes a connection slot, or refuses when the node is at its limit. The slot is given back
/// when the guard drops, however the connection ends.
fn admit(app: &Arc<App>) -> Result<OpenGuard, Refusal> {
    // Counted before answering, so the limit holds under a burst of connects.
    let open = app.open.fetch_add(1, Ordering::AcqRel) + 1;
    let guard = OpenGuard(Arc::clone(app));
    if open > app.config.max_connections {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NODE_FULL",
            "this node is at its connection limit",
        ));
    }
    Ok(guard)
}

pub(crate) type CheckedStream = (
    Identity,
    Vec<switchboard_protocol::RoomId>,
    std::collections::BTreeMap<switchboard_protocol::RoomId, u64>,
    OpenGuard,
);

/// The checks of `GET /sse` (see `event_stream.rs`): as an upgrade's, plus the rooms and the
/// `Last-Event-ID` to resume from; then a connection slot.
pub(crate) async fn check_event_stream(
    app: &Arc<App>,
    headers: &HeaderMap,
    query: Option<&str>,
    peer: IpAddr,
) -> Result<CheckedStream, Refusal> {
    if app.is_draining() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DRAINING",
            "this node is shutting down",
        ));
    }
    check_rate(app, headers, peer)?;
    check_origin(app, headers)?;
    let query = routes::parse_query(query.unwrap_or_default());
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // EventSource cannot send headers: a token in the query is accepted too (it may end up in
    // access logs; prefer the header where the client can set it).
    let identity = match (headers.get(header::AUTHORIZATION), param("token")) {
        (Some(value), _) => verify(app, bearer(value)?).await?,
        (None, Some(token)) => verify(app, token).await?,
        (None, None) => {
            return Err(Refusal::unauthorized(
                "send a token as Authorization: Bearer <token> or ?token=",
            ));
        }
    };
    // No room is a stream of the user's own events (`user:event`, `notification:new`).
    let mut rooms = Vec::new();
    for room in param("rooms")
        .unwrap_or_default()
        .split(',')
        .filter(|r| !r.is_empty())
    {
        let room = switchboard_protocol::RoomId::parse(room).map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "INVALID_IDENTIFIER",
                "rooms must list room ids, comma-separated",
            )
        })?;
        if !rooms.contains(&room) {
            rooms.push(room);
        }
    }
    if rooms.len() > session::MAX_SSE_ROOMS {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            "a stream lists at most 32 rooms",
        ));
    }
    let positions = match headers.get("last-event-id") {
        None => Default::default(),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(session::parse_positions)
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    "Last-Event-ID is not an id this server sent",
                )
            })?,
    };
    let guard = admit(app)?;
    Ok((identity, rooms, positions, guard))
}

/// The headers a refusal with `status` carries besides its body: how to authenticate, when to
/// retry. Lowercase names, for hyper and for the raw `/sse` answer alike.
pub(crate) fn extra_headers(status: StatusCode) -> &'static [(&'static str, &'static str)] {
    match status {
        StatusCode::UNAUTHORIZED => &[("www-authenticate", "Bearer")],
        StatusCode::TOO_MANY_REQUESTS => &[("retry-after", "1")],
        _ => &[],
    }
}

/// An upgrade (or a stream) refused before it opens: an HTTP status and a JSON error body.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self {
            status,
            code,
            message,
        }
    }

    fn unauthorized(message: &'static str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    /// The status and the JSON body, counted as a refused handshake.
    pub(crate) fn into_parts(self) -> (StatusCode, String) {
        metrics::handshake_refused(self.status.as_u16());
        (self.status, routes::error_body(self.code, self.message))
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        let (status, body) = self.into_parts();
        let mut response = routes::respond(status, "application/json", body);
        for (name, value) in extra_headers(status) {
            response.headers_mut().insert(
                header::HeaderName::from_static(name),
                header::HeaderValue::from_static(value),
            );
        }
        response
    }
}

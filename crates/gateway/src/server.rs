//! The listeners: accept, route, refuse bad upgrades with an HTTP status before the WebSocket
//! opens, hand good ones to a session task, and drain on shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

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
            let service = service_fn(move |req: Request<Incoming>| {
                let app = Arc::clone(&app);
                async move {
                    let response = if role.serves_admin() && req.uri().path().starts_with("/api/") {
                        crate::api::handle(app, req).await
                    } else {
                        route(&app, req, role)
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

fn route(app: &Arc<App>, req: Request<Incoming>, role: Role) -> Response<Body> {
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
        return upgrade(app, req);
    }
    let query = req.uri().query().map(str::to_owned);
    routes::dev_route(app, &path, query.as_deref())
        .unwrap_or_else(|| routes::text(StatusCode::NOT_FOUND, "not found\n"))
}

/// Checks an upgrade request and, when it passes, answers 101 and spawns the session.
fn upgrade(app: &Arc<App>, mut req: Request<Incoming>) -> Response<Body> {
    let (codec, identity, key) = match check_upgrade(app, req.headers()) {
        Ok(checked) => checked,
        Err(refusal) => return refusal.into_response(),
    };
    // Count the connection before answering, so the limit holds under a burst of upgrades.
    let open = app.open.fetch_add(1, Ordering::AcqRel) + 1;
    if open > app.config.max_connections {
        app.open.fetch_sub(1, Ordering::AcqRel);
        return Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NODE_FULL",
            "this node is at its connection limit",
        )
        .into_response();
    }
    let guard = OpenGuard(Arc::clone(app));
    let upgrade = hyper::upgrade::on(&mut req);
    let session_app = Arc::clone(app);
    // Boxed and freed once the session is live: an idle connection's task keeps none of it.
    let start = Box::pin(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let socket = TokioIo::new(upgraded);
                let codec = codec.unwrap_or_default();
                let wire = session::WebSocket::accept(socket, codec, &session_app).await;
                session::start(session_app, wire, identity).await
            }
            Err(error) => {
                tracing::debug!(%error, "upgrade failed");
                None
            }
        }
    });
    app.sessions.spawn(
        async move {
            let _guard = guard;
            if let Some(session) = start.await {
                session.live().await;
            }
        }
        .instrument(tracing::debug_span!("ws")),
    );
    let mut response = Response::new(Body::default());
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

/// Gives the connection slot back when the session task ends, however it ends.
struct OpenGuard(Arc<App>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

type Checked = (Option<Codec>, Option<Identity>, String);

fn check_upgrade(app: &App, headers: &HeaderMap) -> Result<Checked, Refusal> {
    if app.is_draining() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DRAINING",
            "this node is shutting down",
        ));
    }
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
        Some(value) => {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let Some(token) = token else {
                return Err(Refusal::unauthorized(
                    "expected Authorization: Bearer <token>",
                ));
            };
            match app.auth.verify(token) {
                Ok(identity) => Some(identity),
                Err(AuthError::Expired) => return Err(Refusal::unauthorized("token expired")),
                Err(AuthError::NotYetValid) => {
                    return Err(Refusal::unauthorized("token not valid yet"));
                }
                Err(error) => {
                    tracing::debug!(%error, "bearer token refused");
                    return Err(Refusal::unauthorized("invalid token"));
                }
            }
        }
    };
    Ok((codec, identity, key.to_owned()))
}

/// An upgrade refused before the WebSocket opens: an HTTP status and a JSON error body.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self {
            status,
            code,
            message,
        }
    }

    fn unauthorized(message: &'static str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    fn into_response(self) -> Response<Body> {
        metrics::handshake_refused(self.status.as_u16());
        let mut response = routes::error(self.status, self.code, self.message);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

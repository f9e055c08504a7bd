//! `GET /sse`: checked as an upgrade is checked (`server.rs`), then a session whose wire is
//! `session/sse.rs`. A stream is a long response that only this node writes to, so keeping
//! hyper's connection (its read and write buffers, a second task, a channel in between) for
//! its whole life would cost every stream ~12 KiB and every delivery a second wake-up. A
//! WebSocket leaves hyper at its upgrade; a stream that opens its connection (how browsers and
//! proxies open one, nearly always) never enters it: its request head is read here and its
//! session writes to the socket. One asked for on a connection hyper already serves (a reused
//! keep-alive connection) is streamed through hyper's response body instead, by the same wire.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::app::App;
use crate::http::Body;
use crate::server::{CheckedStream, Refusal, check_event_stream};
use crate::session;

/// What the first request of a connection that wants a stream starts with.
const REQUEST_LINE: &[u8] = b"GET /sse";
/// Longest request head read.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// How long a request line that arrived in pieces is waited for (no real client splits one).
const SPLIT_LINE_POLLS: u32 = 20;
const SPLIT_LINE_POLL: std::time::Duration = std::time::Duration::from_millis(5);
/// Chunks buffered between a session and a hyper response body.
const BODY_CHUNKS: usize = 16;

/// Whether the connection's first request is `GET /sse`, looked at without reading it, so any
/// other request goes to hyper untouched.
pub(crate) async fn requested(stream: &TcpStream) -> bool {
    let mut first = [0u8; REQUEST_LINE.len() + 1];
    for _ in 0..SPLIT_LINE_POLLS {
        let Ok(n) = stream.peek(&mut first).await else {
            return false;
        };
        let seen = &first[..n];
        if n == first.len() {
            return seen.starts_with(REQUEST_LINE) && matches!(seen[n - 1], b' ' | b'?');
        }
        if n == 0 || !REQUEST_LINE.starts_with(seen) {
            return false;
        }
        tokio::time::sleep(SPLIT_LINE_POLL).await;
    }
    false
}

/// A request head, as far as a stream needs it.
struct Head {
    query: Option<String>,
    headers: HeaderMap,
    /// HTTP/1.1: the stream is chunked; HTTP/1.0: it ends with the connection.
    chunked: bool,
}

/// Reads and checks the request, then refuses it with an HTTP status or answers 200 and starts
/// the stream's session.
pub(crate) async fn serve(app: Arc<App>, mut stream: TcpStream, peer: std::net::IpAddr) {
    let head = match tokio::time::timeout(app.config.auth_timeout(), read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(reason)) => {
            tracing::debug!(reason, "unreadable /sse request");
            let refusal = Refusal::new(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                "unreadable request head",
            );
            respond(&app, &mut stream, refusal).await;
            return;
        }
        Err(_) => return,
    };
    let (identity, rooms, positions, guard) =
        match check_event_stream(&app, &head.headers, head.query.as_deref(), peer).await {
            Ok(checked) => checked,
            Err(refusal) => {
                respond(&app, &mut stream, refusal).await;
                return;
            }
        };
    let mut response = String::from(if head.chunked {
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
    } else {
        "HTTP/1.0 200 OK\r\n"
    });
    // nginx passes the stream on as it comes (x-accel-buffering).
    response.push_str(
        "content-type: text/event-stream\r\ncache-control: no-store\r\nx-accel-buffering: no\r\nconnection: close\r\n\r\n",
    );
    let sent = session::within(
        app.config.write_timeout(),
        stream.write_all(response.as_bytes()),
    );
    if !matches!(sent.await, Some(Ok(()))) {
        return;
    }
    let output = session::SseOutput::Socket {
        stream,
        chunked: head.chunked,
    };
    start(&app, (identity, rooms, positions, guard), output);
}

/// `GET /sse` on a connection hyper serves: the same checks and session, the events written
/// into a streamed response body.
pub(crate) async fn through_hyper(
    app: &Arc<App>,
    req: &http::Request<Incoming>,
    peer: std::net::IpAddr,
) -> Response<Body> {
    let checked = match check_event_stream(app, req.headers(), req.uri().query(), peer).await {
        Ok(checked) => checked,
        Err(refusal) => return refusal.into_response(),
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(BODY_CHUNKS);
    start(app, checked, session::SseOutput::Body(tx));
    let chunks = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-store"),
        ("x-accel-buffering", "no"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Spawns the stream's session (tracked, so a drain waits for it).
fn start(app: &Arc<App>, checked: CheckedStream, output: session::SseOutput) {
    let (identity, rooms, positions, guard) = checked;
    let wire = session::Sse::new(
        output,
        rooms,
        positions,
        app.config.write_timeout(),
        app.config.heartbeat_interval(),
    );
    let start = Box::pin(session::start(Arc::clone(app), wire, Some(identity)));
    app.sessions.spawn(
        async move {
            let _guard = guard;
            if let Some(session) = start.await {
                session.live().await;
            }
        }
        .instrument(tracing::debug_span!("sse")),
    );
}

/// Reads up to the end of the request head (a `GET` has no body) and parses it.
async fn read_head(stream: &mut TcpStream) -> Result<Head, &'static str> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| "socket error")?;
        if n == 0 {
            return Err("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
        if memchr::memmem::find(&buf, b"\r\n\r\n").is_some() {
            break;
        }
        if buf.len() > MAX_HEAD {
            return Err("request head too large");
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => return Err("not an HTTP/1 request"),
    }
    let path = request.path.ok_or("no path")?;
    let mut map = HeaderMap::new();
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| "bad header")?;
        let value = HeaderValue::from_bytes(header.value).map_err(|_| "bad header")?;
        map.append(name, value);
    }
    Ok(Head {
        query: path.split_once('?').map(|(_, query)| query.to_owned()),
        headers: map,
        chunked: request.version == Some(1),
    })
}

/// Writes a refusal (an HTTP status and the JSON error body) and closes.
async fn respond(app: &App, stream: &mut TcpStream, refusal: Refusal) {
    let (status, body) = refusal.into_parts();
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for (name, value) in crate::server::extra_headers(status) {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&body);
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = session::within(app.config.write_timeout(), write).await;
}

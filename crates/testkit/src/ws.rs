//! A small WebSocket test client that speaks the Switchboard protocol, on the Rust client's
//! connection layer ([`switchboard_client::Connection`]) plus what tests need on top: waits
//! with deadlines that name what was awaited, frames kept while waiting for a reply, and raw
//! messages a real client must never send.
//!
//! Every wait has a deadline (default [`DEFAULT_TIMEOUT`]) and fails with a message naming what
//! was awaited, so a broken server fails a test quickly instead of hanging it. Frames read while
//! waiting for something else (an ack, a particular event) are buffered and returned by later
//! [`WsClient::recv`] calls, in order. WebSocket pings are answered by tungstenite.
//!
//! ```no_run
//! # async fn demo(url: &str, token: String) -> anyhow::Result<()> {
//! use switchboard_testkit::ws::{ConnectOptions, WsClient};
//! let (mut alice, _ready) = WsClient::connect_session(url, ConnectOptions::bearer(token)).await?;
//! alice.create_room("general").await?;
//! let ack = alice.send_text("general", "hello", "c1").await?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use switchboard_client::{Connection, Incoming};
use switchboard_protocol::{
    AckResult, ClientFrame, Codec, MessageKind, RoomId, RoomKind, ServerFrame,
};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

pub use switchboard_client::ABNORMAL_CLOSURE;

/// How long a connect or a wait for a frame may take unless set otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to open a connection. `Default` is: no token, no subprotocol offered (the server then
/// speaks JSON), no `Origin`.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
    /// When set, offers that codec's subprotocol (`Sec-WebSocket-Protocol`).
    pub codec: Option<Codec>,
    /// Offers exactly these subprotocols instead (e.g. unknown ones, to see the upgrade refused).
    /// The codec is then the one the server picks, JSON if it picks none.
    pub subprotocols: Option<Vec<String>>,
    /// Sent as `Origin`.
    pub origin: Option<String>,
    /// Any other request headers.
    pub headers: Vec<(String, String)>,
    /// Deadline for the handshake and default deadline of every wait (default 5 s).
    pub timeout: Option<Duration>,
}

impl ConnectOptions {
    /// Options with an `Authorization: Bearer` token.
    pub fn bearer(token: impl Into<String>) -> Self {
        Self {
            bearer: Some(token.into()),
            ..Self::default()
        }
    }

    /// Offers `codec`'s subprotocol.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = Some(codec);
        self
    }

    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    pub fn with_subprotocols<S: Into<String>>(
        mut self,
        offers: impl IntoIterator<Item = S>,
    ) -> Self {
        self.subprotocols = Some(offers.into_iter().map(Into::into).collect());
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server answered the upgrade request with an HTTP status instead of 101.
    #[error("upgrade refused with HTTP {status}: {body}")]
    Http {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    #[error("handshake did not finish within {0:?}")]
    Timeout(Duration),
    /// Any other failure: connection refused, a bad subprotocol answer, a bad option.
    #[error("websocket connect failed: {0}")]
    Other(String),
}

impl ConnectError {
    /// The HTTP status of a refused upgrade.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The close frame's code, or [`ABNORMAL_CLOSURE`] when there was none.
    pub code: u16,
    pub reason: String,
}

/// A connected test client.
#[derive(Debug)]
pub struct WsClient {
    ws: Connection,
    /// Frames read while waiting for something else, returned first by `recv`.
    pending: VecDeque<ServerFrame>,
    /// Set once the connection ended.
    closed: Option<Closed>,
    timeout: Duration,
    /// Request ids for the convenience methods; starts at 1.
    next_id: u64,
}

impl WsClient {
    /// Opens a WebSocket connection. A refused upgrade is [`ConnectError::Http`] with its status.
    pub async fn connect(url: &str, opts: ConnectOptions) -> Result<Self, ConnectError> {
        let timeout = opts.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let options = switchboard_client::ConnectOptions {
            bearer: opts.bearer,
            codec: opts.codec.unwrap_or(Codec::Json),
            // No codec and no offers: no subprotocol header at all (the server then speaks JSON).
            subprotocols: match (opts.subprotocols, opts.codec) {
                (Some(offers), _) => Some(offers),
                (None, Some(_)) => None,
                (None, None) => Some(Vec::new()),
            },
            origin: opts.origin,
            headers: opts.headers,
            timeout,
            ..switchboard_client::ConnectOptions::default()
        };
        let ws = Connection::open(url, &options).await.map_err(|e| match e {
            switchboard_client::ConnectError::Refused {
                status,
                headers,
                body,
            } => ConnectError::Http {
                status,
                headers,
                body,
            },
            switchboard_client::ConnectError::Timeout(after) => ConnectError::Timeout(after),
            other => ConnectError::Other(other.to_string()),
        })?;
        Ok(Self {
            ws,
            pending: VecDeque::new(),
            closed: None,
            timeout,
            next_id: 1,
        })
    }

    /// Connects and waits for `session:ready` (use with a bearer token: the server sends it
    /// right after the upgrade). Returns the client and that frame.
    pub async fn connect_session(
        url: &str,
        opts: ConnectOptions,
    ) -> anyhow::Result<(Self, ServerFrame)> {
        let mut client = Self::connect(url, opts).await?;
        let ready = client.expect_session_ready().await?;
        Ok((client, ready))
    }

    /// Connects without an `Authorization` header, sends `{"type":"auth","token":...}` as the
    /// first frame and waits for `session:ready`.
    pub async fn connect_with_auth_frame(
        url: &str,
        token: &str,
        mut opts: ConnectOptions,
    ) -> anyhow::Result<(Self, ServerFrame)> {
        opts.bearer = None;
        let mut client = Self::connect(url, opts).await?;
        client
            .send(&ClientFrame::Auth {
                token: token.to_owned(),
            })
            .await?;
        let ready = client.expect_session_ready().await?;
        Ok((client, ready))
    }

    /// Reads the next frame and fails unless it is `session:ready`.
    pub async fn expect_session_ready(&mut self) -> anyhow::Result<ServerFrame> {
        let frame = self.recv().await.context("waiting for session:ready")?;
        if !matches!(frame, ServerFrame::SessionReady { .. }) {
            bail!("expected session:ready, got {frame:?}");
        }
        Ok(frame)
    }

    /// The codec in use: the one the server picked, JSON if it picked none.
    pub fn codec(&self) -> Codec {
        self.ws.codec()
    }

    /// The `Sec-WebSocket-Protocol` the server answered with.
    pub fn subprotocol(&self) -> Option<&str> {
        self.ws.subprotocol()
    }

    /// The default deadline of every wait.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// A fresh request id (1, 2, 3, ...).
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// How the connection ended, once it has.
    pub fn closed(&self) -> Option<&Closed> {
        self.closed.as_ref()
    }

    /// Encodes and sends a frame with the connection's codec.
    pub async fn send(&mut self, frame: &ClientFrame) -> anyhow::Result<()> {
        tokio::time::timeout(self.timeout, self.ws.send(frame))
            .await
            .with_context(|| format!("send did not complete within {:?}", self.timeout))?
            .context("sending a frame")
    }

    /// Sends several frames in one write, as a client with a backlog of requests does: the
    /// server finds them all queued behind the first.
    pub async fn send_all(&mut self, frames: &[ClientFrame]) -> anyhow::Result<()> {
        let feed = async {
            let codec = self.ws.codec();
            for frame in frames {
                let bytes = codec.encode(frame)?;
                let message = if codec.is_binary() {
                    Message::binary(bytes)
                } else {
                    Message::text(String::from_utf8(bytes).context("JSON is UTF-8")?)
                };
                self.ws
                    .raw()
                    .feed(message)
                    .await
                    .context("queueing a frame")?;
            }
            self.ws.raw().flush().await.context("sending the frames")
        };
        tokio::time::timeout(self.timeout, feed)
            .await
            .with_context(|| format!("sends did not complete within {:?}", self.timeout))?
    }

    /// Sends a text frame as is (malformed JSON, unknown types, ...).
    pub async fn send_raw_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.send_message(Message::text(text)).await
    }

    /// Sends a binary frame as is.
    pub async fn send_raw_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.send_message(Message::binary(bytes)).await
    }

    /// Sends any WebSocket message (e.g. a `Ping`).
    pub async fn send_message(&mut self, message: Message) -> anyhow::Result<()> {
        tokio::time::timeout(self.timeout, self.ws.raw().send(message))
            .await
            .with_context(|| format!("send did not complete within {:?}", self.timeout))?
            .context("sending a frame")
    }

    /// The next frame (buffered ones first), waiting up to the default deadline.
    pub async fn recv(&mut self) -> anyhow::Result<ServerFrame> {
        self.recv_timeout(self.timeout).await
    }

    /// The next frame, waiting up to `timeout`. Fails if the connection closes first.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> anyhow::Result<ServerFrame> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        match tokio::time::timeout(timeout, self.read_frame()).await {
            Err(_) => bail!("no frame from the server within {timeout:?}"),
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) => bail!("{}", self.closed_description()),
            Ok(Err(e)) => Err(e),
        }
    }

    /// A frame within `timeout`, or `None` when none came. Fails if the connection closed.
    pub async fn try_recv(&mut self, timeout: Duration) -> anyhow::Result<Option<ServerFrame>> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(Some(frame));
        }
        match tokio::time::timeout(timeout, self.read_frame()).await {
            Err(_) => Ok(None),
            Ok(Ok(Some(frame))) => Ok(Some(frame)),
            Ok(Ok(None)) => bail!("{}", self.closed_description()),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Fails if any frame arrives within `window` (e.g. "the sender gets only its ack").
    pub async fn expect_no_frame(&mut self, window: Duration) -> anyhow::Result<()> {
        match self.try_recv(window).await? {
            None => Ok(()),
            Some(frame) => bail!("expected no frame within {window:?}, got {frame:?}"),
        }
    }

    /// Reads until a frame matches `pred` and returns it; the others are dropped.
    pub async fn recv_until(
        &mut self,
        pred: impl FnMut(&ServerFrame) -> bool,
    ) -> anyhow::Result<ServerFrame> {
        Ok(self.recv_until_collect(pred).await?.0)
    }

    /// Reads until a frame matches `pred`; returns it and the frames skipped before it.
    pub async fn recv_until_collect(
        &mut self,
        mut pred: impl FnMut(&ServerFrame) -> bool,
    ) -> anyhow::Result<(ServerFrame, Vec<ServerFrame>)> {
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let frame = if let Some(frame) = self.pending.pop_front() {
                frame
            } else {
                match tokio::time::timeout_at(deadline, self.read_frame()).await {
                    Err(_) => bail!(
                        "no matching frame within {timeout:?}; skipped {} frames: {skipped:?}",
                        skipped.len()
                    ),
                    Ok(Ok(Some(frame))) => frame,
                    Ok(Ok(None)) => bail!(
                        "{} before a matching frame; skipped {skipped:?}",
                        self.closed_description()
                    ),
                    Ok(Err(e)) => return Err(e),
                }
            };
            if pred(&frame) {
                return Ok((frame, skipped));
            }
            skipped.push(frame);
        }
    }

    /// Sends a request and waits for its reply: the `ack` with the same `id` (a `pong` for a
    /// `ping`). Frames arriving meanwhile are kept for later `recv` calls.
    pub async fn request(&mut self, frame: &ClientFrame) -> anyhow::Result<ServerFrame> {
        let id = frame
            .request_id()
            .with_context(|| format!("{} carries no id to wait for", frame.kind().wire_name()))?;
        let is_ping = matches!(frame, ClientFrame::Ping { .. });
        let is_reply = move |f: &ServerFrame| match f {
            ServerFrame::Ack { id: got, .. } => !is_ping && *got == id,
            ServerFrame::Pong { id: got } => is_ping && *got == Some(id),
            _ => false,
        };
        if let Some(pos) = self.pending.iter().position(is_reply) {
            return self.pending.remove(pos).context("pending frame vanished");
        }
        self.send(frame).await?;
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.read_frame()).await {
                Err(_) => bail!(
                    "no reply to {} id {id} within {timeout:?}",
                    frame.kind().wire_name()
                ),
                Ok(Ok(Some(reply))) if is_reply(&reply) => return Ok(reply),
                Ok(Ok(Some(other))) => self.pending.push_back(other),
                Ok(Ok(None)) => bail!(
                    "{} while waiting for the reply to {} id {id}",
                    self.closed_description(),
                    frame.kind().wire_name()
                ),
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// [`WsClient::request`], then the ack's result; a refused request is an error naming its
    /// code (match on [`WsClient::request`] to assert a particular error code).
    pub async fn request_ok(&mut self, frame: &ClientFrame) -> anyhow::Result<AckResult> {
        match self.request(frame).await? {
            ServerFrame::Ack {
                result: Some(result),
                error: None,
                ..
            } => Ok(result),
            other => bail!("{} was not accepted: {other:?}", frame.kind().wire_name()),
        }
    }

    /// `room:create` of a public room; returns the ack result.
    pub async fn create_room(&mut self, room_id: &str) -> anyhow::Result<AckResult> {
        let frame = ClientFrame::RoomCreate {
            id: self.next_id(),
            room_id: RoomId::parse(room_id)?,
            name: None,
            kind: RoomKind::Public,
            password: None,
        };
        self.request_ok(&frame).await
    }

    /// `room:join` without resume; returns the ack result.
    pub async fn join_room(&mut self, room_id: &str) -> anyhow::Result<AckResult> {
        let frame = ClientFrame::RoomJoin {
            id: self.next_id(),
            room_id: RoomId::parse(room_id)?,
            password: None,
            since_seq: None,
        };
        self.request_ok(&frame).await
    }

    /// `message:send` of a text message; returns the whole ack (refused or not).
    pub async fn send_text(
        &mut self,
        room_id: &str,
        content: &str,
        client_msg_id: &str,
    ) -> anyhow::Result<ServerFrame> {
        let frame = ClientFrame::MessageSend {
            id: self.next_id(),
            room_id: RoomId::parse(room_id)?,
            content: content.to_owned(),
            kind: MessageKind::Text,
            client_msg_id: client_msg_id.to_owned(),
        };
        self.request(&frame).await
    }

    /// Reads until the connection ends, dropping any frames, and returns the close code and
    /// reason ([`ABNORMAL_CLOSURE`] and an empty or error reason when no close frame came).
    pub async fn expect_close(&mut self) -> anyhow::Result<(u16, String)> {
        self.expect_close_within(self.timeout).await
    }

    /// [`WsClient::expect_close`] with its own deadline.
    pub async fn expect_close_within(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(u16, String)> {
        self.pending.clear();
        let deadline = Instant::now() + timeout;
        let mut seen = 0usize;
        while self.closed.is_none() {
            match tokio::time::timeout_at(deadline, self.read_frame()).await {
                Err(_) => bail!(
                    "the connection was not closed within {timeout:?} ({seen} frames came meanwhile)"
                ),
                Ok(Ok(Some(_))) => seen += 1,
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
        let closed = self.closed.clone().context("closed")?;
        Ok((closed.code, closed.reason))
    }

    /// Closes with 1000 and waits (bounded) for the server's close reply.
    pub async fn close(&mut self) -> anyhow::Result<()> {
        if self.closed.is_some() {
            return Ok(());
        }
        let frame = CloseFrame {
            code: WsCloseCode::Normal,
            reason: "bye".into(),
        };
        // Fails when the server closed first, which the read below then reports.
        let _ = self.ws.raw().send(Message::Close(Some(frame))).await;
        let _ = self.expect_close_within(Duration::from_secs(2)).await;
        Ok(())
    }

    /// Reads the next WebSocket message, bypassing the frame buffer and decoding: to assert on
    /// opcodes or raw payloads. Control frames are returned too.
    pub async fn recv_message(&mut self) -> anyhow::Result<Message> {
        match tokio::time::timeout(self.timeout, self.ws.raw().next()).await {
            Err(_) => bail!("no message within {:?}", self.timeout),
            Ok(None) => bail!("the connection is closed"),
            Ok(Some(result)) => Ok(result?),
        }
    }

    fn closed_description(&self) -> String {
        match &self.closed {
            Some(Closed { code, reason }) => {
                format!("the connection was closed (code {code}, reason {reason:?})")
            }
            None => "the connection was closed".to_owned(),
        }
    }

    /// Reads one server frame, skipping control frames. `Ok(None)`: the connection ended and
    /// `closed` says how. A frame that is not a server frame of the connection's codec fails.
    async fn read_frame(&mut self) -> anyhow::Result<Option<ServerFrame>> {
        if self.closed.is_some() {
            return Ok(None);
        }
        match self.ws.recv().await {
            Incoming::Frame(frame) => Ok(Some(frame)),
            Incoming::Unreadable(why) => bail!("undecodable server frame: {why}"),
            Incoming::Closed { code, reason } => {
                self.closed = Some(Closed { code, reason });
                Ok(None)
            }
        }
    }
}

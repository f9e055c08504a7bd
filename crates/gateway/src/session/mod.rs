//! One task owns one socket.
//!
//! **Invariant:** nothing but the session task writes to its socket. Others reach it through its
//! bounded outbound queue: frames, or a kick that closes it. Replies to the session's own requests
//! are written directly, before anything queued later, which is what lets a `room:join` reply
//! and the live stream meet without a gap or a duplicate.

mod handshake;
mod limiter;
mod messages;
mod rooms;
mod signals;
mod social;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use std::future::Future;

use futures_util::{FutureExt, SinkExt, StreamExt};
use switchboard_protocol::{
    ClientFrame, CloseCode, Codec, ErrorCode, RoomId, ServerFrame, UserRef,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

use crate::app::App;
use crate::auth::Identity;
use crate::broker::{ConnId, Envelope, Event, Topic};
use crate::error::SessionError;
use crate::hub::SessionHandle;
use crate::metrics;
use crate::outbound::{Next, Outbound, QueueRx, encode, queue};
use limiter::RateLimiter;
use signals::Typing;

/// Queued frames written per socket flush.
const MAX_BATCH: usize = 256;
/// Time allowed for a close handshake before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server closes with this code.
    Close(CloseCode),
    /// The client closed, or the connection dropped.
    ByClient,
}

/// Authenticates and opens a session on an upgraded socket: then [`Session::live`] runs it.
/// `identity` is set when the client authenticated with a header; otherwise the first frame must
/// be `auth`. `None` once a session that could not start is closed.
///
/// Every idle connection holds its task's future for as long as it lives, so the start
/// (handshake, registration, `session:ready`) belongs in a box the caller frees once the session
/// is live, and the session is boxed: an async fn keeps a copy of every by-value argument.
pub(crate) async fn start<S>(
    app: Arc<App>,
    socket: S,
    codec: Codec,
    identity: Option<Identity>,
) -> Option<Box<Session<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut ws = WebSocketStream::from_raw_socket(
        socket,
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        Some(app.ws_config()),
    )
    .await;
    let identity = match identity {
        Some(identity) => identity,
        None => match handshake::await_auth(&app, &mut ws, codec).await {
            Ok(identity) => identity,
            Err(end) => {
                finish(&mut ws, end).await;
                return None;
            }
        },
    };
    let Some(remaining) = time_left(identity.expires_at) else {
        finish(&mut ws, End::Close(CloseCode::TokenExpired)).await;
        return None;
    };
    let (tx, rx) = queue(app.config.outbound_queue);
    let conn = app.next_conn_id();
    let mut session = Box::new(Session {
        app: Arc::clone(&app),
        conn,
        user: identity.user,
        codec,
        ws,
        rx,
        expires_at: Instant::now() + remaining,
        typing: Typing::default(),
        limiter: RateLimiter::new(
            app.config.rate_per_sec,
            app.config.rate_burst,
            app.config.rate_strikes,
        ),
        last_heard: Instant::now(),
        next_ping: Instant::now() + app.config.heartbeat_interval(),
    });
    let handle = SessionHandle {
        user: session.user.id.clone(),
        codec,
        tx,
    };
    metrics::connection_opened();
    let end = match session.open(handle).await {
        Ok(()) => return Some(session),
        Err(SessionError::Close(code)) => End::Close(code),
        Err(SessionError::Gone) => End::ByClient,
        Err(SessionError::Refused { code, message }) => {
            tracing::warn!(%code, %message, "session could not start");
            End::Close(CloseCode::InternalError)
        }
    };
    session.close(end).await;
    None
}

/// Awaits `fut` for at most `limit`, arming the timer only when `fut` does not finish at once:
/// nearly every write completes without waiting, and a timer per write would cost more than it.
async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    if let Some(output) = fut.as_mut().now_or_never() {
        return Some(output);
    }
    tokio::time::timeout(limit, fut).await.ok()
}

fn time_left(expires_at: SystemTime) -> Option<Duration> {
    expires_at
        .duration_since(SystemTime::now())
        .ok()
        .filter(|d| !d.is_zero())
}

/// Sends the close frame and waits briefly for the client's, so the frame is not lost to a
/// reset when unread data is still in the socket.
async fn finish<S>(ws: &mut WebSocketStream<S>, end: End)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = match end {
        End::Close(code) => Some(CloseFrame {
            code: WsCloseCode::from(code.code()),
            reason: code.reason().into(),
        }),
        End::ByClient => None,
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(frame).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

pub(crate) struct Session<S> {
    app: Arc<App>,
    conn: ConnId,
    user: UserRef,
    codec: Codec,
    ws: WebSocketStream<S>,
    rx: QueueRx,
    expires_at: Instant,
    typing: Typing,
    limiter: RateLimiter,
    last_heard: Instant,
    next_ping: Instant,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Registers the session everywhere and sends `session:ready`.
    async fn open(&mut self, handle: SessionHandle) -> Result<(), SessionError> {
        let app = Arc::clone(&self.app);
        app.store.upsert_user(&self.user).await?;
        app.hub.register(&self.conn, handle).await;
        let connected = app.presence.connect(&self.user, &self.conn).await?;
        let excess = connected
            .connections
            .len()
            .saturating_sub(app.config.max_connections_per_user);
        for old in connected.connections.iter().take(excess) {
            let kick = Event::Kick {
                conn: old.clone(),
                code: CloseCode::SessionReplaced.code(),
            };
            app.publish(Envelope {
                topics: vec![Topic::User(self.user.id.clone())],
                event: kick,
            })
            .await;
        }

        // Attach before reading positions: whatever is published from here on is either in
        // the positions we read or delivered live, never lost in between.
        let rooms: Vec<RoomId> = app
            .store
            .rooms_of(&self.user.id)
            .await?
            .into_iter()
            .map(|r| r.room_id)
            .collect();
        app.hub.attach(&self.conn, &rooms).await;
        let mut summaries = app.store.rooms_of(&self.user.id).await?;
        for summary in &mut summaries {
            if let Some(floor) = app
                .hub
                .go_live(&self.conn, &summary.room_id, summary.last_seq)
            {
                summary.last_seq = floor;
                summary.unread = floor.saturating_sub(summary.last_read_seq);
            }
        }
        self.send(&ServerFrame::SessionReady {
            user: self.user.clone(),
            conn_id: self.conn.to_string(),
            heartbeat_ms: app.config.heartbeat_interval_ms,
            max_frame_bytes: app.config.max_frame_bytes as u64,
            rooms: summaries,
            unread_notifications: app.store.unread_notifications(&self.user.id).await?,
            epoch: app.store.epoch(),
        })
        .await?;
        tracing::debug!(conn = %self.conn, user = %self.user.id, "session ready");
        if connected.first {
            let online = ServerFrame::UserOnline {
                user: self.user.clone(),
            };
            self.tell_watchers(online, None).await?;
        }
        Ok(())
    }

    /// The live session, from `session:ready` to the close.
    pub(crate) async fn live(mut self: Box<Self>) {
        let end = self.serve().await;
        Box::pin(self.close(end)).await;
    }

    /// The session loop: one select over the socket, the queue and the timers.
    ///
    /// Every idle connection carries this loop's state, so whatever runs in a branch is boxed:
    /// handling a frame or writing is rare next to idling, and inline, every idle connection
    /// would carry the size of the largest branch.
    async fn serve(&mut self) -> End {
        // The waits that outlive one turn of the loop are made once and kept: re-arming a
        // timer and re-registering a waiter on every wake-up would cost more than the write
        // the wake-up is usually for.
        let shutdown = self.app.shutdown.clone();
        let cancelled = shutdown.cancelled();
        let timer = tokio::time::sleep_until(self.next_wake());
        tokio::pin!(cancelled, timer);
        loop {
            // Looked at on every turn: a client that keeps its socket busy still gets kicked.
            if let Some(code) = self.rx.kicked() {
                return End::Close(code);
            }
            let wake = self.next_wake();
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            let result = tokio::select! {
                biased;
                () = &mut cancelled => Box::pin(self.goodbye()).await,
                inbound = self.ws.next() => Box::pin(self.on_inbound(inbound)).await,
                next = self.rx.next() => match next {
                    Next::Kicked(code) => Err(SessionError::Close(code)),
                    Next::Frame(first) => Box::pin(self.write_batch(first)).await,
                },
                () = &mut timer => Box::pin(self.on_timer()).await,
            };
            match result {
                Ok(()) => {}
                Err(SessionError::Close(code)) => return End::Close(code),
                Err(SessionError::Gone) => return End::ByClient,
                Err(SessionError::Refused { code, message }) => {
                    // Only reachable for a refusal outside any request; tell the client.
                    if Box::pin(self.reply_error(None, code, message))
                        .await
                        .is_err()
                    {
                        return End::ByClient;
                    }
                }
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let silence = self.last_heard + self.app.config.heartbeat_timeout();
        let typing = self.typing.next_deadline();
        [
            Some(self.next_ping),
            Some(silence),
            Some(self.expires_at),
            typing,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next_ping)
    }

    async fn on_timer(&mut self) -> Result<(), SessionError> {
        let now = Instant::now();
        if now >= self.expires_at {
            return Err(SessionError::Close(CloseCode::TokenExpired));
        }
        if now >= self.last_heard + self.app.config.heartbeat_timeout() {
            return Err(SessionError::Close(CloseCode::HeartbeatTimeout));
        }
        if now >= self.next_ping {
            self.next_ping = now + self.app.config.heartbeat_interval();
            self.write(WsMessage::Ping(Default::default())).await?;
        }
        for room in self.typing.due(now) {
            self.stop_typing(&room).await;
        }
        Ok(())
    }

    async fn on_inbound(
        &mut self,
        inbound: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), SessionError> {
        use tokio_tungstenite::tungstenite::Error as WsError;
        let message = match inbound {
            None => return Err(SessionError::Gone),
            Some(Ok(message)) => message,
            Some(Err(WsError::Capacity(error))) => {
                tracing::debug!(%error, "frame too big");
                return Err(SessionError::Close(CloseCode::MessageTooBig));
            }
            Some(Err(WsError::Protocol(error))) => {
                tracing::debug!(%error, "websocket protocol error");
                return Err(SessionError::Close(CloseCode::ProtocolError));
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "socket error");
                return Err(SessionError::Gone);
            }
        };
        self.last_heard = Instant::now();
        let bytes = match message {
            WsMessage::Text(text) if !self.codec.is_binary() => text.into(),
            WsMessage::Binary(bytes) if self.codec.is_binary() => bytes,
            WsMessage::Text(_) | WsMessage::Binary(_) => {
                let expected = if self.codec.is_binary() {
                    "binary"
                } else {
                    "text"
                };
                let message = format!(
                    "this connection speaks {:?} in {expected} frames",
                    self.codec
                );
                return self
                    .reply_error(None, ErrorCode::MalformedFrame, message)
                    .await;
            }
            // tungstenite queues the pong; it goes out with the next flush.
            WsMessage::Ping(_) => return self.flush().await,
            WsMessage::Pong(_) | WsMessage::Frame(_) => return Ok(()),
            WsMessage::Close(_) => return Err(SessionError::Gone),
        };
        if !self.limiter.admit(Instant::now()) {
            if self.limiter.exhausted() {
                return Err(SessionError::Close(CloseCode::RateLimitExceeded));
            }
            let id = self
                .codec
                .decode_client(&bytes)
                .ok()
                .and_then(|f| f.request_id());
            return self
                .reply_error(id, ErrorCode::RateLimited, "too many frames; slow down")
                .await;
        }
        match self.codec.decode_client(&bytes) {
            Ok(frame) => self.on_frame(frame).await,
            Err(refused) => {
                tracing::debug!(code = %refused.code, message = %refused.message, "frame refused");
                self.reply_error(refused.id, refused.code, refused.message)
                    .await
            }
        }
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> Result<(), SessionError> {
        metrics::frame_in(frame.kind().wire_name());
        let id = frame.request_id();
        // Each request's future is boxed on its own: a box is as large as its future, and inline
        // the largest of them would be allocated and copied for every frame.
        let outcome = match frame {
            ClientFrame::Auth { .. } => Err(SessionError::refused(
                ErrorCode::AlreadyAuthenticated,
                "this connection is already authenticated",
            )),
            ClientFrame::Ping { id } => return self.send(&ServerFrame::Pong { id }).await,
            ClientFrame::RoomCreate {
                room_id,
                name,
                kind,
                password,
                ..
            } => Box::pin(self.create_room(room_id, name, kind, password)).await,
            ClientFrame::RoomJoin {
                room_id,
                password,
                since_seq,
                ..
            } => Box::pin(self.join_room(room_id, password, since_seq)).await,
            ClientFrame::RoomLeave { room_id, .. } => Box::pin(self.leave_room(room_id)).await,
            ClientFrame::HistoryFetch {
                room_id,
                before_seq,
                after_seq,
                limit,
                ..
            } => {
                self.fetch_history(room_id, before_seq, after_seq, limit)
                    .await
            }
            ClientFrame::MessageSend {
                room_id,
                content,
                kind,
                client_msg_id,
                ..
            } => match self.check_message(&room_id, content, &client_msg_id) {
                Ok(content) => Box::pin(self.append(room_id, content, kind, client_msg_id)).await,
                Err(refused) => Err(refused),
            },
            ClientFrame::DmSend {
                recipient_id,
                content,
                kind,
                client_msg_id,
                ..
            } => Box::pin(self.send_direct(recipient_id, content, kind, client_msg_id)).await,
            ClientFrame::MessageRead { room_id, seq, .. } => {
                Box::pin(self.mark_read(room_id, seq)).await
            }
            ClientFrame::TypingStart { room_id } => Box::pin(self.start_typing(room_id)).await,
            ClientFrame::TypingStop { room_id } => {
                self.require_member(&room_id)?;
                Box::pin(self.stop_typing(&room_id)).await;
                return Ok(());
            }
            ClientFrame::PresenceUpdate { status, .. } => {
                Box::pin(self.update_presence(status)).await
            }
            ClientFrame::NotificationsList { limit, before, .. } => {
                self.list_notifications(limit, before).await
            }
            ClientFrame::NotificationsRead { ids, .. } => self.read_notifications(ids).await,
            ClientFrame::FriendRequest { user_id, .. } => {
                Box::pin(self.request_friend(user_id)).await
            }
            ClientFrame::FriendAccept { user_id, .. } => {
                Box::pin(self.accept_friend(user_id)).await
            }
            ClientFrame::FriendRemove { user_id, .. } => {
                Box::pin(self.remove_friend(user_id)).await
            }
            ClientFrame::FriendsList { .. } => self.list_friends().await,
        };
        match (outcome, id) {
            (Ok(Some(result)), Some(id)) => self.send(&ServerFrame::ok(id, result)).await,
            (Ok(_), _) => Ok(()),
            (Err(SessionError::Refused { code, message }), id) => {
                self.reply_error(id, code, message).await
            }
            (Err(other), _) => Err(other),
        }
    }

    /// Answers a refused request: an `ack` when it had an id, an `error` frame otherwise.
    async fn reply_error(
        &mut self,
        id: Option<u64>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<(), SessionError> {
        metrics::error_reply(code);
        let message = message.into();
        let frame = match id {
            Some(id) => ServerFrame::refused(id, code, message),
            None => ServerFrame::Error { code, message },
        };
        self.send(&frame).await
    }

    /// Says goodbye on shutdown; the close (1001) follows.
    async fn goodbye(&mut self) -> Result<(), SessionError> {
        // Best effort: a client that cannot take one more frame still gets the close.
        let _ = self
            .send(&ServerFrame::ServerShutdown { reconnect: true })
            .await;
        Err(SessionError::Close(CloseCode::GoingAway))
    }

    /// Writes one frame of our own, now.
    pub(crate) async fn send(&mut self, frame: &ServerFrame) -> Result<(), SessionError> {
        let message = encode(self.codec, frame).map_err(|error| {
            tracing::error!(%error, "cannot encode frame");
            SessionError::Close(CloseCode::InternalError)
        })?;
        self.write(message).await
    }

    async fn write(&mut self, message: WsMessage) -> Result<(), SessionError> {
        let timeout = self.app.config.write_timeout();
        match within(timeout, self.ws.send(message)).await {
            Some(Ok(())) => Ok(()),
            Some(Err(_)) => Err(SessionError::Gone),
            None => Err(SessionError::Close(CloseCode::SlowConsumer)),
        }
    }

    async fn flush(&mut self) -> Result<(), SessionError> {
        let timeout = self.app.config.write_timeout();
        match within(timeout, self.ws.flush()).await {
            Some(Ok(())) => Ok(()),
            Some(Err(_)) => Err(SessionError::Gone),
            None => Err(SessionError::Close(CloseCode::SlowConsumer)),
        }
    }

    /// Writes everything queued (up to a batch) with one flush: one syscall for many frames.
    async fn write_batch(&mut self, first: Outbound) -> Result<(), SessionError> {
        let timeout = self.app.config.write_timeout();
        let (ws, rx) = (&mut self.ws, &mut self.rx);
        let batch = async {
            ws.feed(Arc::unwrap_or_clone(first)).await?;
            for _ in 1..MAX_BATCH {
                match rx.try_pop() {
                    Some(next) => ws.feed(Arc::unwrap_or_clone(next)).await?,
                    None => break,
                }
            }
            ws.flush().await
        };
        match within(timeout, batch).await {
            Some(Ok(())) => Ok(()),
            Some(Err(_)) => Err(SessionError::Gone),
            None => {
                if self.rx.kick(CloseCode::SlowConsumer) {
                    metrics::slow_consumer();
                }
                Err(SessionError::Close(CloseCode::SlowConsumer))
            }
        }
    }

    /// Unregisters everywhere, tells others, and closes the socket.
    async fn close(mut self: Box<Self>, end: End) {
        let app = Arc::clone(&self.app);
        for room in self.typing.rooms() {
            self.stop_typing(&room).await;
        }
        app.hub.unregister(&self.conn).await;
        match app.presence.disconnect(&self.user.id, &self.conn).await {
            Ok(Some(last_seen)) => {
                let frame = ServerFrame::UserOffline {
                    user_id: self.user.id.clone(),
                    last_seen,
                };
                if let Err(error) = self.tell_watchers(frame, None).await {
                    tracing::warn!(%error, "cannot announce user:offline");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "presence disconnect failed"),
        }
        metrics::connection_closed(match end {
            End::Close(code) => Some(code),
            End::ByClient => None,
        });
        tracing::debug!(conn = %self.conn, ?end, "session closed");
        finish(&mut self.ws, end).await;
    }

    /// Fails unless this session follows the room (it does for every room the user is a member of).
    fn require_member(&self, room: &RoomId) -> Result<(), SessionError> {
        if self.app.hub.is_attached(&self.conn, room) {
            Ok(())
        } else {
            Err(SessionError::refused(
                ErrorCode::NotAMember,
                format!("join room {room} first"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use switchboard_protocol::{Codec, UserId, UserRef};

    use crate::auth::Identity;

    /// Every idle connection carries its boxed session and the live loop's future.
    #[tokio::test]
    async fn an_idle_session_stays_small() {
        let cli = <crate::config::Cli as clap::Parser>::try_parse_from(["gateway"]);
        let app = crate::build(cli.expect("defaults parse").config)
            .await
            .expect("builds");
        let identity = Identity {
            user: UserRef {
                id: UserId::parse("alice").expect("valid"),
                name: "Alice".into(),
            },
            expires_at: SystemTime::now() + Duration::from_secs(60),
        };
        let (socket, _peer) = tokio::io::duplex(64 * 1024);
        let session = super::start(app, socket, Codec::Json, Some(identity))
            .await
            .expect("the session opens");
        assert!(
            size_of_val(&*session) <= 640,
            "a session is {} bytes",
            size_of_val(&*session)
        );
        let live = session.live();
        assert!(
            size_of_val(&live) <= 512,
            "the live loop is {} bytes",
            size_of_val(&live)
        );
    }
}

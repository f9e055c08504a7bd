//! One task owns one client connection and runs the rules of the protocol on it.
//!
//! - `connection.rs` — the [`Connection`] trait: what a session needs from its wire;
//!   `websocket.rs` its implementation for `/ws`, `sse.rs` for `/sse`, `socketio.rs` for
//!   `/socket.io/`;
//! - `mod.rs` — the session's start (handshake, registration, `session:ready`), its live loop
//!   (the wire, the queue, the timers) and its end;
//! - `dispatch.rs` — a decoded request to its handler, and the answer back;
//! - `handshake.rs` (first-frame `auth`), `token.rs` (`auth:refresh`, `auth:expiring`),
//!   `rooms.rs`, `messages.rs`, `signals.rs`, `events.rs` (`room:emit`), `social.rs`, `rpc.rs`
//!   (the requests), `limiter.rs` (the token bucket);
//! - `admission.rs`: the connect hook's word on a new session.
//!
//! **Invariant:** nothing but the session task writes to its connection. Others reach it through
//! its bounded outbound queue: frames, or a kick that closes it. Replies to the session's own
//! requests are written directly, before anything queued later, which is what lets a `room:join`
//! reply and the live stream meet without a gap or a duplicate.

mod admission;
mod connection;
mod dispatch;
mod events;
mod handshake;

mod messages;
mod rooms;
mod rpc;
mod signals;
mod social;
mod socketio;
mod sse;
mod token;
mod websocket;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use switchboard_protocol::{
    ClientFrame, CloseCode, ErrorCode, RoomId, RoomKind, ServerFrame, UserRef,
};
use tokio::time::Instant;

use crate::app::App;
use crate::auth::Identity;
use crate::broker::{ConnId, Envelope, Event, Topic};
use crate::error::{SessionError, Verdict};
use crate::hub::{Attachment, SessionHandle};
use crate::limiter::RateLimiter;
use crate::metrics;
use crate::outbound::{Next, Outbound, QueueRx, queue};
pub(crate) use connection::{Connection, End, Inbound, within};
use signals::Typing;
pub(crate) use socketio::SocketIo;
pub(crate) use sse::{MAX_SSE_ROOMS, Sse, SseOutput, format_positions, parse_positions};
pub(crate) use websocket::WebSocket;

/// Authenticates and opens a session on a client's connection: then [`Session::live`] runs it.
/// `identity` is set when the client authenticated before the connection was set up (a bearer
/// header); otherwise the first frame must be `auth`. `None` once a session that could not start
/// is closed.
///
/// Every idle connection holds its task's future for as long as it lives, so the start
/// (handshake, registration, `session:ready`) belongs in a box the caller frees once the session
/// is live, and the session is boxed: an async fn keeps a copy of every by-value argument.
pub(crate) async fn start<C: Connection>(
    app: Arc<App>,
    mut wire: C,
    identity: Option<Identity>,
) -> Option<Box<Session<C>>> {
    let identity = match identity {
        Some(identity) => identity,
        None => match handshake::await_auth(&app, &mut wire).await {
            Ok(identity) => identity,
            Err(end) => {
                wire.close(end).await;
                return None;
            }
        },
    };
    let Some(remaining) = time_left(identity.expires_at) else {
        // Expired between its check and now: a connection without a valid token.
        wire.close(End::Close(CloseCode::AuthFailed)).await;
        return None;
    };
    let (tx, rx) = queue(app.config.outbound_queue, app.config.max_queue_delay());
    let conn = app.next_conn_id();
    let handle = SessionHandle {
        user: identity.user.id.clone(),
        codec: wire.codec(),
        tx,
    };
    let mut session = Box::new(Session {
        app: Arc::clone(&app),
        conn,
        user: identity.user,
        wire,
        rx,
        expires_at: Instant::now() + remaining,
        expiry_told: false,
        typing: Typing::default(),
        limiter: RateLimiter::new(
            app.config.rate_per_sec,
            app.config.rate_burst,
            app.config.rate_strikes,
        ),
        event_limiter: None,
        last_heard: Instant::now(),
        next_ping: Instant::now() + app.config.heartbeat_interval(),
    });
    metrics::connection_opened();
    // In a reconnect storm thousands of sessions start at once. Let a bounded number make
    // their store and presence calls and the rest wait here, in arrival order, with no
    // timeout running: in the pool every one would wait behind every other one's statements,
    // and time out.
    metrics::start_waiting(1.0);
    let turn = tokio::select! {
        biased;
        () = app.shutdown.cancelled() => None,
        permit = app.starts.acquire() => permit.ok(),
    };
    metrics::start_waiting(-1.0);
    let Some(_turn) = turn else {
        session.close(End::Close(CloseCode::GoingAway)).await;
        return None;
    };
    let end = match session.open(handle).await {
        Ok(()) => return Some(session),
        Err(error) => match error.verdict() {
            Verdict::Close(end) => end,
            Verdict::Reply { code, message } => {
                // No session to answer in yet: the client reconnects and tries again.
                tracing::warn!(%code, %message, "session could not start");
                End::Close(CloseCode::InternalError)
            }
        },
    };
    session.close(end).await;
    None
}

fn time_left(expires_at: SystemTime) -> Option<Duration> {
    expires_at
        .duration_since(SystemTime::now())
        .ok()
        .filter(|d| !d.is_zero())
}

/// What a session does with one thing that arrived from its client (see [`Session::step`]).
enum Step {
    /// Proof of life only.
    Nothing,
    /// A decoded, admitted request.
    Request(ClientFrame),
    /// A refusal to answer (to the request with this id, if any) or an end.
    Refuse(Option<u64>, SessionError),
}

/// One client's session. Kept small: every idle connection holds one (see the size test).
pub(crate) struct Session<C> {
    /// The node: configuration and backends.
    app: Arc<App>,
    /// This connection's id, unique in the cluster: the hub, presence and kicks address it.
    conn: ConnId,
    /// Who is connected, from the token.
    user: UserRef,
    /// The client's wire; only this task writes to it.
    wire: C,
    /// Frames and kicks from the hub.
    rx: QueueRx,
    /// When the token expires: the session closes with 4003.
    expires_at: Instant,
    /// `auth:expiring` was sent for the current token.
    expiry_told: bool,
    /// Rooms this session is typing in, each with when its indicator stops by itself.
    typing: Typing,
    /// The per-connection rate limit.
    limiter: RateLimiter,
    /// The `room:emit` rate limit, made with the connection's first event (most never emit).
    event_limiter: Option<Box<RateLimiter>>,
    /// When anything last arrived from the client: silence past the heartbeat timeout closes
    /// with 4004.
    last_heard: Instant,
    /// When the next liveness probe goes out.
    next_ping: Instant,
}

impl<C: Connection> Session<C> {
    /// Registers the session everywhere and sends `session:ready`.
    async fn open(&mut self, handle: SessionHandle) -> Result<(), SessionError> {
        let app = Arc::clone(&self.app);
        let granted = self.admit().await?;
        // Registered before the ban is read: a ban that commits after the read reaches this
        // session as a kick (4009), one that committed before is in what is read.
        app.hub.register(&self.conn, handle).await;
        if let Some(ban) = app.store.upsert_user(&self.user).await? {
            tracing::info!(user = %self.user.id, until = ban.until, "refused: the user is banned");
            return Err(SessionError::Close(CloseCode::Banned));
        }
        self.enter_granted(granted).await?;
        let connected = app.presence.connect(&self.user, &self.conn).await?;
        if connected.first {
            app.presence_changed(&self.user.id, None).await;
        }
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

        let rooms: Vec<RoomId> = app
            .store
            .rooms_of(&self.user.id)
            .await?
            .into_iter()
            .map(|r| r.room_id)
            .collect();
        let (mut summaries, floors) = app
            .hub
            .follow(
                &self.conn,
                &rooms,
                app.store.rooms_of(&self.user.id),
                |summaries, room| {
                    summaries
                        .iter()
                        .find(|s| &s.room_id == room)
                        .map(|s| s.last_seq)
                },
            )
            .await?;
        for (room, floor) in rooms.iter().zip(floors) {
            if let Some(floor) = floor
                && let Some(summary) = summaries.iter_mut().find(|s| &s.room_id == room)
            {
                summary.last_seq = floor;
                summary.unread = floor.saturating_sub(summary.last_read_seq);
            }
        }
        for summary in &summaries {
            app.hub
                .set_feed(&summary.room_id, summary.kind == RoomKind::Feed);
        }
        self.wire
            .send(&ServerFrame::SessionReady {
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

    /// The session loop: one select over the wire, the queue and the timers.
    ///
    /// Every idle connection carries this loop's state, so whatever runs in a branch is boxed:
    /// handling a frame or writing is rare next to idling, and inline, every idle connection
    /// would carry the size of the largest branch.
    async fn serve(&mut self) -> End {
        // The waits that outlive one turn of the loop are made once and kept: re-arming a
        // timer and re-registering a waiter on every wake-up would cost more than the write
        // the wake-up is usually for.
        self.rx.start_clock(crate::outbound::clock_ms());
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
                incoming = self.wire.incoming() => Box::pin(self.on_incoming(incoming)).await,
                next = self.rx.next() => match next {
                    Next::Kicked(code) => Err(SessionError::Close(code)),
                    Next::Frame(first) => Box::pin(self.write_batch(first)).await,
                },
                () = &mut timer => Box::pin(self.on_timer()).await,
            };
            if let Err(error) = result {
                match error.verdict() {
                    Verdict::Close(end) => return end,
                    Verdict::Reply { code, message } => {
                        // A refusal outside any request: an `error` frame.
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
    }

    fn next_wake(&self) -> Instant {
        let silence = self.last_heard + self.app.config.heartbeat_timeout();
        let typing = self.typing.next_deadline();
        [
            Some(self.next_ping),
            Some(silence),
            Some(self.expires_at),
            self.expiry_notice_at(),
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
        if self.expiry_notice_at().is_some_and(|at| now >= at) {
            self.tell_expiry().await?;
        }
        if now >= self.last_heard + self.app.config.heartbeat_timeout() {
            return Err(SessionError::Close(CloseCode::HeartbeatTimeout));
        }
        if now >= self.next_ping {
            self.next_ping = now + self.app.config.heartbeat_interval();
            self.wire.probe().await?;
        }
        for room in self.typing.due(now) {
            self.stop_typing(&room).await;
        }
        Ok(())
    }

    /// Whatever arrived: proof of life, or a request to rate-limit, decode and dispatch.
    async fn on_incoming(&mut self, incoming: C::Incoming) -> Result<(), SessionError> {
        let inbound = self.wire.inbound(incoming).await?;
        let step = self.step(inbound);
        // While it answers its own request (a store write on a busy node can take seconds),
        // the session cannot empty its queue; that is no sign of a slow client.
        self.rx.hold_clock();
        let taken = self.take(step).await;
        self.rx.start_clock(crate::outbound::clock_ms());
        taken
    }

    /// What to do with what arrived: the bookkeeping (liveness, the rate limit, decoding) without
    /// writing anything, so a burst of sends (`messages.rs`) can look at the frames queued behind
    /// its first one and leave the rest to [`Session::take`], in order.
    fn step(&mut self, inbound: Inbound) -> Step {
        let now = Instant::now();
        self.last_heard = now;
        let codec = self.wire.codec();
        let bytes = match inbound {
            Inbound::Frame(bytes) => bytes,
            Inbound::Alive => return Step::Nothing,
            Inbound::WrongFraming => {
                let expected = if codec.is_binary() { "binary" } else { "text" };
                let message = format!("this connection speaks {codec:?} in {expected} frames");
                return Step::Refuse(
                    None,
                    SessionError::refused(ErrorCode::MalformedFrame, message),
                );
            }
        };
        if !self.limiter.admit(now) {
            if self.limiter.exhausted() {
                return Step::Refuse(None, SessionError::Close(CloseCode::RateLimitExceeded));
            }
            let id = codec
                .decode_client(&bytes)
                .ok()
                .and_then(|f| f.request_id());
            let slow_down =
                SessionError::refused(ErrorCode::RateLimited, "too many frames; slow down");
            return Step::Refuse(id, slow_down);
        }
        match codec.decode_client(&bytes) {
            Ok(frame) => {
                metrics::frame_in(frame.kind().wire_name());
                Step::Request(frame)
            }
            Err(refused) => {
                tracing::debug!(code = %refused.code, message = %refused.message, "frame refused");
                Step::Refuse(
                    refused.id,
                    SessionError::refused(refused.code, refused.message),
                )
            }
        }
    }

    /// Carries out a [`Step`].
    async fn take(&mut self, step: Step) -> Result<(), SessionError> {
        match step {
            Step::Nothing => Ok(()),
            Step::Request(frame) => self.dispatch(frame).await,
            Step::Refuse(id, error) => self.settle(id, error).await,
        }
    }

    /// Answers a failed request (an `ack` when it had an id, an `error` frame otherwise), or
    /// passes a close on to the session loop: [`SessionError::verdict`] decides.
    async fn settle(&mut self, id: Option<u64>, error: SessionError) -> Result<(), SessionError> {
        match error.verdict() {
            Verdict::Reply { code, message } => self.reply_error(id, code, message).await,
            Verdict::Close(end) => Err(end.into()),
        }
    }

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
        self.wire.send(&frame).await
    }

    /// Says goodbye on shutdown; the close (1001) follows.
    async fn goodbye(&mut self) -> Result<(), SessionError> {
        // Best effort: a client that cannot take one more frame still gets the close.
        let _ = self
            .wire
            .send(&ServerFrame::ServerShutdown { reconnect: true })
            .await;
        Err(SessionError::Close(CloseCode::GoingAway))
    }

    /// Writes `first` and what else is queued with one flush.
    async fn write_batch(&mut self, first: Outbound) -> Result<(), SessionError> {
        let rx = &mut self.rx;
        let result = self.wire.send_queued(first, &mut || rx.try_pop()).await;
        self.written(result)
    }

    /// Writes the oldest `count` queued frames (no more, though more may have arrived), ahead
    /// of a reply that must follow exactly them.
    async fn write_queued(&mut self, mut count: usize) -> Result<(), SessionError> {
        while count > 0 {
            let Some(first) = self.rx.try_pop() else {
                return Ok(());
            };
            count -= 1;
            let rx = &mut self.rx;
            let mut next = || {
                count = count.checked_sub(1)?;
                rx.try_pop()
            };
            let result = self.wire.send_queued(first, &mut next).await;
            self.written(result)?;
        }
        Ok(())
    }

    /// A write that timed out makes the session a slow consumer: kicked, so the hub stops
    /// queueing for it.
    fn written(&self, result: Result<(), SessionError>) -> Result<(), SessionError> {
        if let Err(SessionError::Close(CloseCode::SlowConsumer)) = result
            && self.rx.kick(CloseCode::SlowConsumer)
        {
            metrics::slow_consumer();
        }
        result
    }

    /// Unregisters everywhere, tells others, and closes the connection.
    async fn close(mut self: Box<Self>, end: End) {
        let app = Arc::clone(&self.app);
        for room in self.typing.rooms() {
            self.stop_typing(&room).await;
        }
        app.hub.unregister(&self.conn).await;
        match app.presence.disconnect(&self.user.id, &self.conn).await {
            Ok(Some(last_seen)) => {
                app.presence_changed(&self.user.id, Some(last_seen)).await;
                let frame = ServerFrame::UserOffline {
                    user_id: self.user.id.clone(),
                    last_seen,
                };
                if let Err(error) = self.tell_watchers(frame, None).await {
                    tracing::warn!(error = %crate::error::Chain(&error), "cannot announce user:offline");
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %crate::error::Chain(&error), "presence disconnect failed")
            }
        }
        metrics::connection_closed(match end {
            End::Close(code) => Some(code),
            End::ByClient => None,
        });
        tracing::debug!(conn = %self.conn, ?end, "session closed");
        self.wire.close(end).await;
    }

    /// Fails unless this session follows the room (it does for every room the user is a member of).
    fn require_member(&self, room: &RoomId) -> Result<Attachment, SessionError> {
        self.app.hub.attachment(&self.conn, room).ok_or_else(|| {
            SessionError::refused(ErrorCode::NotAMember, format!("join room {room} first"))
        })
    }

    /// A member who may publish in the room: not a feed's reader.
    fn require_publisher(&self, room: &RoomId) -> Result<(), SessionError> {
        match self.require_member(room)? {
            Attachment::Member => Ok(()),
            Attachment::Reader => Err(crate::actions::feed_refusal(room)),
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
        let no_env = std::collections::HashMap::<&str, &str>::new();
        let cli = crate::config::Cli::try_parse_with(["gateway"], &no_env);
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
        let wire = super::WebSocket::accept(socket, Codec::Json, &app).await;
        let session = super::start(app, wire, Some(identity))
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

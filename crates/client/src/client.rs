//! The client: a handle ([`Client`], cheap to clone) and one task that owns the connection. The
//! task authenticates, reconnects with backoff as the close codes say, resumes every room from
//! the last seq it handed over, hands each message over once and in order ([`Events`]), sends
//! from the outbox until acknowledged, and refreshes the token before it expires.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::{
    AckResult, ClientFrame, CloseCode, Member, Message, MessageKind, Role, RoomId, RoomInfo,
    RoomSummary, ServerFrame, UserId, UserRef,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};

use crate::connection::{ConnectOptions, Connection, Incoming};
use crate::error::{ConnectError, Error};
use crate::outbox::{Outbox, OutboxStore, PendingSend};
use crate::token::TokenSource;

/// How the client is set up. [`ClientOptions::new`] gives the defaults.
#[derive(Clone)]
pub struct ClientOptions {
    /// The gateway's WebSocket endpoint, e.g. `wss://chat.example.com/ws`.
    pub url: String,
    pub token: TokenSource,
    /// Codec, origin, headers, TLS, handshake timeout (the token is set on each connect).
    pub connect: ConnectOptions,
    /// Reconnect backoff: a random wait up to `min(backoff_max, backoff_base × 2^attempt)`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long a request (other than a send) waits for its answer.
    pub request_timeout: Duration,
    /// Most unsent messages held; a send beyond it fails with [`Error::OutboxFull`].
    pub outbox_limit: usize,
    /// Keeps the outbox across restarts.
    pub outbox_store: Option<Arc<dyn OutboxStore>>,
    /// Events buffered for the app. When it is full the client waits for the app to read
    /// (and so stops reading the socket): a client that never reads its events stalls.
    pub event_buffer: usize,
}

impl ClientOptions {
    pub fn new(url: impl Into<String>, token: impl Into<TokenSource>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            connect: ConnectOptions::default(),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            outbox_limit: 1_000,
            outbox_store: None,
            event_buffer: 1_024,
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("url", &self.url)
            .field("token", &self.token)
            .field("connect", &self.connect)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    Connected,
    Reconnecting,
    Closed,
}

/// A `session:ready`: who the client is, and the user's rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub user: UserRef,
    pub conn_id: String,
    pub rooms: Vec<RoomSummary>,
    pub unread_notifications: u64,
    pub epoch: String,
}

/// Where a message was stored: the `sent` answer to a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub room_id: RoomId,
    pub message_id: String,
    pub seq: u64,
    pub created_at: u64,
    /// This `clientMsgId` had been stored before: this is the original answer.
    pub duplicate: bool,
}

/// A room joined (or created): the room, the user's role, who is online, and its latest
/// messages, to show first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub room: RoomInfo,
    pub role: Role,
    pub online: Vec<Member>,
    pub messages: Vec<Message>,
}

/// A page of a room's history, ascending by seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

/// Why the app gets messages it must treat as a fresh start for a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// More was missed than the server replays: `messages` is the latest page.
    NotRecovered,
    /// The server's history changed (an embedded store restarted): older seqs mean nothing.
    NewEpoch,
}

/// What the client tells the app, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    State(ConnectionState),
    Ready(Ready),
    /// Each message once, in seq order per room: live, or replayed after a reconnect. The
    /// user's own sends are not handed back (their [`Client::send`] has them).
    Message(Message),
    Gap {
        room_id: RoomId,
        reason: GapReason,
        messages: Vec<Message>,
    },
    /// A send restored from the [`OutboxStore`] was acknowledged (no caller awaits it).
    Sent {
        sent: Sent,
        send: PendingSend,
    },
    /// A server frame with no event of its own: typing, presence, receipts, custom events,
    /// notifications, friends.
    Frame(ServerFrame),
    /// The client stopped for good: closed by the app, or a close code that says not to
    /// reconnect (1000, 4001, 4007, 4008, 4009, 4010), or a refused handshake (HTTP status).
    Closed {
        code: u16,
        reason: String,
    },
}

/// The app's side of the event stream.
#[derive(Debug)]
pub struct Events(mpsc::Receiver<Event>);

impl Events {
    /// The next event; `None` once the client has stopped and every event was read.
    pub async fn next(&mut self) -> Option<Event> {
        self.0.recv().await
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        self.0.try_recv().ok()
    }
}

enum Command {
    Request {
        frame: ClientFrame,
        reply: oneshot::Sender<Result<AckResult, Error>>,
    },
    Join {
        frame: ClientFrame,
        room_id: RoomId,
        reply: oneshot::Sender<Result<AckResult, Error>>,
    },
    Leave {
        room_id: RoomId,
        reply: oneshot::Sender<Result<AckResult, Error>>,
    },
    Send {
        send: PendingSend,
        reply: oneshot::Sender<Result<Sent, Error>>,
    },
    Typing {
        room_id: RoomId,
        stop: bool,
    },
    Unsent(oneshot::Sender<Vec<PendingSend>>),
    Close,
}

/// A handle on the client; clones share it. Dropping every handle closes the connection.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<ConnectionState>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &*self.state.borrow())
            .finish()
    }
}

/// A typing indicator stops this long after the last [`Client::typing`] (the server's own is 3 s).
const TYPING_IDLE: Duration = Duration::from_millis(2_500);
/// While [`Client::typing`] keeps being called, `typing:start` is sent again this often.
const TYPING_REPEAT: Duration = Duration::from_secs(2);
/// Own message ids remembered, so a replay does not hand the app its own sends again.
const OWN_IDS_KEPT: usize = 10_000;

impl Client {
    /// Starts the client and waits for its first session. Fails when the first connect is
    /// refused for good (a bad token: HTTP 401) or the client is closed meanwhile; a node that
    /// is down is retried with backoff until one answers.
    pub async fn connect(options: ClientOptions) -> Result<(Self, Events, Ready), Error> {
        let (client, events, first) = Self::spawn(options);
        let ready = first.await.map_err(|_| Error::Closed)??;
        Ok((client, events, ready))
    }

    /// Starts the client without waiting: it connects in the background ([`Event::State`],
    /// [`Event::Ready`] say when). Must be called within a tokio runtime.
    pub fn start(options: ClientOptions) -> (Self, Events) {
        let (client, events, _) = Self::spawn(options);
        (client, events)
    }

    fn spawn(options: ClientOptions) -> (Self, Events, oneshot::Receiver<Result<Ready, Error>>) {
        let (first_tx, first) = oneshot::channel();
        let (commands, command_rx) = mpsc::channel(256);
        let (events, event_rx) = mpsc::channel(options.event_buffer.max(1));
        let (state_tx, state) = watch::channel(ConnectionState::Connecting);
        let (refreshed_tx, refreshed) = mpsc::channel(1);
        let driver = Driver {
            outbox: Outbox::new(options.outbox_limit, options.outbox_store.clone()),
            options,
            commands: command_rx,
            events,
            state: state_tx,
            refreshed,
            refreshed_tx,
            rooms: HashMap::new(),
            waiting: HashMap::new(),
            sends: HashMap::new(),
            retries: Vec::new(),
            typing: HashMap::new(),
            own_ids: OwnIds::default(),
            next_id: 1,
            epoch: None,
            stopped: false,
            first_ready: Some(first_tx),
        };
        tokio::spawn(driver.run());
        (Self { commands, state }, Events(event_rx), first)
    }

    pub fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    /// Waits until the state is `state` (or the client closed).
    pub async fn wait_for(&self, state: ConnectionState) -> ConnectionState {
        let mut watch = self.state.clone();
        watch
            .wait_for(|s| *s == state || *s == ConnectionState::Closed)
            .await
            .map_or(ConnectionState::Closed, |s| *s)
    }

    /// Any request of the protocol (its `id` is set by the client); the `ack` result, or the
    /// refusal as [`Error::Refused`]. Not queued: fails with [`Error::Disconnected`] when not
    /// connected.
    pub async fn request(&self, frame: ClientFrame) -> Result<AckResult, Error> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Request { frame, reply }).await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Joins a room; from then on it is resumed after every reconnect. The answer is a
    /// [`AckResult::Room`] with the latest page of messages.
    pub async fn join(&self, room_id: &RoomId) -> Result<Joined, Error> {
        self.join_with(ClientFrame::RoomJoin {
            id: 0,
            room_id: room_id.clone(),
            password: None,
            since_seq: None,
        })
        .await
    }

    /// Joins with a `room:join` frame of your own (a password), or creates a room with
    /// `room:create`: either way the room is resumed from then on.
    pub async fn join_with(&self, frame: ClientFrame) -> Result<Joined, Error> {
        let room_id = match &frame {
            ClientFrame::RoomJoin { room_id, .. } | ClientFrame::RoomCreate { room_id, .. } => {
                room_id.clone()
            }
            other => {
                return Err(Error::Unexpected(format!(
                    "join_with takes room:join or room:create, not {}",
                    other.kind().wire_name()
                )));
            }
        };
        let (reply, answer) = oneshot::channel();
        self.command(Command::Join {
            frame,
            room_id,
            reply,
        })
        .await?;
        match answer.await.map_err(|_| Error::Closed)?? {
            AckResult::Room {
                room,
                role,
                online,
                messages,
                ..
            } => Ok(Joined {
                room,
                role,
                online,
                messages,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// The latest `limit` messages before `before_seq` (the latest page without it).
    pub async fn history(
        &self,
        room_id: &RoomId,
        before_seq: Option<u64>,
        limit: Option<u32>,
    ) -> Result<History, Error> {
        let frame = ClientFrame::HistoryFetch {
            id: 0,
            room_id: room_id.clone(),
            before_seq,
            after_seq: None,
            limit,
        };
        match self.request(frame).await? {
            AckResult::History {
                messages, has_more, ..
            } => Ok(History { messages, has_more }),
            other => Err(unexpected(&other)),
        }
    }

    /// Marks `room_id` read up to `seq` on every device of the user.
    pub async fn mark_read(&self, room_id: &RoomId, seq: u64) -> Result<(), Error> {
        let frame = ClientFrame::MessageRead {
            id: None,
            room_id: room_id.clone(),
            seq,
        };
        self.request(frame).await.map(|_| ())
    }

    /// Leaves a room (on every device) and stops resuming it.
    pub async fn leave(&self, room_id: &RoomId) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Leave {
            room_id: room_id.clone(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| Error::Closed)?.map(|_| ())
    }

    /// Sends a text message; resolves once, with where it was stored, whatever reconnects
    /// happen in between. Made while disconnected, it waits in the outbox.
    pub async fn send(&self, room_id: &RoomId, content: impl Into<String>) -> Result<Sent, Error> {
        self.send_pending(PendingSend::Room {
            room_id: room_id.clone(),
            content: content.into(),
            kind: MessageKind::Text,
            client_msg_id: new_client_msg_id(),
        })
        .await
    }

    /// Sends a direct message, as [`send`](Self::send) does.
    pub async fn send_direct(
        &self,
        recipient_id: &UserId,
        content: impl Into<String>,
    ) -> Result<Sent, Error> {
        self.send_pending(PendingSend::Direct {
            recipient_id: recipient_id.clone(),
            content: content.into(),
            kind: MessageKind::Text,
            client_msg_id: new_client_msg_id(),
        })
        .await
    }

    /// Sends with a `clientMsgId` (and kind) of your own. The same `clientMsgId` while it is
    /// pending is the same send, with the same answer.
    pub async fn send_pending(&self, send: PendingSend) -> Result<Sent, Error> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Send { send, reply }).await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Shows the user typing in `room_id`: call it on every keystroke. `typing:start` goes out
    /// now and again every 2 s while calls go on, `typing:stop` 2.5 s after the last one.
    /// Nothing is sent while disconnected.
    pub async fn typing(&self, room_id: &RoomId) {
        let _ = self
            .command(Command::Typing {
                room_id: room_id.clone(),
                stop: false,
            })
            .await;
    }

    pub async fn stop_typing(&self, room_id: &RoomId) {
        let _ = self
            .command(Command::Typing {
                room_id: room_id.clone(),
                stop: true,
            })
            .await;
    }

    /// Sends waiting for their ack, oldest first.
    pub async fn unsent(&self) -> Vec<PendingSend> {
        let (reply, answer) = oneshot::channel();
        if self.command(Command::Unsent(reply)).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Closes for good (1000): no reconnect. Unsent messages stay in the outbox store.
    pub async fn close(&self) {
        let _ = self.command(Command::Close).await;
        self.wait_for(ConnectionState::Closed).await;
    }

    async fn command(&self, command: Command) -> Result<(), Error> {
        self.commands.send(command).await.map_err(|_| Error::Closed)
    }
}

fn unexpected(result: &AckResult) -> Error {
    Error::Unexpected(format!("an answer of another kind: {result:?}"))
}

fn new_client_msg_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Full jitter: a random wait up to `min(max, base × 2^attempt)`.
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1_u32 << attempt.min(20)).min(max);
    ceiling.mul_f64(rand::random::<f64>())
}

#[derive(Default)]
struct OwnIds {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl OwnIds {
    fn remember(&mut self, id: String) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > OWN_IDS_KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
    }
}

struct Typing {
    /// When `typing:start` was last sent.
    started: Instant,
    /// When `typing:stop` goes out unless typing goes on.
    until: Instant,
}

#[derive(Default)]
struct RoomState {
    /// The last seq handed to the app; `None` until known.
    last_seq: Option<u64>,
    /// While a resume is in flight, live messages wait here.
    held: Option<Vec<Message>>,
}

enum Waiter {
    Request {
        reply: oneshot::Sender<Result<AckResult, Error>>,
        deadline: Instant,
    },
    Join {
        room_id: RoomId,
        reply: oneshot::Sender<Result<AckResult, Error>>,
        deadline: Instant,
    },
    Leave {
        room_id: RoomId,
        reply: oneshot::Sender<Result<AckResult, Error>>,
        deadline: Instant,
    },
    Send(String),
    Resume {
        room_id: RoomId,
        since: Option<u64>,
        new_epoch: bool,
    },
    Refresh,
}

impl Waiter {
    fn deadline(&self) -> Option<Instant> {
        match self {
            Self::Request { deadline, .. }
            | Self::Join { deadline, .. }
            | Self::Leave { deadline, .. } => Some(*deadline),
            Self::Send(_) | Self::Resume { .. } | Self::Refresh => None,
        }
    }
}

/// How a session ended.
enum End {
    /// Closed by the app, or every handle dropped.
    Stop,
    Closed {
        code: u16,
        reason: String,
        shutdown: bool,
    },
}

struct Driver {
    options: ClientOptions,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    state: watch::Sender<ConnectionState>,
    refreshed: mpsc::Receiver<String>,
    refreshed_tx: mpsc::Sender<String>,
    outbox: Outbox,
    rooms: HashMap<RoomId, RoomState>,
    waiting: HashMap<u64, Waiter>,
    /// Callers awaiting each send in the outbox, by clientMsgId.
    sends: HashMap<String, Vec<oneshot::Sender<Result<Sent, Error>>>>,
    /// Sends refused with a retryable code, due again at the instant.
    retries: Vec<(Instant, String)>,
    /// Rooms the user is shown typing in.
    typing: HashMap<RoomId, Typing>,
    own_ids: OwnIds,
    next_id: u64,
    epoch: Option<String>,
    stopped: bool,
    /// [`Client::connect`]'s answer: the first session, or why there is none.
    first_ready: Option<oneshot::Sender<Result<Ready, Error>>>,
}

impl Driver {
    async fn run(mut self) {
        // The state starts as `Connecting`; the app hears it as the first event.
        self.emit(Event::State(ConnectionState::Connecting)).await;
        self.outbox.restore();
        let mut attempt: u32 = 0;
        let mut prompt = false;
        let mut first = true;
        while !self.stopped {
            if !first {
                let delay = if prompt {
                    Duration::ZERO
                } else {
                    backoff(
                        self.options.backoff_base,
                        self.options.backoff_max,
                        attempt.saturating_sub(1),
                    )
                };
                self.set_state(ConnectionState::Reconnecting).await;
                self.offline_until(Instant::now() + delay).await;
                if self.stopped {
                    break;
                }
            }
            first = false;
            prompt = false;
            let (mut conn, ready) = match self.establish().await {
                Some(Ok(session)) => session,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, attempt, "connect failed");
                    if !e.is_retryable() {
                        let (code, reason) = match &e {
                            ConnectError::Refused { status, .. } => (*status, e.to_string()),
                            ConnectError::ClosedEarly { code, reason } => (*code, reason.clone()),
                            _ => (CloseCode::Normal.code(), e.to_string()),
                        };
                        if let Some(first) = self.first_ready.take() {
                            let _ = first.send(Err(Error::Connect(e)));
                        }
                        self.stop(code, reason).await;
                        break;
                    }
                    attempt = attempt.saturating_add(1);
                    continue;
                }
                None => break,
            };
            attempt = 0;
            match self.session(&mut conn, ready).await {
                End::Stop => {
                    conn.close(CloseCode::Normal.code(), "closed by the client")
                        .await;
                    self.stop(CloseCode::Normal.code(), "closed by the client".into())
                        .await;
                }
                End::Closed {
                    code,
                    reason,
                    shutdown,
                } => {
                    self.fail_waiting();
                    if !CloseCode::from_code(code).is_none_or(CloseCode::reconnect) {
                        self.stop(code, reason).await;
                    } else {
                        prompt = shutdown;
                        attempt = 1;
                    }
                }
            }
        }
    }

    /// Opens a connection and waits for its `session:ready`, serving commands meanwhile;
    /// `None` when the app closed the client.
    async fn establish(&mut self) -> Option<Result<(Connection, Ready), ConnectError>> {
        let token = self.options.token.clone();
        let url = self.options.url.clone();
        let mut connect = self.options.connect.clone();
        let timeout = connect.timeout;
        let attempt = async move {
            connect.bearer = Some(token.token().await.map_err(ConnectError::Token)?);
            let mut conn = Connection::open(&url, &connect).await?;
            let ready = tokio::time::timeout(timeout, async {
                loop {
                    match conn.recv().await {
                        Incoming::Frame(ServerFrame::SessionReady {
                            user,
                            conn_id,
                            rooms,
                            unread_notifications,
                            epoch,
                            ..
                        }) => {
                            return Ok(Ready {
                                user,
                                conn_id,
                                rooms,
                                unread_notifications,
                                epoch,
                            });
                        }
                        Incoming::Closed { code, reason } => {
                            return Err(ConnectError::ClosedEarly { code, reason });
                        }
                        Incoming::Frame(_) | Incoming::Unreadable(_) => {}
                    }
                }
            })
            .await
            .map_err(|_| ConnectError::Timeout(timeout))??;
            Ok((conn, ready))
        };
        tokio::pin!(attempt);
        loop {
            tokio::select! {
                result = &mut attempt => return Some(result),
                command = self.commands.recv() => {
                    if !self.offline_command(command).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Serves commands while disconnected until `until`.
    async fn offline_until(&mut self, until: Instant) {
        loop {
            tokio::select! {
                () = sleep_until(until) => return,
                command = self.commands.recv() => {
                    if !self.offline_command(command).await {
                        return;
                    }
                }
            }
        }
    }

    /// A command while disconnected: sends wait in the outbox, requests fail. `false` when the
    /// client is to stop.
    async fn offline_command(&mut self, command: Option<Command>) -> bool {
        match command {
            None | Some(Command::Close) => {
                self.stop(CloseCode::Normal.code(), "closed by the client".into())
                    .await;
                false
            }
            Some(Command::Send { send, reply }) => {
                self.enqueue(send, reply);
                true
            }
            Some(
                Command::Request { reply, .. }
                | Command::Join { reply, .. }
                | Command::Leave { reply, .. },
            ) => {
                let _ = reply.send(Err(Error::Disconnected));
                true
            }
            Some(Command::Typing { .. }) => true,
            Some(Command::Unsent(reply)) => {
                let _ = reply.send(self.outbox.all().to_vec());
                true
            }
        }
    }

    async fn session(&mut self, conn: &mut Connection, ready: Ready) -> End {
        let new_epoch = self.epoch.as_ref().is_some_and(|e| *e != ready.epoch);
        self.epoch = Some(ready.epoch.clone());
        let member: HashSet<RoomId> = ready.rooms.iter().map(|r| r.room_id.clone()).collect();
        self.set_state(ConnectionState::Connected).await;
        if let Some(first) = self.first_ready.take() {
            let _ = first.send(Ok(ready.clone()));
        }
        self.emit(Event::Ready(ready)).await;
        if new_epoch {
            // Seqs of the old history mean nothing in the new one.
            self.rooms
                .values_mut()
                .for_each(|room| room.last_seq = None);
        }
        // Not a member any more in the same history: left on another device. Joining again
        // would make the user a member again, so it is not resumed. (A new history remembers no
        // member: every room is joined again, and one that is gone is refused.)
        if !new_epoch {
            self.rooms.retain(|room_id, _| member.contains(room_id));
        }
        let rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
        for room_id in rooms {
            self.resume(conn, room_id, new_epoch).await;
        }
        let pending: Vec<PendingSend> = self.outbox.all().to_vec();
        for send in pending {
            self.transmit_send(conn, &send).await;
        }
        let mut shutdown = false;
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                incoming = conn.recv() => match incoming {
                    Incoming::Frame(ServerFrame::ServerShutdown { .. }) => shutdown = true,
                    Incoming::Frame(frame) => self.on_frame(frame).await,
                    Incoming::Unreadable(why) => tracing::debug!(%why, "ignored an unreadable frame"),
                    Incoming::Closed { code, reason } => return End::Closed { code, reason, shutdown },
                },
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => return End::Stop,
                    Some(command) => self.online_command(conn, command).await,
                },
                Some(token) = self.refreshed.recv() => {
                    let refresh = ClientFrame::AuthRefresh { id: 0, token };
                    self.ask(conn, refresh, Waiter::Refresh).await;
                }
                () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    self.on_deadlines(conn).await;
                }
            }
        }
    }

    async fn online_command(&mut self, conn: &mut Connection, command: Command) {
        let deadline = Instant::now() + self.options.request_timeout;
        match command {
            Command::Request { frame, reply } => {
                self.ask(conn, frame, Waiter::Request { reply, deadline })
                    .await;
            }
            Command::Join {
                frame,
                room_id,
                reply,
            } => {
                let waiter = Waiter::Join {
                    room_id,
                    reply,
                    deadline,
                };
                self.ask(conn, frame, waiter).await;
            }
            Command::Leave { room_id, reply } => {
                let frame = ClientFrame::RoomLeave {
                    id: 0,
                    room_id: room_id.clone(),
                };
                let waiter = Waiter::Leave {
                    room_id,
                    reply,
                    deadline,
                };
                self.ask(conn, frame, waiter).await;
            }
            Command::Send { send, reply } => {
                let fresh = !self.sends.contains_key(send.client_msg_id());
                let copy = send.clone();
                if self.enqueue(send, reply) && fresh {
                    self.transmit_send(conn, &copy).await;
                }
            }
            Command::Typing { room_id, stop } => {
                let now = Instant::now();
                if stop {
                    if self.typing.remove(&room_id).is_some() {
                        transmit(conn, &ClientFrame::TypingStop { room_id }).await;
                    }
                    return;
                }
                // The server's indicator lapses 3 s after the last start: repeat it while
                // typing goes on.
                let started = match self.typing.get(&room_id) {
                    Some(typing) if now < typing.started + TYPING_REPEAT => typing.started,
                    _ => {
                        transmit(
                            conn,
                            &ClientFrame::TypingStart {
                                room_id: room_id.clone(),
                            },
                        )
                        .await;
                        now
                    }
                };
                self.typing.insert(
                    room_id,
                    Typing {
                        started,
                        until: now + TYPING_IDLE,
                    },
                );
            }
            Command::Unsent(reply) => {
                let _ = reply.send(self.outbox.all().to_vec());
            }
            Command::Close => {}
        }
    }

    /// Puts `send` in the outbox with its caller; `false` when it was refused (outbox full).
    fn enqueue(&mut self, send: PendingSend, reply: oneshot::Sender<Result<Sent, Error>>) -> bool {
        let id = send.client_msg_id().to_owned();
        if let Some(callers) = self.sends.get_mut(&id) {
            callers.push(reply);
            return true;
        }
        if !self.outbox.add(send) {
            let _ = reply.send(Err(Error::OutboxFull(self.outbox.limit())));
            return false;
        }
        self.sends.insert(id, vec![reply]);
        true
    }

    async fn transmit_send(&mut self, conn: &mut Connection, send: &PendingSend) {
        let waiter = Waiter::Send(send.client_msg_id().to_owned());
        self.ask(conn, send.frame(0), waiter).await;
    }

    /// Numbers `frame`, remembers who waits for its answer, and sends it.
    async fn ask(&mut self, conn: &mut Connection, mut frame: ClientFrame, waiter: Waiter) {
        let id = self.next_id();
        frame.set_request_id(id);
        self.waiting.insert(id, waiter);
        transmit(conn, &frame).await;
    }

    /// Joins `room_id` again from the last seq handed over; live messages wait meanwhile.
    async fn resume(&mut self, conn: &mut Connection, room_id: RoomId, new_epoch: bool) {
        let room = self.rooms.entry(room_id.clone()).or_default();
        let since = if new_epoch { None } else { room.last_seq };
        room.held = Some(Vec::new());
        let waiter = Waiter::Resume {
            room_id: room_id.clone(),
            since,
            new_epoch,
        };
        let frame = ClientFrame::RoomJoin {
            id: 0,
            room_id,
            password: None,
            since_seq: since,
        };
        self.ask(conn, frame, waiter).await;
    }

    async fn on_frame(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Ack { id, result, error } => {
                let outcome = match (result, error) {
                    (Some(result), _) => Ok(result),
                    (None, Some(error)) => Err(Error::Refused {
                        code: error.code,
                        message: error.message,
                    }),
                    (None, None) => Err(Error::Unexpected("an ack without a result".into())),
                };
                self.on_ack(id, outcome).await;
            }
            ServerFrame::MessageNew { message } => {
                let room = self.rooms.entry(message.room_id.clone()).or_default();
                match &mut room.held {
                    Some(held) => held.push(message),
                    None => self.deliver(message).await,
                }
            }
            ServerFrame::AuthExpiring { .. } if self.options.token.refreshable() => {
                let token = self.options.token.clone();
                let refreshed = self.refreshed_tx.clone();
                // Asked on the side so frames keep flowing; a failure leaves the old token,
                // and the connection closes with 4003 at its expiry and reconnects.
                tokio::spawn(async move {
                    match token.token().await {
                        Ok(token) => {
                            let _ = refreshed.send(token).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "the token source failed"),
                    }
                });
            }
            other => self.emit(Event::Frame(other)).await,
        }
    }

    async fn on_ack(&mut self, id: u64, outcome: Result<AckResult, Error>) {
        let Some(waiter) = self.waiting.remove(&id) else {
            return;
        };
        match waiter {
            Waiter::Request { reply, .. } => {
                let _ = reply.send(outcome);
            }
            Waiter::Join { room_id, reply, .. } => {
                if let Ok(AckResult::Room { room, .. }) = &outcome {
                    let state = self.rooms.entry(room_id).or_default();
                    state.last_seq = Some(state.last_seq.unwrap_or(0).max(room.last_seq));
                }
                let _ = reply.send(outcome);
            }
            Waiter::Leave { room_id, reply, .. } => {
                if outcome.is_ok() {
                    self.rooms.remove(&room_id);
                }
                let _ = reply.send(outcome);
            }
            Waiter::Send(client_msg_id) => self.on_send_answer(client_msg_id, outcome).await,
            Waiter::Resume {
                room_id,
                since,
                new_epoch,
            } => self.on_resumed(room_id, since, new_epoch, outcome).await,
            Waiter::Refresh => {
                if let Err(e) = outcome {
                    // The connection keeps its old token: it closes with 4003 at its expiry,
                    // and the reconnect asks the token source again.
                    tracing::warn!(error = %e, "the refreshed token was refused");
                }
            }
        }
    }

    async fn on_send_answer(&mut self, client_msg_id: String, outcome: Result<AckResult, Error>) {
        match outcome {
            Ok(AckResult::Sent {
                room_id,
                message_id,
                seq,
                created_at,
                duplicate,
            }) => {
                let Some(send) = self.outbox.remove(&client_msg_id) else {
                    return;
                };
                self.own_ids.remember(message_id.clone());
                let sent = Sent {
                    room_id,
                    message_id,
                    seq,
                    created_at,
                    duplicate,
                };
                match self.sends.remove(&client_msg_id) {
                    Some(callers) => {
                        for caller in callers {
                            let _ = caller.send(Ok(sent.clone()));
                        }
                    }
                    None => self.emit(Event::Sent { sent, send }).await,
                }
            }
            Ok(other) => tracing::warn!(?other, "a send answered with another result"),
            // Gone with the connection: it stays in the outbox and goes again on reconnect.
            Err(Error::Disconnected) => {}
            Err(e) if e.is_retryable() => {
                let at = Instant::now()
                    + backoff(self.options.backoff_base, self.options.backoff_max, 1);
                self.retries.push((at, client_msg_id));
            }
            Err(e) => {
                self.outbox.remove(&client_msg_id);
                for caller in self.sends.remove(&client_msg_id).unwrap_or_default() {
                    let _ = caller.send(Err(e.copy()));
                }
            }
        }
    }

    async fn on_resumed(
        &mut self,
        room_id: RoomId,
        since: Option<u64>,
        new_epoch: bool,
        outcome: Result<AckResult, Error>,
    ) {
        let room = self.rooms.entry(room_id.clone()).or_default();
        let held = room.held.take().unwrap_or_default();
        let (info, messages, recovered) = match outcome {
            Ok(AckResult::Room {
                room: info,
                messages,
                recovered,
                ..
            }) => (info, messages, recovered),
            // Gone with the connection: the next session resumes it from the same seq.
            Err(Error::Disconnected) => return,
            _ => {
                // Refused (left meanwhile, banned, gone): stop resuming it; what arrived while
                // the resume was in flight is still news.
                for message in held {
                    self.deliver(message).await;
                }
                self.rooms.remove(&room_id);
                return;
            }
        };
        if since.is_none() || !recovered {
            room.last_seq = Some(info.last_seq);
            let reason = if new_epoch {
                GapReason::NewEpoch
            } else {
                GapReason::NotRecovered
            };
            self.emit(Event::Gap {
                room_id,
                reason,
                messages,
            })
            .await;
        } else {
            for message in messages {
                self.deliver(message).await;
            }
        }
        for message in held {
            self.deliver(message).await;
        }
    }

    /// Hands `message` to the app unless it was handed before or is one of the user's own sends.
    async fn deliver(&mut self, message: Message) {
        let room = self.rooms.entry(message.room_id.clone()).or_default();
        if room.last_seq.is_some_and(|last| message.seq <= last) {
            return;
        }
        room.last_seq = Some(message.seq);
        if self.own_ids.set.contains(&message.message_id) {
            return;
        }
        self.emit(Event::Message(message)).await;
    }

    fn next_deadline(&self) -> Option<Instant> {
        let waits = self.waiting.values().filter_map(Waiter::deadline);
        let retries = self.retries.iter().map(|(at, _)| *at);
        let typing = self.typing.values().map(|t| t.until);
        waits.chain(retries).chain(typing).min()
    }

    async fn on_deadlines(&mut self, conn: &mut Connection) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let timeout = Error::Timeout(self.options.request_timeout);
            match self.waiting.remove(&id) {
                Some(
                    Waiter::Request { reply, .. }
                    | Waiter::Join { reply, .. }
                    | Waiter::Leave { reply, .. },
                ) => {
                    let _ = reply.send(Err(timeout));
                }
                Some(other) => {
                    self.waiting.insert(id, other);
                }
                None => {}
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = self.retries.drain(..).partition(|(at, _)| *at <= now);
        self.retries = later;
        for (_, client_msg_id) in due {
            if let Some(send) = self.outbox.get(&client_msg_id).cloned() {
                self.transmit_send(conn, &send).await;
            }
        }
        let stopped: Vec<RoomId> = self
            .typing
            .iter()
            .filter(|(_, typing)| typing.until <= now)
            .map(|(room, _)| room.clone())
            .collect();
        for room_id in stopped {
            self.typing.remove(&room_id);
            transmit(conn, &ClientFrame::TypingStop { room_id }).await;
        }
    }

    /// The connection ended: requests fail, sends stay in the outbox for the next session.
    fn fail_waiting(&mut self) {
        for (_, waiter) in self.waiting.drain() {
            if let Waiter::Request { reply, .. }
            | Waiter::Join { reply, .. }
            | Waiter::Leave { reply, .. } = waiter
            {
                let _ = reply.send(Err(Error::Disconnected));
            }
        }
        self.retries.clear();
        self.typing.clear();
        for room in self.rooms.values_mut() {
            room.held = None;
        }
    }

    async fn stop(&mut self, code: u16, reason: String) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Some(first) = self.first_ready.take() {
            let _ = first.send(Err(Error::Closed));
        }
        self.fail_waiting();
        // Callers of sends still in the outbox learn the client closed; the store keeps them.
        for (_, callers) in self.sends.drain() {
            for caller in callers {
                let _ = caller.send(Err(Error::Closed));
            }
        }
        self.set_state(ConnectionState::Closed).await;
        self.emit(Event::Closed { code, reason }).await;
    }

    async fn set_state(&mut self, state: ConnectionState) {
        if *self.state.borrow() == state {
            return;
        }
        self.state.send_replace(state);
        self.emit(Event::State(state)).await;
    }

    async fn emit(&mut self, event: Event) {
        // An app that dropped its `Events` just does not hear them.
        let _ = self.events.send(event).await;
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

async fn transmit(conn: &mut Connection, frame: &ClientFrame) {
    // A failed write means the connection is gone: its `recv` says how, and the session ends.
    if let Err(e) = conn.send(frame).await {
        tracing::debug!(error = %e, "write failed");
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_a_growing_ceiling() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..40 {
            let ceiling = (base * 2_u32.pow(attempt.min(20))).min(max);
            for _ in 0..50 {
                assert!(backoff(base, max, attempt) <= ceiling);
            }
        }
    }

    #[test]
    fn own_ids_are_bounded() {
        let mut ids = OwnIds::default();
        for n in 0..OWN_IDS_KEPT + 10 {
            ids.remember(n.to_string());
        }
        assert_eq!(ids.set.len(), OWN_IDS_KEPT);
        assert!(!ids.set.contains("0"));
        assert!(ids.set.contains(&(OWN_IDS_KEPT + 9).to_string()));
    }
}

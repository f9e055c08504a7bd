//! `loadgen fanout`: room broadcasts at a fixed rate, measured at every receiver.
//!
//! Phases: publishers connect and create (or join) their rooms; receivers connect and join,
//! `--concurrency` at a time, and start draining their sockets at once; after a settle pause the
//! publishers send `message:send` on a fixed schedule for `--secs`; receivers keep counting for
//! `--drain-secs` more; then everything stops and the counts are reported.
//!
//! **Latency** is measured from the *scheduled* send time, written into each message's content
//! as decimal nanoseconds since this process's epoch: a publisher that falls behind its schedule
//! shows up as latency instead of quietly lowering the rate (no coordinated omission).
//!
//! **Per delivery** a receiver does no JSON parsing: the frame is recognised by its prefix (serde
//! writes the `type` tag first) and the timestamp is the run of digits after `"content":"`.
//! Switchboard receivers read with the raw client of [`raw`]: one `read` fills a buffer with
//! many frames, every complete one is parsed in place (no copy, no UTF-8 check) and they share
//! one clock read, since they arrived together. The Socket.IO dialect (on tungstenite) does the
//! same byte search on its own frames (see [`socketio`]); publishers use tungstenite too.
//!
//! **Across nodes**: `--publisher-url` puts the publishers on one node while receivers connect
//! to the `--url`s (round-robin), so the latency includes the hop between nodes. With
//! Switchboard on the in-memory store every node has its own rooms, so receivers on another
//! node than the publishers create the room there first (`ROOM_EXISTS` is fine).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use memchr::memmem;
use serde_json::json;
use switchboard_protocol::RoomId;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::Report;
use crate::api::ApiConn;
use crate::conn::{self, ACK_PREFIX, Dialect, Endpoint, Target, TargetArgs, Transport, Ws};
use crate::procfs::{CpuMeter, GroupCpuMeter, MachineMeter, Proc, total_rss_kib};
use crate::raw::{Frame, RawWs};
use crate::socketio::{self, Packet};
use crate::sse::SseStream;

const MESSAGE_NEW_PREFIX: &[u8] = br#"{"type":"message:new""#;
const MESSAGE_NEW_TYPE: &[u8] = br#""type":"message:new""#;
const CONTENT_KEY: &[u8] = br#""content":""#;
const CREATED_AT_KEY: &[u8] = br#""createdAt":"#;
/// Share of a core used by other processes during the window above which a run is flagged
/// noisy.
const NOISY_SHARE: f64 = 0.05;
/// Request id of a publisher's first `message:send`; setup requests use smaller ones.
const FIRST_SEND_ID: u64 = 10;
/// Largest latency the histogram holds, in microseconds; larger ones are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

static MESSAGE_NEW_FINDER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(MESSAGE_NEW_TYPE));
static CONTENT_FINDER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(CONTENT_KEY));
// Built once: building a searcher costs more than a search, and this runs per delivery.
static CREATED_AT_FINDER: LazyLock<memmem::FinderRev<'static>> =
    LazyLock::new(|| memmem::FinderRev::new(CREATED_AT_KEY));

#[derive(Debug, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Receiving connections, spread evenly over the rooms.
    #[arg(long, default_value_t = 1_000)]
    conns: usize,
    /// Rooms, named bench-0, bench-1, ...
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Messages per second sent by all publishers together.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Publishing connections (each also a member of its rooms); one per room by default.
    #[arg(long)]
    publishers: Option<usize>,
    /// Bytes of message content: the timestamp, padded.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(20..=4096))]
    msg_bytes: u64,
    /// Seconds receivers keep counting after the last send.
    #[arg(long, default_value_t = 2)]
    drain_secs: u64,
    /// Seconds between the end of setup and the first send, so join notifications are drained.
    #[arg(long, default_value_t = 1)]
    settle_secs: u64,
    /// Time allowed to connect and join everything.
    #[arg(long, default_value_t = 180)]
    setup_timeout_secs: u64,
    /// Receiver read buffer: how many bytes one read may drain.
    #[arg(long, default_value_t = 2 * 1024)]
    read_buffer_bytes: usize,
    /// Connect the publishers to this URL (e.g. node A of a cluster) instead of the first
    /// `--url`; receivers still go to the `--url`s.
    #[arg(long)]
    publisher_url: Option<String>,
    /// How receivers listen: WebSocket sessions, or `/sse` streams (Switchboard only).
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    receive: Transport,
    /// How publishers send: `message:send` on a WebSocket, or `POST
    /// /api/v1/rooms/{room}/messages` on a keep-alive HTTP connection (Switchboard only; the
    /// publisher's node must serve the API on its main listener).
    #[arg(long, value_enum, default_value_t = Publish::Ws)]
    publish: Publish,
    /// Server API key, for `--publish api`.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

/// How publishers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Publish {
    Ws,
    Api,
}

impl Publish {
    fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Api => "api",
        }
    }
}

/// The schedule every task follows once setup is done.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// First scheduled send.
    start: Instant,
    /// No send is scheduled at or after this.
    stop_sending: Instant,
}

/// What every task shares (single thread: `Rc` and `RefCell`).
#[derive(Debug)]
struct Ctx {
    target: Target,
    /// Where publishers connect (`--publisher-url`, else the first `--url`).
    publishers_at: Option<Endpoint>,
    /// Receivers create their room before joining: they are on another node than the
    /// publishers, whose in-memory store may not know the room.
    receivers_create: bool,
    rooms: Vec<RoomId>,
    /// Timestamps count from here.
    epoch: Instant,
    /// This run's part of every idempotency key: a later run against the same server sends new
    /// messages, not retries of this one's.
    run: String,
    /// The wall clock at `epoch`, in Unix milliseconds.
    wall_epoch_ms: u64,
    receive: Transport,
    publish: Publish,
    api_key: Option<String>,
    /// Bounds connections in setup at any one time.
    connecting: Semaphore,
    setup_timeout: Duration,
    read_buffer_bytes: usize,
    msg_bytes: usize,
    plan: watch::Receiver<Option<Plan>>,
    /// Cancelled at the end of the drain: every task reports and ends.
    stop: CancellationToken,
    stats: RefCell<Stats>,
}

#[derive(Debug)]
struct Stats {
    /// Send-to-receive latency, microseconds.
    latency: Histogram<u64>,
    /// Send-to-ack latency at the publishers, microseconds.
    ack_latency: Histogram<u64>,
    /// From the gateway's `createdAt` stamp (wall clock, milliseconds) to the receiver, in
    /// milliseconds: how much of the latency comes after the message was stored.
    after_store_ms: Histogram<u64>,
    received: u64,
    receivers_ready: Vec<u64>,
    sent: Vec<u64>,
    acks_ok: u64,
    ack_errors: BTreeMap<String, u64>,
    /// Connections that ended before the run did, by reason.
    ended_early: BTreeMap<String, u64>,
    setup_failed: u64,
    first_setup_error: Option<String>,
}

impl Stats {
    fn new(rooms: usize) -> anyhow::Result<Self> {
        Ok(Self {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
            ack_latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
            after_store_ms: Histogram::new_with_bounds(1, MAX_LATENCY_US / 1000, 2)?,
            received: 0,
            receivers_ready: vec![0; rooms],
            sent: vec![0; rooms],
            acks_ok: 0,
            ack_errors: BTreeMap::new(),
            ended_early: BTreeMap::new(),
            setup_failed: 0,
            first_setup_error: None,
        })
    }

    /// Records the latency of one delivery sent at `sent_ns` and received at `now_ns`, and its
    /// stored-to-received time when `frame` has a `createdAt`; the wall clock is derived from
    /// the monotonic one (`wall_epoch_ms` is the wall clock at the epoch).
    fn record_delivery(&mut self, wall_epoch_ms: u64, now_ns: u64, sent_ns: u64, frame: &[u8]) {
        let latency_us = now_ns.saturating_sub(sent_ns) / 1_000;
        self.latency.saturating_record(latency_us.max(1));
        if let Some(stored) = created_at(frame) {
            let after = (wall_epoch_ms + now_ns / 1_000_000).saturating_sub(stored);
            self.after_store_ms.saturating_record(after.max(1));
        }
    }
}

/// The timestamp of a `message:new` frame, or `None` for any other frame.
pub(crate) fn delivery_timestamp(frame: &[u8]) -> Option<u64> {
    if !frame.starts_with(MESSAGE_NEW_PREFIX) && MESSAGE_NEW_FINDER.find(frame).is_none() {
        return None;
    }
    leading_number(&frame[CONTENT_FINDER.find(frame)? + CONTENT_KEY.len()..])
}

/// The decimal number `bytes` start with, if any (and if it fits a `u64`).
pub(crate) fn leading_number(bytes: &[u8]) -> Option<u64> {
    let len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 {
        return None;
    }
    bytes[..len].iter().try_fold(0u64, |acc, &b| {
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The `createdAt` of a `message:new` frame: the last field, so searched from the end.
pub(crate) fn created_at(frame: &[u8]) -> Option<u64> {
    leading_number(&frame[CREATED_AT_FINDER.rfind(frame)? + CREATED_AT_KEY.len()..])
}

fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Message content: the timestamp, padded with dots to `bytes`.
fn content(timestamp: u64, bytes: usize) -> String {
    format!("{timestamp:.<bytes$}")
}

/// The `id` of an ack, by byte search.
pub(crate) fn ack_id(frame: &[u8]) -> Option<u64> {
    const ID_KEY: &[u8] = br#""id":"#;
    leading_number(&frame[memmem::find(frame, ID_KEY)? + ID_KEY.len()..])
}

/// An ack's outcome, by byte search: `Ok` or the error code.
pub(crate) fn ack_outcome(frame: &[u8]) -> Result<(), String> {
    const CODE_KEY: &[u8] = br#""code":""#;
    match memmem::find(frame, CODE_KEY) {
        None => Ok(()),
        Some(at) => {
            let rest = &frame[at + CODE_KEY.len()..];
            let end = memchr::memchr(b'"', rest).unwrap_or(rest.len());
            Err(String::from_utf8_lossy(&rest[..end]).into_owned())
        }
    }
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records the latency of one delivery sent at `sent_ns`, and its stored-to-received time
    /// when `frame` has a `createdAt`.
    fn record_delivery(&self, sent_ns: u64, frame: &[u8]) {
        // One clock read per delivery: the wall clock is derived from the monotonic one.
        let now_ns = self.now_ns();
        self.stats
            .borrow_mut()
            .record_delivery(self.wall_epoch_ms, now_ns, sent_ns, frame);
    }

    /// Records every delivery among the complete frames `ws` has buffered, all received now
    /// (one clock read); `Some` reason when the connection ends.
    fn parse_deliveries(&self, ws: &mut RawWs, received: &mut u64) -> Option<String> {
        let now_ns = self.now_ns();
        let mut stats = self.stats.borrow_mut();
        loop {
            match ws.next_frame() {
                Ok(Some(Frame::Text(text))) => {
                    if let Some(sent_ns) = delivery_timestamp(text) {
                        *received += 1;
                        stats.record_delivery(self.wall_epoch_ms, now_ns, sent_ns, text);
                    }
                }
                Ok(Some(Frame::Close(Some(code)))) => return Some(format!("close {code}")),
                Ok(Some(Frame::Close(None))) => return Some("close".to_owned()),
                Ok(Some(Frame::Ping | Frame::Pong | Frame::Binary)) => {}
                Ok(None) => return None,
                Err(error) => return Some(format!("error: {error}")),
            }
        }
    }

    /// Counts a receiver's setup, failed or done, and tells the run it is over: the connection
    /// when it is ready to receive.
    async fn receiver_ready<W>(
        &self,
        set_up: anyhow::Result<W>,
        room: usize,
        ready: mpsc::Sender<()>,
    ) -> Option<W> {
        let ws = match set_up {
            Ok(ws) => {
                self.stats.borrow_mut().receivers_ready[room] += 1;
                Some(ws)
            }
            Err(error) => {
                self.setup_failed(&error);
                None
            }
        };
        let _ = ready.send(()).await;
        ws
    }

    /// Counts a publisher's failed setup and tells the run its setup is over: the connection
    /// when it is ready to publish.
    async fn publisher_ready<W>(
        &self,
        set_up: anyhow::Result<W>,
        ready: mpsc::Sender<()>,
    ) -> Option<W> {
        let conn = set_up.map_err(|error| self.setup_failed(&error)).ok();
        let _ = ready.send(()).await;
        conn
    }

    fn setup_failed(&self, error: &anyhow::Error) {
        let mut stats = self.stats.borrow_mut();
        stats.setup_failed += 1;
        stats
            .first_setup_error
            .get_or_insert_with(|| format!("{error:#}"));
    }

    fn ended_early(&self, reason: String) {
        *self
            .stats
            .borrow_mut()
            .ended_early
            .entry(reason)
            .or_default() += 1;
    }

    /// Connects (to `endpoint`, else round-robin over `--url`) and joins under the concurrency
    /// bound and the setup deadline.
    async fn set_up(
        &self,
        endpoint: Option<&Endpoint>,
        index: usize,
        user: &str,
        config: WebSocketConfig,
        rooms: &[usize],
        create: bool,
    ) -> anyhow::Result<Ws> {
        self.bounded(async {
            let endpoint = endpoint.unwrap_or_else(|| self.target.endpoint(index));
            let mut ws = self.target.open_at(endpoint, index, user, config).await?;
            for (n, &room) in rooms.iter().enumerate() {
                let room = &self.rooms[room];
                match self.target.dialect {
                    Dialect::Switchboard if create => conn::create_and_join(&mut ws, room).await?,
                    Dialect::Switchboard => conn::join(&mut ws, room).await?,
                    // Socket.IO rooms exist once joined; ack ids stay below FIRST_SEND_ID
                    // for one room per publisher, and are only matched while joining anyway.
                    Dialect::SocketIo => socketio::join(&mut ws, room, 1 + n as u64).await?,
                }
            }
            anyhow::Ok(ws)
        })
        .await
    }

    /// Connects a Switchboard receiver with the raw client (round-robin over `--url`) and joins
    /// `room` under the concurrency bound and the setup deadline.
    async fn set_up_raw(&self, index: usize, user: &str, room: usize) -> anyhow::Result<RawWs> {
        self.bounded(async {
            let mut ws = self
                .target
                .open_raw(index, user, self.read_buffer_bytes)
                .await?;
            let room = &self.rooms[room];
            if self.receivers_create {
                conn::create_and_join(&mut ws, room).await?;
            } else {
                conn::join(&mut ws, room).await?;
            }
            anyhow::Ok(ws)
        })
        .await
    }

    /// Runs setup `steps` under the concurrency bound and the setup deadline.
    async fn bounded<T>(
        &self,
        steps: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let _permit = self.connecting.acquire().await?;
        tokio::time::timeout(self.setup_timeout, steps)
            .await
            .context("setup timed out")?
    }
}

/// Why a connection's stream ended, or `None` if it goes on.
pub(crate) fn end_reason(
    frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Result<Message, String> {
    match frame {
        Some(Ok(Message::Close(Some(close)))) => Err(format!("close {}", u16::from(close.code))),
        Some(Ok(Message::Close(None))) => Err("close".to_owned()),
        Some(Ok(message)) => Ok(message),
        Some(Err(error)) => Err(format!("error: {error}")),
        None => Err("eof".to_owned()),
    }
}

async fn receiver(ctx: Rc<Ctx>, index: usize, room: usize, ready: mpsc::Sender<()>) {
    if ctx.receive == Transport::Sse {
        return sse_receiver(ctx, index, room, ready).await;
    }
    if ctx.target.dialect == Dialect::Switchboard {
        return raw_receiver(ctx, index, room, ready).await;
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(ctx.read_buffer_bytes)
        .write_buffer_size(0);
    let user = format!("recv-{index}");
    let create = ctx.receivers_create;
    let set_up = ctx
        .set_up(None, index, &user, config, &[room], create)
        .await;
    let Some(mut ws) = ctx.receiver_ready(set_up, room, ready).await else {
        return;
    };

    let stopped = ctx.stop.cancelled();
    tokio::pin!(stopped);
    let socketio = ctx.target.dialect == Dialect::SocketIo;
    let mut received = 0u64;
    loop {
        tokio::select! {
            biased;
            frame = ws.next() => match end_reason(frame) {
                Ok(Message::Text(text)) if socketio => {
                    let frame = text.as_bytes();
                    if let Some(sent_ns) = socketio::delivery_timestamp(frame) {
                        received += 1;
                        ctx.record_delivery(sent_ns, frame);
                    } else if let Err(reason) = socketio_control(&mut ws, frame).await {
                        ctx.ended_early(reason);
                        break;
                    }
                }
                Ok(Message::Text(text)) => {
                    if let Some(sent_ns) = delivery_timestamp(text.as_bytes()) {
                        received += 1;
                        ctx.record_delivery(sent_ns, text.as_bytes());
                    }
                }
                // The pong tungstenite queued goes out with a flush; nothing else is written.
                Ok(Message::Ping(_)) => {
                    if ws.flush().await.is_err() {
                        ctx.ended_early("error: pong".to_owned());
                        break;
                    }
                }
                Ok(_) => {}
                Err(reason) => {
                    ctx.ended_early(reason);
                    break;
                }
            },
            () = &mut stopped => break,
        }
    }
    ctx.stats.borrow_mut().received += received;
}

/// A receiver's connection once it is set up: reads, and the deliveries among what it read.
trait Listener {
    /// Reads once: `Ok(0)` at the end of the stream.
    async fn fill(&mut self) -> Result<usize, String>;
    /// Records every delivery read so far, all received now (one clock read); `Some` reason
    /// when the connection ends.
    fn deliveries(&mut self, ctx: &Ctx, received: &mut u64) -> Option<String>;
    /// Writes what a read calls for (pongs).
    async fn answer(&mut self) -> Result<(), String>;
}

impl Listener for RawWs {
    async fn fill(&mut self) -> Result<usize, String> {
        RawWs::fill(self)
            .await
            .map_err(|error| format!("error: {error}"))
    }

    fn deliveries(&mut self, ctx: &Ctx, received: &mut u64) -> Option<String> {
        ctx.parse_deliveries(self, received)
    }

    async fn answer(&mut self) -> Result<(), String> {
        if self.has_output() {
            self.flush().await.map_err(|_| "error: pong".to_owned())?;
        }
        Ok(())
    }
}

impl Listener for SseStream {
    async fn fill(&mut self) -> Result<usize, String> {
        SseStream::fill(self)
            .await
            .map_err(|error| format!("error: {error}"))
    }

    fn deliveries(&mut self, ctx: &Ctx, received: &mut u64) -> Option<String> {
        let now_ns = ctx.now_ns();
        let mut stats = ctx.stats.borrow_mut();
        while let Some(event) = self.next_event() {
            if event.name == b"message:new" {
                if let Some(sent_ns) = delivery_timestamp(event.data) {
                    *received += 1;
                    stats.record_delivery(ctx.wall_epoch_ms, now_ns, sent_ns, event.data);
                }
            } else if event.name == b"close" || event.name == b"error" {
                return Some(format!("sse {}", String::from_utf8_lossy(event.data)));
            }
        }
        None
    }

    async fn answer(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Counts a set-up receiver's deliveries until the run stops or the connection ends.
async fn listen(ctx: &Ctx, conn: &mut impl Listener) {
    let stopped = ctx.stop.cancelled();
    tokio::pin!(stopped);
    let mut received = 0u64;
    let ended = loop {
        tokio::select! {
            biased;
            read = conn.fill() => match read {
                Ok(0) => break Some("eof".to_owned()),
                Ok(_) => {}
                Err(reason) => break Some(reason),
            },
            () = &mut stopped => break None,
        }
        if let Some(reason) = conn.deliveries(ctx, &mut received) {
            break Some(reason);
        }
        if let Err(reason) = conn.answer().await {
            break Some(reason);
        }
    };
    if let Some(reason) = ended {
        ctx.ended_early(reason);
    }
    ctx.stats.borrow_mut().received += received;
}

/// A Switchboard receiver on the raw client: per `read`, one clock read and every complete
/// frame parsed in place.
async fn raw_receiver(ctx: Rc<Ctx>, index: usize, room: usize, ready: mpsc::Sender<()>) {
    let user = format!("recv-{index}");
    let set_up = ctx.set_up_raw(index, &user, room).await;
    if let Some(mut ws) = ctx.receiver_ready(set_up, room, ready).await {
        listen(&ctx, &mut ws).await;
    }
}

/// A receiver on an `/sse` stream of its room: per `read`, one clock read and every complete
/// event looked at in place.
async fn sse_receiver(ctx: Rc<Ctx>, index: usize, room: usize, ready: mpsc::Sender<()>) {
    let user = format!("recv-{index}");
    let set_up = ctx
        .bounded(async {
            let endpoint = ctx.target.endpoint(index);
            let stream = ctx.target.connect(endpoint, index).await?;
            let path = format!("/sse?rooms={}", ctx.rooms[room]);
            let token = ctx.target.token(&user)?;
            let mut sse = SseStream::open(
                stream,
                endpoint.authority(),
                &path,
                &token,
                ctx.read_buffer_bytes,
            )
            .await?;
            sse.expect(b"joined").await?;
            anyhow::Ok(sse)
        })
        .await;
    if let Some(mut sse) = ctx.receiver_ready(set_up, room, ready).await {
        listen(&ctx, &mut sse).await;
    }
}

async fn publisher(
    ctx: Rc<Ctx>,
    index: usize,
    rooms: Vec<usize>,
    rate: f64,
    phase: f64,
    ready: mpsc::Sender<()>,
) {
    if ctx.publish == Publish::Api {
        return api_publisher(ctx, index, rooms, rate, phase, ready).await;
    }
    let user = format!("pub-{index}");
    let set_up = ctx
        .set_up(
            ctx.publishers_at.as_ref(),
            index,
            &user,
            WebSocketConfig::default(),
            &rooms,
            true,
        )
        .await;
    let Some(mut ws) = ctx.publisher_ready(set_up, ready).await else {
        return;
    };

    // Wait for the schedule, reading (and answering pings) meanwhile: a server drops a client
    // that stays silent past its heartbeat (Socket.IO: pingInterval + pingTimeout, 45 s; the
    // gateway: 4004 after its heartbeat timeout), and setting up 10,000 receivers on a gateway
    // with PostgreSQL takes over a minute.
    let mut plan_rx = ctx.plan.clone();
    let plan = loop {
        tokio::select! {
            biased;
            plan = plan_rx.wait_for(Option::is_some) => match plan {
                Ok(plan) => break plan.unwrap_or_else(|| unreachable!("waited for Some")),
                Err(_) => return,
            },
            frame = ws.next() => {
                // No send yet, so no ack to time.
                if let Err(reason) = on_publisher_frame(&ctx, &mut ws, frame, &|_| Instant::now()).await {
                    ctx.ended_early(format!("publisher {reason}"));
                    return;
                }
            }
        }
    };
    let interval = 1.0 / rate;
    let due = |k: u64| plan.start + Duration::from_secs_f64((k as f64 + phase) * interval);
    let mut k = 0u64;
    let mut ended = None;
    // Send on schedule, reading acks in between.
    while due(k) < plan.stop_sending && ended.is_none() {
        tokio::select! {
            biased;
            frame = ws.next() => ended = on_publisher_frame(&ctx, &mut ws, frame, &due).await.err(),
            () = tokio::time::sleep_until(due(k)) => {
                let now = Instant::now();
                // Everything already due goes out in one flush.
                while due(k) <= now && due(k) < plan.stop_sending {
                    let at = due(k);
                    let room = rooms[(k as usize) % rooms.len()];
                    let sent_ns = u64::try_from((at - ctx.epoch).as_nanos()).unwrap_or(u64::MAX);
                    let frame = match ctx.target.dialect {
                        Dialect::Switchboard => format!(
                            r#"{{"type":"message:send","id":{id},"roomId":"{room_id}","content":"{content}","clientMsgId":"{user}-{run}-{k}"}}"#,
                            id = k + FIRST_SEND_ID,
                            room_id = ctx.rooms[room],
                            content = content(sent_ns, ctx.msg_bytes),
                            run = ctx.run,
                        ),
                        Dialect::SocketIo => socketio::message_send(
                            k + FIRST_SEND_ID,
                            &ctx.rooms[room],
                            &content(sent_ns, ctx.msg_bytes),
                            &format!("{user}-{}-{k}", ctx.run),
                        ),
                    };
                    if let Err(error) = ws.feed(Message::text(frame)).await {
                        ended = Some(format!("error: {error}"));
                        break;
                    }
                    ctx.stats.borrow_mut().sent[room] += 1;
                    k += 1;
                }
                if ended.is_none() && let Err(error) = ws.flush().await {
                    ended = Some(format!("error: {error}"));
                }
            }
        }
    }
    // Then keep reading acks until the end of the drain.
    let stopped = ctx.stop.cancelled();
    tokio::pin!(stopped);
    while ended.is_none() {
        tokio::select! {
            biased;
            frame = ws.next() => ended = on_publisher_frame(&ctx, &mut ws, frame, &due).await.err(),
            () = &mut stopped => break,
        }
    }
    if let Some(reason) = ended {
        ctx.ended_early(format!("publisher {reason}"));
    }
}

/// A publisher on the server API: creates its rooms with `PUT /api/v1/rooms/{room}`, then
/// publishes on schedule, one request at a time on one keep-alive connection; a send that falls
/// behind its schedule goes out as soon as the previous answer is in (its latency still counts
/// from the schedule). The answer is the ack: 201 with the message's seq.
async fn api_publisher(
    ctx: Rc<Ctx>,
    index: usize,
    rooms: Vec<usize>,
    rate: f64,
    phase: f64,
    ready: mpsc::Sender<()>,
) {
    let user = format!("pub-{index}");
    let set_up = ctx
        .bounded(async {
            let key = ctx
                .api_key
                .as_deref()
                .context("--publish api needs --api-key")?;
            let endpoint = ctx
                .publishers_at
                .as_ref()
                .unwrap_or_else(|| ctx.target.first());
            let stream = ctx.target.connect(endpoint, index).await?;
            let mut api = ApiConn::new(stream, endpoint.authority(), key);
            for &room in &rooms {
                let path = format!("/api/v1/rooms/{}", ctx.rooms[room]);
                let answer = api.call("PUT", &path, br#"{"kind":"public"}"#).await?;
                ensure!(
                    answer.status == 200 || answer.status == 201,
                    "PUT {path}: HTTP {}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                );
            }
            anyhow::Ok(api)
        })
        .await;
    let Some(mut api) = ctx.publisher_ready(set_up, ready).await else {
        return;
    };

    let mut plan_rx = ctx.plan.clone();
    let Ok(Some(plan)) = plan_rx.wait_for(Option::is_some).await.map(|plan| *plan) else {
        return;
    };
    let interval = 1.0 / rate;
    let due = |k: u64| plan.start + Duration::from_secs_f64((k as f64 + phase) * interval);
    let mut k = 0u64;
    while due(k) < plan.stop_sending {
        tokio::select! {
            biased;
            () = ctx.stop.cancelled() => break,
            () = tokio::time::sleep_until(due(k)) => {}
        }
        let room = rooms[(k as usize) % rooms.len()];
        let sent_ns = u64::try_from((due(k) - ctx.epoch).as_nanos()).unwrap_or(u64::MAX);
        let body = format!(
            r#"{{"content":"{}","idempotencyKey":"{user}-{run}-{k}"}}"#,
            content(sent_ns, ctx.msg_bytes),
            run = ctx.run
        );
        let path = format!("/api/v1/rooms/{}/messages", ctx.rooms[room]);
        ctx.stats.borrow_mut().sent[room] += 1;
        let answer = api.call("POST", &path, body.as_bytes()).await;
        let mut stats = ctx.stats.borrow_mut();
        match answer {
            Ok(answer) if answer.status == 201 => {
                stats.acks_ok += 1;
                let latency_us = u64::try_from(due(k).elapsed().as_micros()).unwrap_or(u64::MAX);
                stats.ack_latency.saturating_record(latency_us.max(1));
            }
            Ok(answer) => {
                let code = ack_outcome(&answer.body).err().unwrap_or_default();
                *stats
                    .ack_errors
                    .entry(format!("HTTP {} {code}", answer.status))
                    .or_default() += 1;
            }
            Err(error) => {
                drop(stats);
                ctx.ended_early(format!("publisher error: {error}"));
                return;
            }
        }
        k += 1;
    }
}

/// Counts an ack and times it from the send's schedule (`due` maps a send number to it); other
/// frames (join notices, other publishers' messages) are skipped, Socket.IO pings answered.
async fn on_publisher_frame(
    ctx: &Ctx,
    ws: &mut Ws,
    frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    due: &dyn Fn(u64) -> Instant,
) -> Result<(), String> {
    let Message::Text(text) = end_reason(frame)? else {
        return Ok(());
    };
    let frame = text.as_bytes();
    let id = match ctx.target.dialect {
        Dialect::Switchboard if frame.starts_with(ACK_PREFIX.as_bytes()) => ack_id(frame),
        Dialect::Switchboard => return Ok(()),
        Dialect::SocketIo => match socketio::classify(frame) {
            Packet::Ack(id) => Some(id),
            _ => return socketio_control(ws, frame).await,
        },
    };
    let mut stats = ctx.stats.borrow_mut();
    match ack_outcome(frame) {
        Ok(()) => stats.acks_ok += 1,
        Err(code) => *stats.ack_errors.entry(code).or_default() += 1,
    }
    if let Some(k) = id.and_then(|id| id.checked_sub(FIRST_SEND_ID)) {
        let latency_us = u64::try_from(due(k).elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.ack_latency.saturating_record(latency_us.max(1));
    }
    Ok(())
}

/// A Socket.IO frame that is neither a delivery nor an ack: answers a ping, ends on a close,
/// skips the rest.
async fn socketio_control(ws: &mut Ws, frame: &[u8]) -> Result<(), String> {
    match socketio::classify(frame) {
        Packet::Ping => ws
            .send(Message::text(socketio::PONG))
            .await
            .map_err(|error| format!("error: pong: {error}")),
        Packet::Closed => Err("socket.io disconnect".to_owned()),
        Packet::Ack(_) | Packet::Other => Ok(()),
    }
}

/// The rooms publisher `p` of `publishers` sends to, round-robin.
fn rooms_of_publisher(p: usize, publishers: usize, rooms: usize) -> Vec<usize> {
    if publishers >= rooms {
        vec![p % rooms]
    } else {
        (p..rooms).step_by(publishers).collect()
    }
}

/// Waits for `count` tasks to report the end of their setup.
async fn await_setup(
    ready: &mut mpsc::Receiver<()>,
    count: usize,
    deadline: Instant,
    what: &str,
) -> anyhow::Result<()> {
    for done in 0..count {
        match tokio::time::timeout_at(deadline, ready.recv()).await {
            Ok(Some(())) => {}
            Ok(None) => bail!("{what}: setup tasks vanished after {done} of {count}"),
            Err(_) => bail!("{what}: setup not done in time ({done} of {count} ready)"),
        }
    }
    Ok(())
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<Report> {
    ensure!(args.rooms >= 1, "--rooms must be at least 1");
    ensure!(args.conns >= 1, "--conns must be at least 1");
    ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be positive"
    );
    ensure!(args.secs >= 1, "--secs must be at least 1");
    ensure!(
        args.target.dialect == Dialect::Switchboard
            || (args.receive == Transport::Ws && args.publish == Publish::Ws),
        "--receive sse and --publish api are Switchboard's"
    );
    let publishers = args.publishers.unwrap_or(args.rooms);
    ensure!(publishers >= 1, "--publishers must be at least 1");
    let rooms = (0..args.rooms)
        .map(|r| RoomId::parse(format!("bench-{r}")))
        .collect::<Result<Vec<_>, _>>()?;
    let target = Target::new(&args.target).await?;
    let publishers_at = match &args.publisher_url {
        Some(url) => Some(target.resolve(url).await?),
        None => None,
    };
    let receivers_create = publishers_at
        .as_ref()
        .is_some_and(|at| args.target.url.iter().any(|url| url != at.url()));
    let gateway = target.gateway.clone();
    let backends = target.backends.clone();
    let (plan_tx, plan_rx) = watch::channel(None);
    let setup_timeout = Duration::from_secs(args.setup_timeout_secs);
    let ctx = Rc::new(Ctx {
        target,
        publishers_at,
        receivers_create,
        rooms,
        receive: args.receive,
        publish: args.publish,
        api_key: args.api_key.clone(),
        epoch: Instant::now(),
        run: format!("{:x}", wall_millis()),
        wall_epoch_ms: wall_millis(),
        connecting: Semaphore::new(args.target.concurrency.max(1)),
        setup_timeout,
        read_buffer_bytes: args.read_buffer_bytes,
        msg_bytes: usize::try_from(args.msg_bytes)?,
        plan: plan_rx,
        stop: CancellationToken::new(),
        stats: RefCell::new(Stats::new(args.rooms)?),
    });
    let setup_started = Instant::now();
    let setup_deadline = setup_started + setup_timeout;
    let mut tasks = Vec::with_capacity(args.conns + publishers);

    // Publishers first: they create the rooms.
    let (ready_tx, mut ready_rx) = mpsc::channel(publishers);
    for p in 0..publishers {
        tasks.push(tokio::task::spawn_local(publisher(
            Rc::clone(&ctx),
            p,
            rooms_of_publisher(p, publishers, args.rooms),
            args.rate / publishers as f64,
            p as f64 / publishers as f64,
            ready_tx.clone(),
        )));
    }
    drop(ready_tx);
    await_setup(&mut ready_rx, publishers, setup_deadline, "publishers").await?;
    if ctx.stats.borrow().setup_failed == publishers as u64 {
        bail!(
            "no publisher could start: {}",
            ctx.stats
                .borrow()
                .first_setup_error
                .as_deref()
                .unwrap_or("")
        );
    }

    let (ready_tx, mut ready_rx) = mpsc::channel(args.conns);
    for i in 0..args.conns {
        tasks.push(tokio::task::spawn_local(receiver(
            Rc::clone(&ctx),
            i,
            i % args.rooms,
            ready_tx.clone(),
        )));
    }
    drop(ready_tx);
    await_setup(&mut ready_rx, args.conns, setup_deadline, "receivers").await?;
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let receivers_ready: u64 = ctx.stats.borrow().receivers_ready.iter().sum();
    if receivers_ready == 0 {
        bail!(
            "no receiver could join: {}",
            ctx.stats
                .borrow()
                .first_setup_error
                .as_deref()
                .unwrap_or("")
        );
    }
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;

    // The measured window: from the first scheduled send to the end of the drain.
    let gateway_rss_before = total_rss_kib(&gateway)?;
    let gateway_cpu = GroupCpuMeter::start(&gateway)?;
    let backend_cpu = GroupCpuMeter::start_tree(&backends)?;
    let loadgen_cpu = CpuMeter::start(Proc::Myself)?;
    let machine = MachineMeter::start()?;
    let start = Instant::now() + Duration::from_millis(20);
    let stop_sending = start + Duration::from_secs(args.secs);
    let deadline = stop_sending + Duration::from_secs(args.drain_secs);
    plan_tx.send_replace(Some(Plan {
        start,
        stop_sending,
    }));
    tokio::time::sleep_until(deadline).await;
    let window_secs = (Instant::now() - start).as_secs_f64();
    let gateway_cpu_secs = gateway_cpu.as_ref().map(GroupCpuMeter::used).transpose()?;
    let backend_cpu_secs = backend_cpu.as_ref().map(GroupCpuMeter::used).transpose()?;
    let loadgen_cpu_secs = loadgen_cpu.used()?;
    let (cpus, busy_secs) = machine.used()?;
    let gateway_rss_after = total_rss_kib(&gateway)?;
    ctx.stop.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }

    let stats = ctx.stats.borrow();
    let sent: u64 = stats.sent.iter().sum();
    let expected: u64 = stats
        .sent
        .iter()
        .zip(&stats.receivers_ready)
        .map(|(sent, receivers)| sent * receivers)
        .sum();
    let received = stats.received;
    let loss = expected.saturating_sub(received);
    let loss_pct = if expected == 0 {
        0.0
    } else {
        100.0 * loss as f64 / expected as f64
    };
    let deliveries_per_sec = received as f64 / args.secs as f64;
    let ms = |q: f64| stats.latency.value_at_quantile(q) as f64 / 1_000.0;
    let (p50, p99, p999, max) = (
        ms(0.5),
        ms(0.99),
        ms(0.999),
        stats.latency.max() as f64 / 1e3,
    );
    let ack_ms = |q: f64| stats.ack_latency.value_at_quantile(q) as f64 / 1_000.0;
    let (ack_p50, ack_p99) = (ack_ms(0.5), ack_ms(0.99));
    let after_store = |q: f64| stats.after_store_ms.value_at_quantile(q);
    let (store_p50, store_p99) = (after_store(0.5), after_store(0.99));
    let us_per_delivery = gateway_cpu_secs
        .filter(|_| received > 0)
        .map(|cpu| cpu * 1e6 / received as f64);
    let loadgen_util = loadgen_cpu_secs / window_secs;
    let gateway_util = gateway_cpu_secs.map(|cpu| cpu / window_secs);
    let ack_errors: u64 = stats.ack_errors.values().sum();
    // CPU time of processes other than these two: on a shared machine, the competition.
    let others_cpu_secs = (busy_secs
        - gateway_cpu_secs.unwrap_or(0.0)
        - backend_cpu_secs.unwrap_or(0.0)
        - loadgen_cpu_secs)
        .max(0.0);
    let noisy = others_cpu_secs > NOISY_SHARE * window_secs;

    let json = json!({
        "scenario": "fanout",
        "dialect": ctx.target.dialect.name(),
        "nodes": gateway.len(),
        "publisher_url": ctx.publishers_at.as_ref().unwrap_or_else(|| ctx.target.first()).url(),
        "receiver_urls": args.target.url,
        "receivers": args.conns,
        "receivers_ready": receivers_ready,
        "rooms": args.rooms,
        "publishers": publishers,
        "rate": args.rate,
        "receive": args.receive.name(),
        "publish": args.publish.name(),
        "secs": args.secs,
        "drain_secs": args.drain_secs,
        "msg_bytes": args.msg_bytes,
        "setup_secs": setup_secs,
        "setup_failed": stats.setup_failed,
        "first_setup_error": stats.first_setup_error,
        "sent": sent,
        "acks_ok": stats.acks_ok,
        "ack_errors": stats.ack_errors,
        "ended_early": stats.ended_early,
        "expected": expected,
        "received": received,
        "loss": loss,
        "loss_pct": loss_pct,
        "deliveries_per_sec": deliveries_per_sec,
        "latency_ms": { "p50": p50, "p99": p99, "p999": p999, "max": max },
        "ack_latency_ms": { "p50": ack_p50, "p99": ack_p99 },
        "after_store_ms": { "p50": store_p50, "p99": store_p99 },
        "window_secs": window_secs,
        "gateway_cpu_secs": gateway_cpu_secs,
        "gateway_cpu_util": gateway_util,
        "gateway_us_per_delivery": us_per_delivery,
        "gateway_rss_kib": { "before": gateway_rss_before, "after": gateway_rss_after },
        "backend_cpu_secs": backend_cpu_secs,
        "loadgen_cpu_secs": loadgen_cpu_secs,
        "loadgen_cpu_util": loadgen_util,
        "cpus": cpus,
        "others_cpu_secs": others_cpu_secs,
        "noisy": noisy,
    });
    let mut lines = vec![
        format!(
            "fanout: {receivers_ready}/{} receivers in {} rooms, {publishers} publishers, {} msgs/s for {} s, {} B content; setup {setup_secs:.1} s",
            args.conns, args.rooms, args.rate, args.secs, args.msg_bytes
        ),
        format!(
            "server: {}, publishers ({}) on {}, receivers ({}) on {}",
            ctx.target.dialect.name(),
            args.publish.name(),
            ctx.publishers_at
                .as_ref()
                .unwrap_or_else(|| ctx.target.first())
                .url(),
            args.receive.name(),
            args.target.url.join(" ")
        ),
        format!(
            "sent {sent} (acked {}, ack errors {ack_errors} {:?}); deliveries expected {expected}, received {received}, loss {loss} ({loss_pct:.3}%)",
            stats.acks_ok, stats.ack_errors
        ),
        format!(
            "{deliveries_per_sec:.0} deliveries/s; latency ms p50 {p50:.2} p99 {p99:.2} p99.9 {p999:.2} max {max:.2}"
        ),
        format!(
            "publisher send-to-ack ms p50 {ack_p50:.2} p99 {ack_p99:.2}; stored-to-received ms (1 ms clock) p50 {store_p50} p99 {store_p99}"
        ),
    ];
    match (gateway_cpu_secs, us_per_delivery) {
        (Some(cpu), Some(us)) => lines.push(format!(
            "gateway CPU {cpu:.2} s in {window_secs:.1} s ({:.0}% of a core): {us:.3} us per delivery",
            100.0 * cpu / window_secs
        )),
        _ => lines.push("gateway CPU not measured (pass --gateway-pid)".to_owned()),
    }
    if let Some(cpu) = backend_cpu_secs {
        lines.push(format!(
            "backend CPU {cpu:.2} s ({:.0}% of a core)",
            100.0 * cpu / window_secs
        ));
    }
    lines.push(format!(
        "loadgen CPU {loadgen_cpu_secs:.2} s ({:.0}% of a core){}",
        100.0 * loadgen_util,
        if loadgen_util > 0.9 {
            ": the load generator is saturated"
        } else {
            ""
        }
    ));
    let shares: Vec<String> = cpus
        .iter()
        .enumerate()
        .map(|(n, c)| {
            format!(
                "cpu{n} tasks {:.0}% irq {:.0}% steal {:.0}%",
                100.0 * c.tasks,
                100.0 * c.irq,
                100.0 * c.steal
            )
        })
        .collect();
    lines.push(format!(
        "machine: {}; other processes (and kernel threads) used {others_cpu_secs:.2} CPU s{}",
        shares.join(", "),
        if noisy {
            ": NOISY run, the machine was shared"
        } else {
            ""
        }
    ));
    if stats.setup_failed > 0 {
        lines.push(format!(
            "{} connections failed setup; first: {}",
            stats.setup_failed,
            stats.first_setup_error.as_deref().unwrap_or("")
        ));
    }
    if !stats.ended_early.is_empty() {
        lines.push(format!(
            "connections that ended early: {:?}",
            stats.ended_early
        ));
    }
    Ok(Report { json, lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_new_frame_yields_its_content_timestamp() {
        let frame = format!(
            r#"{{"type":"message:new","message":{{"messageId":"m1","roomId":"bench-0","seq":3,"sender":{{"id":"pub-0","name":"pub-0"}},"kind":"text","content":"{}","clientMsgId":"pub-0-3","createdAt":1}}}}"#,
            content(1_234_567_890, 64)
        );
        assert_eq!(delivery_timestamp(frame.as_bytes()), Some(1_234_567_890));
        assert_eq!(created_at(frame.as_bytes()), Some(1));
    }

    #[test]
    fn numbers_that_do_not_fit_are_refused() {
        assert_eq!(leading_number(b"18446744073709551615..."), Some(u64::MAX));
        assert_eq!(leading_number(b"18446744073709551616"), None);
        assert_eq!(leading_number(b"x1"), None);
    }

    #[test]
    fn other_frames_are_not_deliveries() {
        let frame =
            br#"{"type":"user:joined:room","roomId":"bench-0","user":{"id":"a","name":"a"}}"#;
        assert_eq!(delivery_timestamp(frame), None);
    }

    #[test]
    fn content_is_padded_to_the_requested_size() {
        assert_eq!(content(42, 20).len(), 20);
        assert!(content(42, 20).starts_with("42."));
    }

    #[test]
    fn acks_are_matched_by_id() {
        assert_eq!(ack_id(br#"{"type":"ack","id":42,"result":{}}"#), Some(42));
    }

    #[test]
    fn ack_errors_are_read_by_code() {
        assert_eq!(ack_outcome(br#"{"type":"ack","id":3,"result":{}}"#), Ok(()));
        assert_eq!(
            ack_outcome(br#"{"type":"ack","id":3,"error":{"code":"RATE_LIMITED","message":"x"}}"#),
            Err("RATE_LIMITED".to_owned())
        );
    }

    #[test]
    fn publishers_cover_every_room() {
        assert_eq!(rooms_of_publisher(0, 1, 3), vec![0, 1, 2]);
        assert_eq!(rooms_of_publisher(1, 2, 5), vec![1, 3]);
        assert_eq!(rooms_of_publisher(4, 6, 3), vec![1]);
    }
}

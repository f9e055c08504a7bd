//! `loadgen storm`: a reconnect storm. When a node dies, its clients reconnect to another node
//! at once, and each resumes its rooms from the last `seq` it holds (docs/protocol.md, "Resume
//! after a reconnect").
//!
//! **Setup** (not measured): users `<prefix>0` … `<prefix>N-1`, `--members` to a room (rooms
//! `<prefix>0`, `<prefix>1`, …), connect `--concurrency` at a time and join their room, creating
//! it when it is new; the first member of each room then sends `--history` messages. Everyone
//! disconnects with a close handshake. Each user holds its room up to `--missed` messages before
//! its end: those are what it missed while its node was down. After `--settle-secs` (the gateway
//! ends the old sessions) the storm starts.
//!
//! **Storm**: every user connects at once (or `--storm-concurrency` at a time), with its bearer
//! token, waits for `session:ready` and sends `room:join {roomId, sinceSeq}`. It is *resumed*
//! when the ack says `recovered: true` and holds exactly the missed messages, in order from
//! `sinceSeq + 1`. Then it keeps reading (and answering pings) until every user is resumed or has
//! failed, and `--hold-secs` more, so a connection the gateway drops after its resume counts too.
//! Nothing is retried but what the kernel retries (a SYN dropped at a full accept queue goes again
//! after a second or more, see `net.ipv4.tcp_syn_linear_timeouts`): a failed connect, a session
//! that does not start or a wrong reply is reported by step and reason. Times are per client from its first connect attempt; the kernel's
//! listen-queue counters and the CPU times are read around the storm.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use switchboard_protocol::{AckResult, ClientFrame, Message, RoomId};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::Report;
use crate::conn::{self, Dialect, Requests, Target, TargetArgs, Ws};
use crate::fanout::end_reason;
use crate::procfs::{CpuMeter, GroupCpuMeter, ListenCounters, MachineMeter, Proc};

/// Request id of the first history `message:send` in setup; `room:create` and `room:join` use
/// smaller ones.
const FIRST_SEND_ID: u64 = 10;
/// Largest time the histograms hold, in microseconds; larger ones are clamped.
const MAX_TIME_US: u64 = 600_000_000;
/// Longest reason kept as a key of the failure counts.
const MAX_REASON_CHARS: usize = 120;

#[derive(Debug, Args)]
pub struct StormArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Users, one connection each, all reconnecting at once.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Users per room.
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// Messages each room holds (sent in setup by its first member).
    #[arg(long, default_value_t = 20)]
    history: u64,
    /// Of those, how many each user missed: it resumes from `sinceSeq` = the room's last seq
    /// minus this.
    #[arg(long, default_value_t = 5)]
    missed: u64,
    /// Connections opened at any one time in the storm; all at once when not given.
    /// (`--concurrency` bounds the setup.)
    #[arg(long)]
    storm_concurrency: Option<usize>,
    /// User `<prefix><i>` is a member of room `<prefix><i / members>`. Distinct prefixes keep
    /// runs against one database apart.
    #[arg(long, default_value = "storm-")]
    prefix: String,
    /// Seconds between the end of setup and the storm, for the gateway to end the old sessions.
    #[arg(long, default_value_t = 2)]
    settle_secs: u64,
    /// Seconds resumed connections stay open after the last client is done.
    #[arg(long, default_value_t = 2)]
    hold_secs: u64,
    /// Time allowed to set everything up.
    #[arg(long, default_value_t = 300)]
    setup_timeout_secs: u64,
    /// Time allowed for the storm: a client not resumed by then has failed.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

/// Where a client got to, named in its failure.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The TCP connection.
    Connect,
    /// The HTTP upgrade and the session's start, up to `session:ready`.
    Session,
    /// `room:join` with `sinceSeq` up to its ack.
    Resume,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Session => "session",
            Self::Resume => "resume",
        }
    }
}

#[derive(Debug)]
struct Stats {
    /// From a client's first connect attempt to its TCP connection, microseconds.
    connected: Histogram<u64>,
    /// From the same start to its `session:ready`.
    ready: Histogram<u64>,
    /// From the same start to its resume: the join ack with every missed message.
    resumed: Histogram<u64>,
    first_start: Option<Instant>,
    /// The last client's first connect attempt: how far "at once" spread.
    last_start: Option<Instant>,
    last_ready: Option<Instant>,
    last_resumed: Option<Instant>,
    ready_count: u64,
    resumed_count: u64,
    /// Clients that did not resume, by step.
    failed_at: BTreeMap<&'static str, u64>,
    /// The same, by step and reason.
    failures: BTreeMap<String, u64>,
    first_failure: Option<String>,
    /// Resumed connections that ended before the run did, by reason.
    ended_early: BTreeMap<String, u64>,
}

/// What every client shares (single thread: `Rc` and `RefCell`).
#[derive(Debug)]
struct Ctx {
    target: Target,
    prefix: String,
    members: usize,
    rooms: Vec<RoomId>,
    history: u64,
    missed: u64,
    /// Each room's last seq, from its sender's last ack in setup.
    last_seq: RefCell<Vec<u64>>,
    /// Bounds connections in setup at any one time.
    setting_up: Semaphore,
    setup_timeout: Duration,
    /// Bounds connections opening in the storm, when `--storm-concurrency` is given.
    storm_slots: Option<Semaphore>,
    /// Cancelled at the end of the hold: every client ends.
    stop: CancellationToken,
    stats: RefCell<Stats>,
}

/// Our side of a connection: the join reply is a few KiB, and 10,000 connections with the
/// default 128 KiB read buffer would be over a GiB.
fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// Whether `messages` are exactly the `missed` ones after `since`, in order.
fn replays(messages: &[Message], since: u64, missed: u64) -> bool {
    messages.len() as u64 == missed
        && messages
            .iter()
            .zip(since + 1..)
            .all(|(message, seq)| message.seq == seq)
}

/// Microseconds from `start` to `end`, at least 1 (the histograms start there).
fn micros(start: Instant, end: Instant) -> u64 {
    u64::try_from((end - start).as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Ctx {
    fn user(&self, index: usize) -> String {
        format!("{}{index}", self.prefix)
    }

    fn room_of(&self, index: usize) -> usize {
        index / self.members
    }

    /// Makes user `index` a member of its room (the room's first member also creates it and
    /// sends its history), then disconnects.
    async fn prepare(&self, index: usize) -> anyhow::Result<()> {
        let _permit = self.setting_up.acquire().await?;
        let room = self.room_of(index);
        let room_id = &self.rooms[room];
        let steps = async {
            let mut ws = self.target.open(index, &self.user(index), config()).await?;
            conn::create_and_join(&mut ws, room_id).await?;
            if index.is_multiple_of(self.members) {
                let mut last = 0;
                for k in 0..self.history {
                    let send = ClientFrame::MessageSend {
                        id: FIRST_SEND_ID + k,
                        room_id: room_id.clone(),
                        content: format!("history {k} of {room_id}"),
                        kind: Default::default(),
                        client_msg_id: format!("{room_id}-{k}"),
                    };
                    match ws.request(&send).await? {
                        Ok(AckResult::Sent { seq, .. }) => last = seq,
                        Ok(_) => bail!("message:send answered with another result"),
                        Err(error) => bail!("message:send: {} {}", error.code, error.message),
                    }
                }
                self.last_seq.borrow_mut()[room] = last;
            }
            // The gateway answers the close and closes the TCP connection first, so the
            // TIME_WAIT is on its side and our ports are free for the storm.
            ws.close(None).await?;
            while let Some(Ok(_)) = ws.next().await {}
            anyhow::Ok(())
        };
        tokio::time::timeout(self.setup_timeout, steps)
            .await
            .context("setup timed out")?
    }

    /// Sends `room:join` with the `sinceSeq` user `index` holds and checks the reply.
    async fn resume(&self, ws: &mut Ws, index: usize) -> anyhow::Result<()> {
        let room = self.room_of(index);
        let since = self.last_seq.borrow()[room].saturating_sub(self.missed);
        let join = ClientFrame::RoomJoin {
            id: 1,
            room_id: self.rooms[room].clone(),
            password: None,
            since_seq: Some(since),
        };
        match ws.request(&join).await? {
            Ok(AckResult::Room {
                recovered: true,
                messages,
                ..
            }) if replays(&messages, since, self.missed) => Ok(()),
            Ok(AckResult::Room {
                recovered: true, ..
            }) => bail!("recovered, but not exactly the missed messages"),
            Ok(AckResult::Room { .. }) => bail!("not recovered"),
            Ok(_) => bail!("room:join answered with another result"),
            Err(error) => bail!("room:join: {}", error.code),
        }
    }

    fn failed(&self, step: Step, error: &anyhow::Error) {
        let mut reason = format!("{}: {}", step.name(), error.root_cause());
        if let Some((cut, _)) = reason.char_indices().nth(MAX_REASON_CHARS) {
            reason.truncate(cut);
        }
        let mut stats = self.stats.borrow_mut();
        *stats.failed_at.entry(step.name()).or_default() += 1;
        *stats.failures.entry(reason).or_default() += 1;
        stats
            .first_failure
            .get_or_insert_with(|| format!("{}: {error:#}", step.name()));
    }

    fn ended_early(&self, reason: String) {
        *self
            .stats
            .borrow_mut()
            .ended_early
            .entry(reason)
            .or_default() += 1;
    }
}

/// One user reconnecting: reports when it is resumed or has failed, then stays until the end.
async fn client(ctx: Rc<Ctx>, index: usize, deadline: Instant, done: mpsc::Sender<()>) {
    let ws = reconnect(&ctx, index, deadline).await;
    let _ = done.send(()).await;
    drop(done);
    if let Some(ws) = ws {
        hold(&ctx, ws).await;
    }
}

/// Connects, authenticates and resumes, recording when each step was done or why it failed.
async fn reconnect(ctx: &Ctx, index: usize, deadline: Instant) -> Option<Ws> {
    let _permit = match &ctx.storm_slots {
        Some(slots) => Some(slots.acquire().await.ok()?),
        None => None,
    };
    let start = Instant::now();
    {
        let mut stats = ctx.stats.borrow_mut();
        let first = stats.first_start.get_or_insert(start);
        *first = (*first).min(start);
        stats.last_start = stats.last_start.max(Some(start));
    }
    let mut step = Step::Connect;
    let mut connected = None;
    let mut ready = None;
    let steps = async {
        let endpoint = ctx.target.endpoint(index);
        let stream = ctx.target.connect(endpoint, index).await?;
        connected = Some(Instant::now());
        step = Step::Session;
        let mut ws = ctx
            .target
            .upgrade(endpoint, stream, &ctx.user(index), config())
            .await?;
        ready = Some(Instant::now());
        step = Step::Resume;
        ctx.resume(&mut ws, index).await?;
        anyhow::Ok(ws)
    };
    let outcome = tokio::time::timeout_at(deadline, steps).await;
    let now = Instant::now();
    {
        let mut stats = ctx.stats.borrow_mut();
        if let Some(at) = connected {
            stats.connected.saturating_record(micros(start, at));
        }
        if let Some(at) = ready {
            stats.ready.saturating_record(micros(start, at));
            stats.ready_count += 1;
            stats.last_ready = stats.last_ready.max(Some(at));
        }
    }
    match outcome {
        Ok(Ok(ws)) => {
            let mut stats = ctx.stats.borrow_mut();
            stats.resumed.saturating_record(micros(start, now));
            stats.resumed_count += 1;
            stats.last_resumed = stats.last_resumed.max(Some(now));
            Some(ws)
        }
        Ok(Err(error)) => {
            ctx.failed(step, &error.context(format!("user {index}")));
            None
        }
        Err(_) => {
            ctx.failed(step, &anyhow::anyhow!("timed out (--timeout-secs)"));
            None
        }
    }
}

/// Keeps a resumed connection open and read until the run ends.
async fn hold(ctx: &Ctx, mut ws: Ws) {
    let stopped = ctx.stop.cancelled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            frame = ws.next() => match end_reason(frame) {
                // The pong tungstenite queued goes out with a flush.
                Ok(tungstenite::Message::Ping(_)) => {
                    if ws.flush().await.is_err() {
                        ctx.ended_early("error: pong".to_owned());
                        return;
                    }
                }
                Ok(_) => {}
                Err(reason) => {
                    ctx.ended_early(reason);
                    return;
                }
            },
            () = &mut stopped => return,
        }
    }
}

pub async fn run(args: StormArgs) -> anyhow::Result<Report> {
    ensure!(args.conns >= 1, "--conns must be at least 1");
    ensure!(args.members >= 1, "--members must be at least 1");
    ensure!(
        1 <= args.missed && args.missed <= args.history,
        "--missed must be between 1 and --history"
    );
    ensure!(
        args.target.dialect == Dialect::Switchboard,
        "storm resumes from the gateway's store: only --dialect switchboard"
    );
    ensure!(
        args.storm_concurrency != Some(0),
        "--storm-concurrency must be at least 1"
    );
    let room_count = args.conns.div_ceil(args.members);
    let rooms = (0..room_count)
        .map(|r| RoomId::parse(format!("{}{r}", args.prefix)))
        .collect::<Result<Vec<_>, _>>()?;
    let target = Target::new(&args.target).await?;
    let gateway = target.gateway.clone();
    let backends = target.backends.clone();
    let ctx = Rc::new(Ctx {
        target,
        prefix: args.prefix.clone(),
        members: args.members,
        rooms,
        history: args.history,
        missed: args.missed,
        last_seq: RefCell::new(vec![0; room_count]),
        setting_up: Semaphore::new(args.target.concurrency.max(1)),
        setup_timeout: Duration::from_secs(args.setup_timeout_secs),
        storm_slots: args.storm_concurrency.map(Semaphore::new),
        stop: CancellationToken::new(),
        stats: RefCell::new(Stats {
            connected: Histogram::new_with_bounds(1, MAX_TIME_US, 3)?,
            ready: Histogram::new_with_bounds(1, MAX_TIME_US, 3)?,
            resumed: Histogram::new_with_bounds(1, MAX_TIME_US, 3)?,
            first_start: None,
            last_start: None,
            last_ready: None,
            last_resumed: None,
            ready_count: 0,
            resumed_count: 0,
            failed_at: BTreeMap::new(),
            failures: BTreeMap::new(),
            first_failure: None,
            ended_early: BTreeMap::new(),
        }),
    });

    // Setup: memberships and history, then everyone leaves.
    let setup_started = Instant::now();
    let ctx_ref = &ctx;
    let prepared = futures_util::stream::iter(0..args.conns)
        .map(|i| async move { ctx_ref.prepare(i).await })
        .buffer_unordered(args.target.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let setup_failed: Vec<anyhow::Error> = prepared.into_iter().filter_map(Result::err).collect();
    if let Some(first) = setup_failed.first() {
        bail!(
            "{} of {} users could not be set up; first: {first:#}",
            setup_failed.len(),
            args.conns
        );
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;

    // The storm.
    let listen_before = ListenCounters::read()?;
    let gateway_cpu = GroupCpuMeter::start(&gateway)?;
    let backend_cpu = GroupCpuMeter::start(&backends)?;
    let loadgen_cpu = CpuMeter::start(Proc::Myself)?;
    let machine = MachineMeter::start()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let (done_tx, mut done_rx) = mpsc::channel(args.conns);
    let mut tasks = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        tasks.push(tokio::task::spawn_local(client(
            Rc::clone(&ctx),
            i,
            deadline,
            done_tx.clone(),
        )));
    }
    drop(done_tx);
    // Every client reports by its deadline; the margin covers a report that is on its way.
    for done in 0..args.conns {
        match tokio::time::timeout_at(deadline + Duration::from_secs(5), done_rx.recv()).await {
            Ok(Some(())) => {}
            Ok(None) => bail!("clients vanished after {done} of {}", args.conns),
            Err(_) => bail!("clients not done in time ({done} of {})", args.conns),
        }
    }
    let window_secs = started.elapsed().as_secs_f64();
    let gateway_cpu_secs = gateway_cpu.as_ref().map(GroupCpuMeter::used).transpose()?;
    let backend_cpu_secs = backend_cpu.as_ref().map(GroupCpuMeter::used).transpose()?;
    let loadgen_cpu_secs = loadgen_cpu.used()?;
    let (cpus, _busy) = machine.used()?;
    let listen = ListenCounters::read()?.since(listen_before);
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    ctx.stop.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }

    let stats = ctx.stats.borrow();
    let first_start = stats.first_start.unwrap_or(started);
    let secs_to = |at: Option<Instant>| at.map(|at| (at - first_start).as_secs_f64());
    let starts_spread_secs = secs_to(stats.last_start);
    let all_ready_secs = secs_to(stats.last_ready);
    let all_resumed_secs = secs_to(stats.last_resumed);
    let rate = |count: u64, secs: Option<f64>| secs.filter(|&s| s > 0.0).map(|s| count as f64 / s);
    let handshakes_per_sec = rate(stats.ready_count, all_ready_secs);
    let resumes_per_sec = rate(stats.resumed_count, all_resumed_secs);
    let all_resumed = stats.resumed_count == args.conns as u64;
    let failed: u64 = stats.failed_at.values().sum();
    let ms = |histogram: &Histogram<u64>| {
        json!({
            "min": histogram.min() as f64 / 1e3,
            "p50": histogram.value_at_quantile(0.5) as f64 / 1e3,
            "p99": histogram.value_at_quantile(0.99) as f64 / 1e3,
            "max": histogram.max() as f64 / 1e3,
        })
    };
    let (connect_ms, ready_ms, resumed_ms) =
        (ms(&stats.connected), ms(&stats.ready), ms(&stats.resumed));
    let gateway_us_per_resume = gateway_cpu_secs
        .filter(|_| stats.resumed_count > 0)
        .map(|cpu| cpu * 1e6 / stats.resumed_count as f64);

    let json = json!({
        "scenario": "storm",
        "nodes": gateway.len(),
        "conns": args.conns,
        "members": args.members,
        "rooms": room_count,
        "history": args.history,
        "missed": args.missed,
        "storm_concurrency": args.storm_concurrency,
        "setup_secs": setup_secs,
        "ready": stats.ready_count,
        "resumed": stats.resumed_count,
        "all_resumed": all_resumed,
        "failed": failed,
        "failed_at": stats.failed_at,
        "failures": stats.failures,
        "first_failure": stats.first_failure,
        "ended_early": stats.ended_early,
        "starts_spread_secs": starts_spread_secs,
        "all_ready_secs": all_ready_secs,
        "all_resumed_secs": all_resumed_secs,
        "handshakes_per_sec": handshakes_per_sec,
        "resumes_per_sec": resumes_per_sec,
        "connect_ms": connect_ms,
        "ready_ms": ready_ms,
        "resumed_ms": resumed_ms,
        "listen_overflows": listen.overflows,
        "listen_drops": listen.drops,
        "window_secs": window_secs,
        "gateway_cpu_secs": gateway_cpu_secs,
        "gateway_us_per_resume": gateway_us_per_resume,
        "backend_cpu_secs": backend_cpu_secs,
        "loadgen_cpu_secs": loadgen_cpu_secs,
        "cpus": cpus,
        // CPU 0 holds the gateway, redis-server and PostgreSQL in scripts/bench.sh.
        "cpu0_busy": cpus.first().map(|c| c.tasks + c.irq),
    });
    let fmt_secs = |secs: Option<f64>| secs.map_or("-".to_owned(), |s| format!("{s:.2} s"));
    let fmt_rate = |rate: Option<f64>| rate.map_or("-".to_owned(), |r| format!("{r:.0}/s"));
    let quantiles = |name: &str, histogram: &Histogram<u64>| {
        format!(
            "{name} min {:.1} p50 {:.1} p99 {:.1} max {:.1}",
            histogram.min() as f64 / 1e3,
            histogram.value_at_quantile(0.5) as f64 / 1e3,
            histogram.value_at_quantile(0.99) as f64 / 1e3,
            histogram.max() as f64 / 1e3
        )
    };
    let mut lines = vec![
        format!(
            "storm: {} users in {room_count} rooms of {}, each missed {} of {} messages; setup {setup_secs:.1} s; {}",
            args.conns,
            args.members,
            args.missed,
            args.history,
            match args.storm_concurrency {
                Some(n) => format!("{n} connecting at a time"),
                None => "all connecting at once".to_owned(),
            }
        ),
        format!(
            "{} ready in {} ({} handshakes), {} resumed in {} ({} resumes), {failed} failed {:?}",
            stats.ready_count,
            fmt_secs(all_ready_secs),
            fmt_rate(handshakes_per_sec),
            stats.resumed_count,
            fmt_secs(all_resumed_secs),
            fmt_rate(resumes_per_sec),
            stats.failures,
        ),
        format!(
            "per client, ms from its first connect attempt (the last began {} after the first): {}; {}; {}",
            fmt_secs(starts_spread_secs),
            quantiles("connected", &stats.connected),
            quantiles("ready", &stats.ready),
            quantiles("resumed", &stats.resumed),
        ),
        format!(
            "kernel: {} listen-queue overflows, {} listen drops during the storm (machine-wide)",
            listen.overflows, listen.drops
        ),
    ];
    if let (Some(cpu), Some(us)) = (gateway_cpu_secs, gateway_us_per_resume) {
        lines.push(format!(
            "gateway CPU {cpu:.2} s in {window_secs:.1} s: {us:.0} us per resume{}",
            backend_cpu_secs.map_or(String::new(), |b| format!("; backend CPU {b:.2} s"))
        ));
    }
    let shares: Vec<String> = cpus
        .iter()
        .enumerate()
        .map(|(n, c)| format!("cpu{n} busy {:.0}%", 100.0 * (c.tasks + c.irq)))
        .collect();
    lines.push(format!(
        "machine: {}; loadgen CPU {loadgen_cpu_secs:.2} s",
        shares.join(", ")
    ));
    if let Some(first) = &stats.first_failure {
        lines.push(format!("first failure: {first}"));
    }
    if !stats.ended_early.is_empty() {
        lines.push(format!(
            "resumed connections that ended early: {:?}",
            stats.ended_early
        ));
    }
    Ok(Report { json, lines })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::{MessageKind, UserRef};

    fn message(seq: u64) -> Message {
        Message {
            message_id: format!("m{seq}"),
            room_id: RoomId::parse("storm-0".to_owned()).unwrap(),
            seq,
            sender: UserRef {
                id: switchboard_protocol::UserId::parse("storm-0".to_owned()).unwrap(),
                name: "storm-0".to_owned(),
            },
            kind: MessageKind::Text,
            content: String::new(),
            client_msg_id: format!("c{seq}"),
            created_at: 0,
        }
    }

    #[test]
    fn a_resume_holds_exactly_the_missed_messages_in_order() {
        let replay: Vec<Message> = (16..=20).map(message).collect();
        assert!(replays(&replay, 15, 5));
        assert!(!replays(&replay, 14, 5), "one missing at the start");
        assert!(!replays(&replay[1..], 15, 5), "one short");
        let mut swapped = replay;
        swapped.swap(0, 1);
        assert!(!replays(&swapped, 15, 5), "out of order");
    }
}

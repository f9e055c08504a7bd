//! `loadgen persist`: how many messages per second the gateway makes durable, and how long a
//! sender waits for the ack that says so.
//!
//! Closed loop: every sender keeps `--window` sends in flight (one by default: a chat client
//! sends its next message after the last one's ack) in its room, for `--secs` after a
//! `--warmup-secs` that is not counted. An ack of `message:send` means the row is committed, so
//! acks per second *are* persisted messages per second. Afterwards the senders wait (bounded)
//! for every outstanding ack, so the total acked can be checked against the rows in the table.
//!
//! By default every sender has a room of its own, so the gateway's work is the write path and
//! not fan-out (`fanout` measures that). With `--rooms` below `--conns`, senders share rooms and
//! their sequences, and each message also goes to the room's other senders, who skip it by prefix.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use switchboard_protocol::RoomId;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::Report;
use crate::conn::Dialect;
use crate::conn::{self, ACK_PREFIX, Target, TargetArgs, Ws};
use crate::fanout::{ack_id, ack_outcome, end_reason};
use crate::procfs::{CpuMeter, GroupCpuMeter, MachineMeter, Proc};

/// Request id of a sender's first `message:send`; setup requests use smaller ones.
const FIRST_SEND_ID: u64 = 10;
/// Largest ack latency the histogram holds, in microseconds; larger ones are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Debug, Args)]
pub struct PersistArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Sending connections.
    #[arg(long, default_value_t = 2_000)]
    conns: usize,
    /// Rooms the senders are spread over, named persist-0, persist-1, ...; one per sender by
    /// default.
    #[arg(long)]
    rooms: Option<usize>,
    /// Sends each connection keeps in flight.
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Seconds of sending before the measurement starts (connection pools and caches warm up).
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Longest wait for outstanding acks after the last send.
    #[arg(long, default_value_t = 10)]
    drain_timeout_secs: u64,
    /// Bytes of message content.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    msg_bytes: u64,
    /// Time allowed to connect and join everything.
    #[arg(long, default_value_t = 120)]
    setup_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Sending starts.
    start: Instant,
    /// Acks from here on are counted...
    measure_from: Instant,
    /// ...up to here, where sending stops.
    stop_sending: Instant,
}

#[derive(Debug)]
struct Stats {
    /// Send-to-ack, microseconds, for acks inside the measured window.
    ack_latency: Histogram<u64>,
    /// Successful acks inside the measured window.
    acked_in_window: u64,
    sent: u64,
    acked_ok: u64,
    ack_errors: BTreeMap<String, u64>,
    /// Sends still unanswered when the drain gave up.
    unanswered: u64,
    ended_early: BTreeMap<String, u64>,
    ready: u64,
    setup_failed: u64,
    first_setup_error: Option<String>,
}

#[derive(Debug)]
struct Ctx {
    target: Target,
    rooms: Vec<RoomId>,
    window: usize,
    content: String,
    connecting: Semaphore,
    setup_timeout: Duration,
    plan: watch::Receiver<Option<Plan>>,
    /// Cancelled when the drain gives up on outstanding acks.
    stop: CancellationToken,
    stats: RefCell<Stats>,
}

impl Ctx {
    fn ended_early(&self, reason: String) {
        *self
            .stats
            .borrow_mut()
            .ended_early
            .entry(reason)
            .or_default() += 1;
    }

    /// Connects and joins (creating the room when it is new) within the setup bound.
    async fn set_up(&self, index: usize, room: &RoomId) -> anyhow::Result<Ws> {
        let _permit = self.connecting.acquire().await?;
        let steps = async {
            let config = WebSocketConfig::default().read_buffer_size(4096);
            let mut ws = self
                .target
                .open(index, &format!("persist-{index}"), config)
                .await?;
            conn::create_and_join(&mut ws, room).await?;
            anyhow::Ok(ws)
        };
        tokio::time::timeout(self.setup_timeout, steps)
            .await
            .context("setup timed out")?
    }
}

/// Sender `index` sends to room `index % rooms`.
async fn sender(ctx: Rc<Ctx>, index: usize, ready: mpsc::Sender<()>) {
    let mut ws = match ctx.set_up(index, &ctx.rooms[index % ctx.rooms.len()]).await {
        Ok(ws) => ws,
        Err(error) => {
            {
                let mut stats = ctx.stats.borrow_mut();
                stats.setup_failed += 1;
                stats
                    .first_setup_error
                    .get_or_insert_with(|| format!("{error:#}"));
            }
            let _ = ready.send(()).await;
            return;
        }
    };
    ctx.stats.borrow_mut().ready += 1;
    let _ = ready.send(()).await;
    drop(ready);

    let mut plan = ctx.plan.clone();
    let plan = match plan.wait_for(Option::is_some).await {
        Ok(plan) => plan.unwrap_or_else(|| unreachable!("waited for Some")),
        Err(_) => return,
    };
    tokio::time::sleep_until(plan.start).await;
    let stopped = ctx.stop.cancelled();
    tokio::pin!(stopped);
    // Sends awaiting their ack, oldest first: (request id, sent at).
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(ctx.window);
    let mut next_id = FIRST_SEND_ID;
    let ended = loop {
        let sending = Instant::now() < plan.stop_sending;
        if sending
            && in_flight.len() < ctx.window
            && let Err(error) =
                fill_window(&ctx, &mut ws, index, &mut in_flight, &mut next_id).await
        {
            break Some(format!("error: {error}"));
        }
        if !sending && in_flight.is_empty() {
            break None;
        }
        tokio::select! {
            biased;
            frame = ws.next() => match end_reason(frame) {
                Ok(Message::Text(text)) if text.as_bytes().starts_with(ACK_PREFIX.as_bytes()) => {
                    on_ack(&ctx, &plan, &mut in_flight, text.as_bytes());
                }
                Ok(Message::Ping(_)) => {
                    if let Err(error) = ws.flush().await {
                        break Some(format!("error: {error}"));
                    }
                }
                Ok(_) => {}
                Err(reason) => break Some(reason),
            },
            // Sending stops at its time even while no ack arrives.
            () = tokio::time::sleep_until(plan.stop_sending), if sending => {}
            () = &mut stopped => break None,
        }
    };
    ctx.stats.borrow_mut().unanswered += in_flight.len() as u64;
    if let Some(reason) = ended {
        ctx.ended_early(reason);
    }
}

/// Sends until `--window` sends are in flight, in one flush.
async fn fill_window(
    ctx: &Ctx,
    ws: &mut Ws,
    index: usize,
    in_flight: &mut VecDeque<(u64, Instant)>,
    next_id: &mut u64,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    while in_flight.len() < ctx.window {
        let id = *next_id;
        let frame = format!(
            r#"{{"type":"message:send","id":{id},"roomId":"{room_id}","content":"{content}","clientMsgId":"p{index}-{id}"}}"#,
            room_id = ctx.rooms[index % ctx.rooms.len()],
            content = ctx.content,
        );
        ws.feed(Message::text(frame)).await?;
        in_flight.push_back((id, Instant::now()));
        *next_id += 1;
        ctx.stats.borrow_mut().sent += 1;
    }
    ws.flush().await
}

/// Matches an ack to its send and counts it.
fn on_ack(ctx: &Ctx, plan: &Plan, in_flight: &mut VecDeque<(u64, Instant)>, frame: &[u8]) {
    let Some(id) = ack_id(frame) else { return };
    // Acks come in request order on one connection, so the match is almost always the front.
    let Some(position) = in_flight.iter().position(|&(sent, _)| sent == id) else {
        return;
    };
    let Some((_, sent_at)) = in_flight.remove(position) else {
        return;
    };
    let now = Instant::now();
    let mut stats = ctx.stats.borrow_mut();
    match ack_outcome(frame) {
        Ok(()) => {
            stats.acked_ok += 1;
            if now >= plan.measure_from && now <= plan.stop_sending {
                stats.acked_in_window += 1;
                let latency_us = u64::try_from((now - sent_at).as_micros()).unwrap_or(u64::MAX);
                stats.ack_latency.saturating_record(latency_us.max(1));
            }
        }
        Err(code) => *stats.ack_errors.entry(code).or_default() += 1,
    }
}

pub async fn run(args: PersistArgs) -> anyhow::Result<Report> {
    ensure!(args.conns >= 1, "--conns must be at least 1");
    let room_count = args.rooms.unwrap_or(args.conns);
    ensure!(room_count >= 1, "--rooms must be at least 1");
    ensure!(args.window >= 1, "--window must be at least 1");
    ensure!(args.secs >= 1, "--secs must be at least 1");
    let rooms = (0..room_count)
        .map(|r| RoomId::parse(format!("persist-{r}")))
        .collect::<Result<Vec<_>, _>>()?;
    ensure!(
        args.target.dialect == Dialect::Switchboard,
        "persist measures the gateway's store: only --dialect switchboard"
    );
    let target = Target::new(&args.target).await?;
    let gateway = target.gateway.clone();
    let (plan_tx, plan_rx) = watch::channel(None);
    let setup_timeout = Duration::from_secs(args.setup_timeout_secs);
    let ctx = Rc::new(Ctx {
        target,
        rooms,
        window: args.window,
        content: "x".repeat(usize::try_from(args.msg_bytes)?),
        connecting: Semaphore::new(args.target.concurrency.max(1)),
        setup_timeout,
        plan: plan_rx,
        stop: CancellationToken::new(),
        stats: RefCell::new(Stats {
            ack_latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
            acked_in_window: 0,
            sent: 0,
            acked_ok: 0,
            ack_errors: BTreeMap::new(),
            unanswered: 0,
            ended_early: BTreeMap::new(),
            ready: 0,
            setup_failed: 0,
            first_setup_error: None,
        }),
    });

    let setup_started = Instant::now();
    let (ready_tx, mut ready_rx) = mpsc::channel(args.conns);
    let mut tasks = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        tasks.push(tokio::task::spawn_local(sender(
            Rc::clone(&ctx),
            i,
            ready_tx.clone(),
        )));
    }
    drop(ready_tx);
    for done in 0..args.conns {
        match tokio::time::timeout(setup_timeout, ready_rx.recv()).await {
            Ok(Some(())) => {}
            Ok(None) => bail!("setup tasks vanished after {done} of {}", args.conns),
            Err(_) => bail!("setup not done in time ({done} of {} ready)", args.conns),
        }
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let ready = ctx.stats.borrow().ready;
    if ready == 0 {
        let stats = ctx.stats.borrow();
        bail!(
            "no sender could start: {}",
            stats.first_setup_error.as_deref().unwrap_or("")
        );
    }

    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + Duration::from_secs(args.warmup_secs);
    let stop_sending = measure_from + Duration::from_secs(args.secs);
    plan_tx.send_replace(Some(Plan {
        start,
        measure_from,
        stop_sending,
    }));
    tokio::time::sleep_until(measure_from).await;
    let gateway_cpu = GroupCpuMeter::start(&gateway)?;
    let loadgen_cpu = CpuMeter::start(Proc::Myself)?;
    let machine = MachineMeter::start()?;
    tokio::time::sleep_until(stop_sending).await;
    let window_secs = (Instant::now() - measure_from).as_secs_f64();
    let gateway_cpu_secs = gateway_cpu.as_ref().map(GroupCpuMeter::used).transpose()?;
    let loadgen_cpu_secs = loadgen_cpu.used()?;
    let (cpus, _busy) = machine.used()?;

    // Every sender ends by itself once its acks are in; give up on stragglers after the bound.
    let drain_deadline = stop_sending + Duration::from_secs(args.drain_timeout_secs);
    for task in &mut tasks {
        if tokio::time::timeout_at(drain_deadline, &mut *task)
            .await
            .is_err()
        {
            break;
        }
    }
    ctx.stop.cancel();
    for task in tasks.into_iter().filter(|task| !task.is_finished()) {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }

    let stats = ctx.stats.borrow();
    let persisted_per_sec = stats.acked_in_window as f64 / args.secs as f64;
    let ms = |q: f64| stats.ack_latency.value_at_quantile(q) as f64 / 1_000.0;
    let (p50, p99, p999, max) = (
        ms(0.5),
        ms(0.99),
        ms(0.999),
        stats.ack_latency.max() as f64 / 1e3,
    );
    let ack_errors: u64 = stats.ack_errors.values().sum();
    let gateway_util = gateway_cpu_secs.map(|cpu| cpu / window_secs);
    let gateway_us_per_message = gateway_cpu_secs
        .filter(|_| stats.acked_in_window > 0)
        .map(|cpu| cpu * 1e6 / stats.acked_in_window as f64);
    let loadgen_util = loadgen_cpu_secs / window_secs;
    let json = json!({
        "scenario": "persist",
        "conns": args.conns,
        "ready": ready,
        "rooms": room_count,
        "window": args.window,
        "secs": args.secs,
        "warmup_secs": args.warmup_secs,
        "msg_bytes": args.msg_bytes,
        "setup_secs": setup_secs,
        "setup_failed": stats.setup_failed,
        "first_setup_error": stats.first_setup_error,
        "sent": stats.sent,
        "acked_ok": stats.acked_ok,
        "ack_errors": stats.ack_errors,
        "ack_errors_total": ack_errors,
        "unanswered": stats.unanswered,
        "ended_early": stats.ended_early,
        "acked_in_window": stats.acked_in_window,
        "persisted_per_sec": persisted_per_sec,
        "ack_latency_ms": { "p50": p50, "p99": p99, "p999": p999, "max": max },
        "window_secs": window_secs,
        "gateway_cpu_secs": gateway_cpu_secs,
        "gateway_cpu_util": gateway_util,
        "gateway_us_per_message": gateway_us_per_message,
        "loadgen_cpu_util": loadgen_util,
        "cpus": cpus,
        // CPU 0 holds the gateway and PostgreSQL in scripts/bench.sh.
        "cpu0_busy": cpus.first().map(|c| c.tasks + c.irq),
    });
    let mut lines = vec![
        format!(
            "persist: {ready}/{} senders in {} rooms, window {}, {} B content; setup {setup_secs:.1} s; {} s warm-up, {} s measured",
            args.conns, room_count, args.window, args.msg_bytes, args.warmup_secs, args.secs
        ),
        format!(
            "sent {} acked {} (errors {ack_errors} {:?}, unanswered {}); {persisted_per_sec:.0} persisted msgs/s",
            stats.sent, stats.acked_ok, stats.ack_errors, stats.unanswered
        ),
        format!("ack latency ms p50 {p50:.2} p99 {p99:.2} p99.9 {p999:.2} max {max:.2}"),
    ];
    if let (Some(util), Some(us)) = (gateway_util, gateway_us_per_message) {
        lines.push(format!(
            "gateway {:.0}% of a core, {us:.1} us CPU per message; loadgen {:.0}% of a core",
            100.0 * util,
            100.0 * loadgen_util
        ));
    }
    let shares: Vec<String> = cpus
        .iter()
        .enumerate()
        .map(|(n, c)| format!("cpu{n} busy {:.0}%", 100.0 * (c.tasks + c.irq)))
        .collect();
    lines.push(format!("machine: {}", shares.join(", ")));
    if !stats.ended_early.is_empty() {
        lines.push(format!(
            "connections that ended early: {:?}",
            stats.ended_early
        ));
    }
    Ok(Report { json, lines })
}

//! `loadgen idle`: what an authenticated connection that does nothing costs the server (the
//! gateway, or a peer speaking another dialect).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Report;
use crate::conn::{Dialect, Target, TargetArgs, Transport};
use crate::procfs::{Proc, total_rss_kib};
use crate::sse::SseStream;

#[derive(Debug, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Seconds to hold them idle before reading the server's memory. Idle connections read
    /// nothing, so with `--dialect socketio` keep it below the server's ping interval plus
    /// ping timeout (45 s by default), after which it drops them.
    #[arg(long, default_value_t = 5)]
    hold_secs: u64,
    /// Time allowed to open every connection.
    #[arg(long, default_value_t = 120)]
    connect_timeout_secs: u64,
    /// Connection i authenticates as user `<prefix><i>`. Several loadgen processes against one
    /// cluster need distinct prefixes, or their users would share the per-user connection limit.
    #[arg(long, default_value = "idle-")]
    user_prefix: String,
    /// What each connection is: a WebSocket session, or an `/sse` stream of no room (the
    /// user's own events only; Switchboard only).
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    transport: Transport,
}

/// An open connection of either transport, held only to be dropped at the end.
#[expect(dead_code, reason = "held open, never read")]
enum Held {
    Ws(crate::conn::Ws),
    Sse(SseStream),
}

/// Opens connection `i` and waits until its session is ready.
async fn open(target: &Target, transport: Transport, i: usize, user: &str) -> anyhow::Result<Held> {
    match transport {
        Transport::Ws => Ok(Held::Ws(target.open(i, user, config()).await?)),
        Transport::Sse => {
            let endpoint = target.endpoint(i);
            let stream = target.connect(endpoint, i).await?;
            let token = target.token(user)?;
            let mut sse =
                SseStream::open(stream, endpoint.authority(), "/sse", &token, 1024).await?;
            sse.expect(b"session:ready").await?;
            Ok(Held::Sse(sse))
        }
    }
}

/// Our side of an idle connection: a 1 KiB read buffer keeps this process small too (the
/// default allocates 128 KiB per connection up front).
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
}

pub async fn run(args: IdleArgs) -> anyhow::Result<Report> {
    let target = Target::new(&args.target).await?;
    let transport = args.transport;
    ensure!(
        transport == Transport::Ws || target.dialect == Dialect::Switchboard,
        "--transport sse is Switchboard's"
    );
    let rss_before = total_rss_kib(&target.gateway)?;

    let started = Instant::now();
    let target_ref = &target;
    let prefix = args.user_prefix.as_str();
    let opening = futures_util::stream::iter(0..args.conns)
        .map(|i| async move { open(target_ref, transport, i, &format!("{prefix}{i}")).await })
        .buffer_unordered(args.target.concurrency.max(1))
        .collect::<Vec<_>>();
    let results = tokio::time::timeout(Duration::from_secs(args.connect_timeout_secs), opening)
        .await
        .context("opening connections took longer than --connect-timeout-secs")?;
    let elapsed = started.elapsed();
    let mut sockets = Vec::with_capacity(results.len());
    let mut failures = 0usize;
    let mut first_failure = None;
    for result in results {
        match result {
            Ok(ws) => sockets.push(ws),
            Err(error) => {
                failures += 1;
                first_failure.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    let open = sockets.len();
    if open == 0 {
        bail!(
            "no connection opened: {}",
            first_failure.unwrap_or_default()
        );
    }
    let handshakes_per_sec = open as f64 / elapsed.as_secs_f64();

    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let rss_after = total_rss_kib(&target.gateway)?;
    let loadgen_rss = Proc::Myself.rss_kib()?;
    let kib_per_conn = match (rss_before, rss_after) {
        (Some(before), Some(after)) => Some((after as f64 - before as f64) / open as f64),
        _ => None,
    };

    let json = json!({
        "scenario": "idle",
        "dialect": target.dialect.name(),
        "transport": transport.name(),
        "nodes": target.gateway.len(),
        "conns": args.conns,
        "open": open,
        "failed": failures,
        "first_error": first_failure,
        "connect_secs": elapsed.as_secs_f64(),
        "handshakes_per_sec": handshakes_per_sec,
        "hold_secs": args.hold_secs,
        "gateway_rss_before_kib": rss_before,
        "gateway_rss_after_kib": rss_after,
        "gateway_kib_per_conn": kib_per_conn,
        "loadgen_rss_kib": loadgen_rss,
    });
    let mut lines = vec![format!(
        "idle: {open}/{} {} connections open in {:.2} s ({handshakes_per_sec:.0} handshakes/s), {failures} failed",
        args.conns,
        transport.name(),
        elapsed.as_secs_f64()
    )];
    if let Some(error) = &first_failure {
        lines.push(format!("first failure: {error}"));
    }
    match (rss_before, rss_after, kib_per_conn) {
        (Some(before), Some(after), Some(per)) => lines.push(format!(
            "gateway RSS {before} KiB -> {after} KiB after {} s idle: {per:.2} KiB per connection",
            args.hold_secs
        )),
        _ => lines.push("gateway RSS not measured (pass --gateway-pid)".to_owned()),
    }
    lines.push(format!("loadgen RSS {loadgen_rss} KiB"));
    drop(sockets);
    Ok(Report { json, lines })
}

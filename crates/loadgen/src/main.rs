//! `loadgen`: drives a Switchboard gateway over loopback and measures it.
//!
//! Four scenarios and a webhook receiver, each bounded in connections and time and ending by itself:
//! - `idle`: N authenticated connections that then stay silent; reports the handshake rate and
//!   the gateway's resident memory per connection (from `/proc`).
//! - `fanout`: receivers spread over rooms, publishers at a fixed aggregate rate with a timestamp
//!   in every message; reports deliveries per second, loss, latency percentiles and the gateway's
//!   CPU time per delivery.
//! - `persist`: senders in a closed loop; reports acknowledged (so committed) messages per second
//!   and the ack latency, for comparing the store's write paths.
//! - `storm`: users with a room and missed messages all reconnect at once and resume; reports the
//!   time until every one is resumed, handshakes and resumes per second, the time each client
//!   took, and the connects the kernel's accept queue dropped.
//! - `webhook-sink`: not a load but a receiver: takes the gateway's webhooks and reports their
//!   rate and the time from each message's storing to its webhook's arrival.
//!
//! `fanout` receivers may listen on `/sse` streams instead of WebSockets (`--receive sse`), and
//! publishers may send through the server API (`--publish api`), so the transports and the ways
//! in are measured against each other; `idle --transport sse` holds idle streams.
//!
//! `idle` and `fanout` speak either the Switchboard protocol or, with `--dialect socketio`,
//! Socket.IO 4 over a raw WebSocket (see [`socketio`]), so a Socket.IO server doing the same work
//! is measured the same way. `--url` repeats to spread connections over the nodes of a cluster, and `fanout
//! --publisher-url` puts the publishers on another node than the receivers.
//!
//! Each prints one JSON line (for scripts) followed by lines for people. Everything runs on one
//! thread (`current_thread` runtime), so the process can be pinned to one core next to a gateway
//! pinned to the other; the per-delivery work is kept small (see [`fanout`]).

mod api;
mod conn;
mod fanout;
mod idle;
mod median;
mod persist;
mod procfs;
mod raw;
mod socketio;
mod sse;
mod storm;
mod webhook_sink;

use std::io::Write;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "Load generator for the Switchboard gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open N authenticated connections, hold them idle, report memory per connection.
    Idle(idle::IdleArgs),
    /// Broadcast timestamped messages to receivers in rooms; report throughput and latency.
    Fanout(fanout::FanoutArgs),
    /// Send in a closed loop; report persisted (acknowledged) messages per second and ack latency.
    Persist(persist::PersistArgs),
    /// Reconnect every user at once and resume its room; report how long until all resumed.
    Storm(storm::StormArgs),
    /// Receive webhooks and report their rate and their latency since the message was stored.
    WebhookSink(webhook_sink::SinkArgs),
    /// Print the medians of fields over a file of JSON summary lines (used by scripts/bench.sh).
    Median(median::MedianArgs),
}

/// What a scenario prints: one machine-readable line, then lines for people.
#[derive(Debug)]
pub struct Report {
    pub json: serde_json::Value,
    pub lines: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let report = match Cli::parse().command {
        Command::Idle(args) => run_scenario(idle::run(args))?,
        Command::Fanout(args) => run_scenario(fanout::run(args))?,
        Command::Persist(args) => run_scenario(persist::run(args))?,
        Command::Storm(args) => run_scenario(storm::run(args))?,
        Command::WebhookSink(args) => run_scenario(webhook_sink::run(args))?,
        Command::Median(args) => {
            writeln!(std::io::stdout().lock(), "{}", median::run(&args)?)?;
            return Ok(());
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", report.json)?;
    for line in &report.lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    // Dropping thousands of sockets and tasks takes a while and tells nobody anything.
    std::process::exit(0);
}

/// Runs a scenario on one thread. Connection tasks share counters through `Rc<RefCell<_>>`, so
/// they are local tasks.
fn run_scenario(scenario: impl Future<Output = anyhow::Result<Report>>) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&runtime, scenario)
}

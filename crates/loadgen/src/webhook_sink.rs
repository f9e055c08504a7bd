//! A webhook receiver for the webhook benchmark (scripts/bench.sh `webhooks`): answers every
//! POST with 204 over keep-alive HTTP/1.1 and measures, per distinct `webhook-id`, the time from
//! the message's `createdAt` (set when the gateway stores it) to its arrival here. It stops once
//! nothing arrived for `--idle-secs` after the first webhook (the gateway's outbox drained), or
//! after `--max-secs`.
//!
//! Minimal HTTP on purpose: it reads a request head and a `Content-Length` body, nothing else
//! (the gateway's client sends exactly that), so its own cost stays small next to the gateway's.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::Report;

/// Longest latency recorded, in ms.
const MAX_LATENCY_MS: u64 = 3_600_000;
/// Largest request read.
const MAX_REQUEST: usize = 1 << 20;

#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:18099")]
    listen: SocketAddr,
    /// Stop once nothing arrived for this long, after the first webhook.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// Stop after this long in any case.
    #[arg(long, default_value_t = 600)]
    max_secs: u64,
}

#[derive(Debug)]
struct Sink {
    ids: HashSet<String>,
    received: u64,
    unreadable: u64,
    latency_ms: Histogram<u64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

pub async fn run(args: SinkArgs) -> anyhow::Result<Report> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let sink = Rc::new(RefCell::new(Sink {
        ids: HashSet::new(),
        received: 0,
        unreadable: 0,
        latency_ms: Histogram::new_with_bounds(1, MAX_LATENCY_MS, 3)?,
        first: None,
        last: None,
    }));
    let started = Instant::now();
    let idle = Duration::from_secs(args.idle_secs);
    let deadline = started + Duration::from_secs(args.max_secs);
    loop {
        let quiet_since = sink.borrow().last.unwrap_or(started);
        let wake = if sink.borrow().first.is_some() {
            (quiet_since + idle).min(deadline)
        } else {
            deadline
        };
        if Instant::now() >= wake {
            break;
        }
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let _ = stream.set_nodelay(true);
                tokio::task::spawn_local(serve(stream, Rc::clone(&sink)));
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    let sink = sink.borrow();
    let distinct = sink.ids.len() as u64;
    let span = match (sink.first, sink.last) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    let per_sec = if span > 0.0 {
        distinct as f64 / span
    } else {
        0.0
    };
    let q = |p: f64| sink.latency_ms.value_at_quantile(p);
    let json = json!({
        "received": sink.received,
        "distinct": distinct,
        "duplicates": sink.received - distinct - sink.unreadable,
        "unreadable": sink.unreadable,
        "span_secs": span,
        "deliveries_per_sec": per_sec,
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": sink.latency_ms.max()},
    });
    let lines = vec![
        format!(
            "webhook sink: {} received, {distinct} distinct ids, {} unreadable, over {span:.1} s: {per_sec:.0} webhooks/s",
            sink.received, sink.unreadable
        ),
        format!(
            "created -> received ms p50 {} p99 {} p99.9 {} max {}",
            q(0.5),
            q(0.99),
            q(0.999),
            sink.latency_ms.max()
        ),
    ];
    Ok(Report { json, lines })
}

/// Serves one keep-alive connection until it closes.
async fn serve(mut stream: TcpStream, sink: Rc<RefCell<Sink>>) {
    let mut buffer = Vec::with_capacity(8 * 1024);
    loop {
        let Some((head_end, body_len)) = read_head(&mut stream, &mut buffer).await else {
            return;
        };
        let total = head_end + body_len;
        while buffer.len() < total {
            buffer.reserve(total - buffer.len());
            match stream.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        record(&sink, &buffer[..head_end], &buffer[head_end..total]);
        buffer.drain(..total);
        if stream
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Reads until a whole request head is buffered: its length and the body's `Content-Length`.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(usize, usize)> {
    loop {
        if let Some(end) = memchr::memmem::find(buffer, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end]).ok()?;
            let body_len = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse().ok())
                .unwrap_or(0);
            return Some((end + 4, body_len));
        }
        if buffer.len() > MAX_REQUEST {
            return None;
        }
        buffer.reserve(16 * 1024);
        match stream.read_buf(buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn record(sink: &Rc<RefCell<Sink>>, head: &[u8], body: &[u8]) {
    let now = Instant::now();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let id = std::str::from_utf8(head).ok().and_then(|head| {
        head.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("webhook-id"))
            .map(|(_, value)| value.trim().to_owned())
    });
    let created = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["data"]["message"]["createdAt"].as_u64());
    let mut sink = sink.borrow_mut();
    sink.received += 1;
    sink.first.get_or_insert(now);
    sink.last = Some(now);
    let (Some(id), Some(created)) = (id, created) else {
        sink.unreadable += 1;
        return;
    };
    if sink.ids.insert(id) {
        let latency = now_ms.saturating_sub(created).clamp(1, MAX_LATENCY_MS);
        let _ = sink.latency_ms.record(latency);
    }
}

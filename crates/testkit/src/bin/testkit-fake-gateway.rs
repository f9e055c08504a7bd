//! A stand-in for the `gateway` binary, so testkit's own tests can exercise [`GatewayBuilder`]
//! without the real gateway: it serves `/readyz`, `/healthz` and `/metrics` on
//! `SWITCHBOARD_LISTEN` (admin endpoints on `SWITCHBOARD_ADMIN_LISTEN` when set), logs to
//! stderr, and on SIGTERM answers 503 on `/readyz` for a moment, then exits 0.
//! `FAKE_FAIL=1` makes it exit 2 at once with a config error, as a misconfigured gateway would.
//!
//! [`GatewayBuilder`]: switchboard_testkit::GatewayBuilder

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Default)]
struct State {
    /// Set by SIGTERM: `/readyz` answers 503.
    draining: AtomicBool,
    /// Requests served, exposed as a metric.
    requests: AtomicU64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    if std::env::var("FAKE_FAIL").is_ok_and(|v| v == "1") {
        eprintln!("config error: FAKE_FAIL is set");
        std::process::exit(2);
    }
    let listen: SocketAddr = std::env::var("SWITCHBOARD_LISTEN")
        .context("SWITCHBOARD_LISTEN is not set")?
        .parse()?;
    let state = Arc::new(State::default());
    let main = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    eprintln!("fake gateway listening on {listen}");
    eprintln!(
        "SWITCHBOARD_LOG={}",
        std::env::var("SWITCHBOARD_LOG").unwrap_or_default()
    );
    tokio::spawn(serve(main, Arc::clone(&state)));
    if let Ok(admin) = std::env::var("SWITCHBOARD_ADMIN_LISTEN") {
        let admin = TcpListener::bind(&admin)
            .await
            .with_context(|| format!("binding admin {admin}"))?;
        eprintln!("fake admin listening on {}", admin.local_addr()?);
        tokio::spawn(serve(admin, Arc::clone(&state)));
    }
    signal(SignalKind::terminate())?.recv().await;
    state.draining.store(true, Ordering::SeqCst);
    eprintln!("SIGTERM: draining");
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!("drained, exiting");
    Ok(())
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(answer(stream, Arc::clone(&state)));
    }
}

async fn answer(mut stream: TcpStream, state: Arc<State>) -> anyhow::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let served = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let text = String::from_utf8_lossy(&head);
    let path = text.split(' ').nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/readyz" if state.draining.load(Ordering::SeqCst) => {
            ("503 Service Unavailable", "draining".to_owned())
        }
        "/readyz" => ("200 OK", "ready".to_owned()),
        "/healthz" => ("200 OK", "ok".to_owned()),
        "/metrics" => (
            "200 OK",
            format!("# TYPE fake_requests_total counter\nfake_requests_total {served}\n"),
        ),
        _ => ("404 Not Found", "not found".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

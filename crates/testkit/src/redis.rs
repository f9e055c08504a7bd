//! A private `redis-server` on a free port: no persistence, stopped and restarted on the same
//! port for failure tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::process::{self, OutputLog, Process, signal};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const PORT_ATTEMPTS: usize = 5;
const EXTRA_DIRS: &[&str] = &["/usr/bin", "/usr/local/bin", "/usr/sbin"];

/// A running (or deliberately stopped) `redis-server`.
#[derive(Debug)]
pub struct Redis {
    /// `None` while stopped. Declared before `dir` so the server dies before its dir is removed.
    process: Option<Process>,
    port: u16,
    bin: PathBuf,
    /// Every run's output, so a test that restarts the server sees all of it.
    log: Arc<OutputLog>,
    /// Working directory (redis-server's `--dir`); removed on drop.
    dir: TempDir,
}

impl Redis {
    /// Starts `redis-server --port P --bind 127.0.0.1 --save "" --appendonly no` and waits until
    /// it answers `PING` with `+PONG`.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = process::find_binary("redis-server", EXTRA_DIRS)?;
        let log = OutputLog::new();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut redis = Self {
                process: None,
                port: process::free_port()?,
                bin: bin.clone(),
                log: Arc::clone(&log),
                dir: tempfile::Builder::new()
                    .prefix("switchboard-redis-")
                    .tempdir()
                    .context("creating redis temp dir")?,
            };
            let mark = log.mark();
            match redis.run().await {
                Ok(()) => return Ok(redis),
                Err(e) if attempt < PORT_ATTEMPTS && process::port_was_taken(&log.since(mark)) => {
                    log.note(&format!("port {} taken, retrying: {e:#}", redis.port));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--logfile", "", "--dir"])
            .arg(self.dir.path())
            .current_dir(self.dir.path());
        let mut process = Process::spawn_with_log(
            format!("redis-server:{}", self.port),
            cmd,
            Arc::clone(&self.log),
        )?;
        process.set_drop_signal(signal::SIGKILL, Duration::ZERO);
        let addr = self.addr();
        process::wait_ready(
            &mut process,
            "answering PING",
            READY_TIMEOUT,
            || async move { ping(addr).await.is_ok() },
        )
        .await?;
        self.process = Some(process);
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Shuts the server down (SIGTERM, SIGKILL after 5 s). Clients see their connections close;
    /// nothing survives (no persistence).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process
                .stop(signal::SIGTERM, Duration::from_secs(5))
                .await?;
            self.log.note("redis-server stopped by the test");
        }
        Ok(())
    }

    /// SIGKILL: a crashed server.
    pub async fn kill_hard(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill_hard().await?;
            self.log.note("redis-server killed by the test");
        }
        Ok(())
    }

    /// Starts the server again on the same port (stopping it first if it runs), empty.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.log.note("redis-server restarting on the same port");
        self.run().await
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.running()?.signal(signal::SIGSTOP)
    }

    /// Undoes [`Redis::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.running()?.signal(signal::SIGCONT)
    }

    fn running(&self) -> anyhow::Result<&Process> {
        self.process
            .as_ref()
            .context("redis-server is stopped; restart() it first")
    }

    /// Sends `PING` over a fresh TCP connection and expects `+PONG`.
    pub async fn ping(&self) -> anyhow::Result<()> {
        ping(self.addr()).await
    }

    /// Runs one command with `redis-cli` and returns its raw output, e.g.
    /// `redis.cli(&["PUBSUB", "CHANNELS"])`.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let bin = process::find_binary("redis-cli", EXTRA_DIRS)?;
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            Command::new(bin)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("redis-cli timed out")??;
        if !out.status.success() {
            bail!(
                "redis-cli {args:?} failed with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// The captured output of every run so far.
    pub fn logs(&self) -> String {
        self.log.text()
    }
}

/// Sends an inline `PING` and expects `+PONG`.
pub async fn ping(addr: SocketAddr) -> anyhow::Result<()> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        anyhow::Ok(reply)
    };
    let reply = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .context("PING timed out")??;
    if &reply != b"+PONG\r\n" {
        bail!(
            "PING answered {:?}, not +PONG",
            String::from_utf8_lossy(&reply)
        );
    }
    Ok(())
}

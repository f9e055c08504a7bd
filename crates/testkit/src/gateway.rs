//! The `gateway` binary as a fixture.
//!
//! ```no_run
//! # async fn demo(gateway_bin: &str) -> anyhow::Result<()> {
//! use switchboard_testkit::GatewayBuilder;
//! // In crates/gateway/tests: GatewayBuilder::new(env!("CARGO_BIN_EXE_gateway"))
//! let gw = GatewayBuilder::new(gateway_bin)
//!     .env("SWITCHBOARD_JWT_SECRET", "test-secret")
//!     .start()
//!     .await?;
//! assert_eq!(gw.http_get("/healthz").await?.status, 200);
//! # Ok(()) }
//! ```
//!
//! **Boundary:** the child sees none of the test process's `SWITCHBOARD_*`, `REDIS_URL` or
//! `DATABASE_URL` variables, only what the builder sets, so a developer's shell cannot change a
//! test's outcome.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::http::{HttpResponse, http_get};
use crate::process::{self, LogMark, OutputLog, Process, signal};

/// How many times `start` picks a new port when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// Variables removed from the inherited environment before the builder's are applied.
const SCRUBBED_PREFIXES: &[&str] = &["SWITCHBOARD_"];
const SCRUBBED_NAMES: &[&str] = &["REDIS_URL", "DATABASE_URL"];

/// Where the admin endpoints (`/metrics`, `/healthz`, `/readyz`) are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AdminListener {
    /// On the main listener (no `SWITCHBOARD_ADMIN_LISTEN`).
    Main,
    /// On a separate listener, on this port, or a free one when `None`.
    Separate(Option<u16>),
}

/// Configures and starts a [`Gateway`]. Cloneable, so a test can start several alike nodes.
#[derive(Debug, Clone)]
pub struct GatewayBuilder {
    bin: PathBuf,
    /// Applied in order after the scrubbed inherited environment; later values win.
    envs: Vec<(String, String)>,
    args: Vec<OsString>,
    /// `None`: a free port. `Some`: this port, e.g. to restart a node where clients expect it.
    port: Option<u16>,
    admin: AdminListener,
    ready_timeout: Duration,
    /// Names the node in logs and errors ("gateway-a"); tests with several nodes set it.
    name: String,
}

impl GatewayBuilder {
    /// A builder for the binary at `bin`; integration tests pass `env!("CARGO_BIN_EXE_gateway")`.
    pub fn new(bin: impl AsRef<Path>) -> Self {
        Self {
            bin: bin.as_ref().to_path_buf(),
            envs: Vec::new(),
            args: Vec::new(),
            port: None,
            admin: AdminListener::Main,
            ready_timeout: Duration::from_secs(30),
            name: "gateway".to_owned(),
        }
    }

    /// Sets an environment variable of the child (repeatable; the last value of a name wins).
    /// `SWITCHBOARD_LISTEN` overrides the chosen port; `SWITCHBOARD_LOG` the default filter.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Listens on this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Serves the admin endpoints on a separate listener on a free port
    /// (`SWITCHBOARD_ADMIN_LISTEN`); [`Gateway::admin_addr`] says where.
    pub fn admin_listener(mut self) -> Self {
        self.admin = AdminListener::Separate(None);
        self
    }

    /// Serves the admin endpoints on a separate listener on this port.
    pub fn admin_port(mut self, port: u16) -> Self {
        self.admin = AdminListener::Separate(Some(port));
        self
    }

    /// How long to wait for `GET /readyz` to answer 200 (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Names the node in logs and error messages.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn env_value(&self, key: &str) -> Option<&str> {
        self.envs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The command with the scrubbed environment, the builder's variables and arguments.
    fn command(&self, extra_env: &[(&str, String)]) -> Command {
        let mut cmd = Command::new(&self.bin);
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            if SCRUBBED_PREFIXES.iter().any(|p| key.starts_with(p)) || SCRUBBED_NAMES.contains(&key)
            {
                cmd.env_remove(key);
            }
        }
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            cmd.env("RUST_BACKTRACE", "1");
        }
        for (key, value) in extra_env {
            cmd.env(key, value);
        }
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.args(&self.args);
        cmd
    }

    /// Starts the gateway and waits until `GET /readyz` answers 200. When the child exits first,
    /// or the deadline passes, the error carries the child's output. A port taken between
    /// choosing and binding it is retried on another one.
    pub async fn start(&self) -> anyhow::Result<Gateway> {
        let log = OutputLog::new();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mark = log.mark();
            match self.try_start(Arc::clone(&log)).await {
                Ok(gateway) => return Ok(gateway),
                Err(e) if attempt < PORT_ATTEMPTS && process::port_was_taken(&log.since(mark)) => {
                    log.note(&format!("port taken, retrying (attempt {attempt}): {e:#}"));
                    if self.port.is_some() {
                        // A fixed port may still be held by a node that is exiting.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_start(&self, log: Arc<OutputLog>) -> anyhow::Result<Gateway> {
        let mut extra: Vec<(&str, String)> = Vec::new();
        let addr = match self.env_value("SWITCHBOARD_LISTEN") {
            Some(listen) => listen
                .parse()
                .with_context(|| format!("SWITCHBOARD_LISTEN={listen:?} is not an address"))?,
            None => {
                let port = match self.port {
                    Some(port) => port,
                    None => process::free_port()?,
                };
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                extra.push(("SWITCHBOARD_LISTEN", addr.to_string()));
                addr
            }
        };
        let admin_addr = match (self.env_value("SWITCHBOARD_ADMIN_LISTEN"), self.admin) {
            (Some(listen), _) => Some(listen.parse().with_context(|| {
                format!("SWITCHBOARD_ADMIN_LISTEN={listen:?} is not an address")
            })?),
            (None, AdminListener::Main) => None,
            (None, AdminListener::Separate(port)) => {
                let port = match port {
                    Some(port) => port,
                    None => process::free_port()?,
                };
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                extra.push(("SWITCHBOARD_ADMIN_LISTEN", addr.to_string()));
                Some(addr)
            }
        };
        if self.env_value("SWITCHBOARD_LOG").is_none() {
            extra.push((
                "SWITCHBOARD_LOG",
                "info,switchboard_gateway=debug".to_owned(),
            ));
        }
        let mut process =
            Process::spawn_with_log(self.name.clone(), self.command(&extra), Arc::clone(&log))?;
        process.set_drop_signal(signal::SIGKILL, Duration::ZERO);
        let probe = admin_addr.unwrap_or(addr);
        process::wait_ready(
            &mut process,
            &format!("ready (GET http://{probe}/readyz = 200)"),
            self.ready_timeout,
            || async move {
                matches!(http_get(probe, "/readyz", &[]).await, Ok(r) if r.status == 200)
            },
        )
        .await?;
        let mut same_ports = self.clone();
        same_ports.port = Some(addr.port());
        if let Some(admin) = admin_addr {
            same_ports.admin = AdminListener::Separate(Some(admin.port()));
        }
        Ok(Gateway {
            process,
            addr,
            admin_addr,
            same_ports,
        })
    }

    /// Runs the binary to completion (e.g. `gateway token --user alice`, or a config the gateway
    /// must refuse) with the builder's environment and arguments, and returns what it printed.
    pub async fn output(&self, timeout: Duration) -> anyhow::Result<CommandOutput> {
        let mut extra = Vec::new();
        if self.env_value("SWITCHBOARD_LOG").is_none() {
            extra.push(("SWITCHBOARD_LOG", "info".to_owned()));
        }
        let mut cmd = self.command(&extra);
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(timeout, cmd.output())
            .await
            .with_context(|| format!("{} did not exit within {timeout:?}", self.name))?
            .with_context(|| format!("running {}", self.bin.display()))?;
        Ok(CommandOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// What a command that ran to completion printed.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A running gateway; killed (SIGKILL) when dropped, its output printed if the test failed.
#[derive(Debug)]
pub struct Gateway {
    process: Process,
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    /// This node's builder with its ports fixed, to start it again where clients expect it.
    same_ports: GatewayBuilder,
}

impl Gateway {
    /// The main listener (`/ws`, and the admin endpoints unless moved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served: the admin listener if configured,
    /// else the main one.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr.unwrap_or(self.addr)
    }

    /// `ws://127.0.0.1:PORT/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// `http://127.0.0.1:PORT`
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET path` on the main listener.
    pub async fn http_get(&self, path: &str) -> anyhow::Result<HttpResponse> {
        http_get(self.addr, path, &[]).await
    }

    /// `GET path` on the admin listener (the main one when there is none).
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<HttpResponse> {
        http_get(self.admin_addr(), path, &[]).await
    }

    /// The `/metrics` body; an error unless it answers 200.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = self.admin_get("/metrics").await?;
        if response.status != 200 {
            bail!(
                "GET /metrics answered {}: {}",
                response.status,
                response.text()
            );
        }
        Ok(response.text())
    }

    /// One sample from `/metrics`; see [`metric_value`].
    pub async fn metric(&self, series: &str) -> anyhow::Result<Option<f64>> {
        Ok(metric_value(&self.metrics().await?, series))
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends a signal (see [`crate::signal`]), e.g. `SIGTERM` to start a drain.
    pub fn signal(&self, sig: i32) -> anyhow::Result<()> {
        self.process.signal(sig)
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout).await
    }

    /// SIGKILL: a crashed node. Its clients see their connections drop without a close frame.
    pub async fn kill_hard(&mut self) -> anyhow::Result<ExitStatus> {
        self.process.kill_hard().await
    }

    /// The captured stderr and stdout so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// The current end of the log, for [`Gateway::wait_for_log_since`].
    pub fn log_mark(&self) -> LogMark {
        self.process.log().mark()
    }

    /// Waits until the output contains `needle` (searching everything kept).
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        self.process.wait_for_log(needle, timeout).await
    }

    /// Waits until the output written after `mark` contains `needle`.
    pub async fn wait_for_log_since(
        &self,
        mark: LogMark,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.process.wait_for_log_since(mark, needle, timeout).await
    }

    /// A builder for this node with the same environment, arguments and ports: after
    /// `kill_hard` or a drain, `gw.same_ports().start()` brings the node back where it was.
    pub fn same_ports(&self) -> GatewayBuilder {
        self.same_ports.clone()
    }

    /// The underlying process, for what this API does not cover.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// The value of one series in Prometheus text: `series` is a metric name, or a name with its
/// labels exactly as exposed (`name{label="v"}`). A bare name that matches several labelled
/// series returns their sum.
pub fn metric_value(metrics_text: &str, series: &str) -> Option<f64> {
    let mut found = None;
    for line in metrics_text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let key = key.trim();
        let matches = key == series
            || (!series.contains('{')
                && key.split('{').next() == Some(series)
                && key.contains('{'));
        if matches {
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_are_found_by_name_or_series() {
        let text = "# HELP a x\n# TYPE a counter\na 3\nb{node=\"x\"} 2\nb{node=\"y\"} 5\nab 7\n";
        assert_eq!(metric_value(text, "a"), Some(3.0));
        assert_eq!(metric_value(text, "b{node=\"y\"}"), Some(5.0));
        assert_eq!(metric_value(text, "b"), Some(7.0));
        assert_eq!(metric_value(text, "c"), None);
    }
}

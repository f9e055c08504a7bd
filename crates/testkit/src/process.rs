//! One child process of a fixture: its output captured, signals, and a kill when it is dropped.
//!
//! Every fixture (gateway, Redis, PostgreSQL, nginx) owns its server as a [`Process`]. The child's
//! stdout and stderr are drained line by line into an [`OutputLog`], a ring buffer that keeps the
//! last [`LOG_CAPACITY`] bytes, so a chatty child never blocks on a full pipe and a failed test can
//! show what the child said. The log is printed to stderr when the `Process` is dropped while the
//! thread panics (a failing test), or always when `TESTKIT_SHOW_LOGS` is set.
//!
//! **Invariant:** a `Process` never outlives its guard: dropping it sends its stop signal, waits a
//! short grace period, then SIGKILLs and reaps the child.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Bytes of output kept per process: the most recent ones.
pub const LOG_CAPACITY: usize = 256 * 1024;

/// Set this environment variable to print every fixture's output when it is dropped, not only
/// when a test fails.
pub const SHOW_LOGS_ENV: &str = "TESTKIT_SHOW_LOGS";

/// Signal numbers for [`Process::signal`] and the fixtures' `signal` methods (Linux values).
pub mod signal {
    pub const SIGINT: i32 = 2;
    pub const SIGQUIT: i32 = 3;
    pub const SIGKILL: i32 = 9;
    pub const SIGTERM: i32 = 15;
    /// Resumes a process stopped with [`SIGSTOP`].
    pub const SIGCONT: i32 = 18;
    /// Freezes a process without closing its sockets: a hung server, as its peers see it.
    pub const SIGSTOP: i32 = 19;
}

/// A position in an [`OutputLog`]: everything written after it can be read with
/// [`OutputLog::since`]. Take one before an action to look only at what the action caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogMark(u64);

/// The captured output of one or more successive runs of a child (a restarted server keeps
/// appending to the same log), bounded to the last [`LOG_CAPACITY`] bytes.
#[derive(Debug, Default)]
pub struct OutputLog {
    inner: Mutex<LogInner>,
}

#[derive(Debug, Default)]
struct LogInner {
    /// The newest bytes, at most `LOG_CAPACITY`.
    buf: VecDeque<u8>,
    /// Bytes ever written, so a `LogMark` stays meaningful after old bytes were dropped.
    total: u64,
}

impl OutputLog {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        // A panic while holding this lock cannot leave the buffer inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends bytes, dropping the oldest beyond the capacity.
    pub fn push(&self, bytes: &[u8]) {
        let mut inner = self.lock();
        inner.total += bytes.len() as u64;
        let bytes = &bytes[bytes.len().saturating_sub(LOG_CAPACITY)..];
        let overflow = (inner.buf.len() + bytes.len()).saturating_sub(LOG_CAPACITY);
        inner.buf.drain(..overflow);
        inner.buf.extend(bytes);
    }

    /// Appends a line of the fixture's own (e.g. "restarted"), so the log reads as a story.
    pub fn note(&self, line: &str) {
        self.push(format!("[testkit] {line}\n").as_bytes());
    }

    /// The current end of the log.
    pub fn mark(&self) -> LogMark {
        LogMark(self.lock().total)
    }

    /// Everything kept, lossily decoded as UTF-8.
    pub fn text(&self) -> String {
        let inner = self.lock();
        let (a, b) = inner.buf.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// What was written after `mark` (as much of it as is still kept).
    pub fn since(&self, mark: LogMark) -> String {
        let inner = self.lock();
        let start_of_buf = inner.total - inner.buf.len() as u64;
        let skip = usize::try_from(mark.0.saturating_sub(start_of_buf)).unwrap_or(usize::MAX);
        let bytes: Vec<u8> = inner.buf.iter().skip(skip).copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until a line containing `needle` appears after `mark`.
    pub async fn wait_for(&self, mark: LogMark, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.since(mark).contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A running child process with captured output, killed on drop.
#[derive(Debug)]
pub struct Process {
    /// Names the child in error messages and in the printed log.
    name: String,
    child: Child,
    pid: u32,
    log: Arc<OutputLog>,
    /// The tasks draining stdout and stderr; they end when the pipes close.
    drains: Vec<JoinHandle<()>>,
    /// Set once the child has been reaped.
    exit: Option<ExitStatus>,
    /// Sent first on drop, so a server can clean up (PostgreSQL's shared memory, nginx's workers).
    drop_signal: i32,
    /// How long drop waits after `drop_signal` before SIGKILL.
    drop_grace: Duration,
}

impl Process {
    /// Spawns `cmd` with stdin closed and stdout and stderr captured into a new log.
    pub fn spawn(name: impl Into<String>, cmd: Command) -> anyhow::Result<Self> {
        Self::spawn_with_log(name, cmd, OutputLog::new())
    }

    /// Like [`Process::spawn`], appending to an existing log (a restarted server).
    pub fn spawn_with_log(
        name: impl Into<String>,
        mut cmd: Command,
        log: Arc<OutputLog>,
    ) -> anyhow::Result<Self> {
        let name = name.into();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {:?}", cmd.as_std()))?;
        let pid = child
            .id()
            .with_context(|| format!("{name} exited before its pid was read"))?;
        let mut drains = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            drains.push(tokio::spawn(drain(out, Arc::clone(&log))));
        }
        if let Some(err) = child.stderr.take() {
            drains.push(tokio::spawn(drain(err, Arc::clone(&log))));
        }
        Ok(Self {
            name,
            child,
            pid,
            log,
            drains,
            exit: None,
            drop_signal: signal::SIGKILL,
            drop_grace: Duration::ZERO,
        })
    }

    /// What drop does first: send `sig`, wait up to `grace` for the exit, then SIGKILL.
    pub fn set_drop_signal(&mut self, sig: i32, grace: Duration) {
        self.drop_signal = sig;
        self.drop_grace = grace;
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log(&self) -> &Arc<OutputLog> {
        &self.log
    }

    /// The captured output so far.
    pub fn logs(&self) -> String {
        self.log.text()
    }

    /// Sends signal `sig` (see [`signal`]). Fails if the child was already reaped.
    pub fn signal(&self, sig: i32) -> anyhow::Result<()> {
        if self.exit.is_some() {
            bail!("{} (pid {}) has already exited", self.name, self.pid);
        }
        send_signal(self.pid, sig)
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().context("polling child exit")?;
        }
        Ok(self.exit)
    }

    /// Waits up to `timeout` for the child to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            match tokio::time::timeout(timeout, self.child.wait()).await {
                Ok(Ok(status)) => self.exit = Some(status),
                Ok(Err(_)) | Err(_) => return None,
            }
            self.finish_output().await;
        }
        self.exit
    }

    /// SIGKILLs the child and reaps it: a crash, as peers see it.
    pub async fn kill_hard(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        // Fails only when the child is already gone, which `wait` then reports.
        let _ = self.child.start_kill();
        let status = self.child.wait().await.context("reaping killed child")?;
        self.exit = Some(status);
        self.finish_output().await;
        Ok(status)
    }

    /// Sends `sig`, waits up to `grace` for the exit, then SIGKILLs: an orderly stop that always
    /// ends with the child gone.
    pub async fn stop(&mut self, sig: i32, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        if self.signal(sig).is_ok()
            && let Some(status) = self.wait_exit(grace).await
        {
            return Ok(status);
        }
        self.log.note(&format!(
            "{} did not exit within {grace:?} of signal {sig}; sending SIGKILL",
            self.name
        ));
        self.kill_hard().await
    }

    /// Waits until the output after `mark` contains `needle`.
    pub async fn wait_for_log_since(
        &self,
        mark: LogMark,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        if self.log.wait_for(mark, needle, timeout).await {
            Ok(())
        } else {
            bail!(
                "{} printed no line containing {needle:?} within {timeout:?}; its output:\n{}",
                self.name,
                self.log.since(mark)
            )
        }
    }

    /// Waits until the output (all of it kept) contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for_log_since(LogMark(0), needle, timeout).await
    }

    /// Lets the drain tasks copy the last output after the child exited (bounded: a grandchild
    /// may still hold the pipe open).
    async fn finish_output(&mut self) {
        for handle in self.drains.drain(..) {
            let _ = tokio::time::timeout(Duration::from_millis(500), handle).await;
        }
    }

    /// Prints the captured output to stderr under a header naming the child.
    pub fn print_logs(&self, why: &str) {
        print_log(&self.name, self.pid, &self.log, why);
    }

    /// Stops the child from synchronous code (drop): signal, bounded wait, SIGKILL, reap.
    fn stop_blocking(&mut self) {
        if matches!(self.try_exit(), Ok(Some(_))) {
            return;
        }
        if self.drop_signal != signal::SIGKILL && self.signal(self.drop_signal).is_ok() {
            let deadline = Instant::now() + self.drop_grace;
            while Instant::now() < deadline {
                if matches!(self.try_exit(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !matches!(self.try_exit(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop_blocking();
        if std::thread::panicking() {
            self.print_logs("the test failed");
        } else if show_logs_always() {
            self.print_logs("TESTKIT_SHOW_LOGS is set");
        }
    }
}

/// Whether `TESTKIT_SHOW_LOGS` asks for every fixture's output.
pub(crate) fn show_logs_always() -> bool {
    std::env::var_os(SHOW_LOGS_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

pub(crate) fn print_log(name: &str, pid: u32, log: &OutputLog, why: &str) {
    eprintln!(
        "----- {name} (pid {pid}) output, last {} KiB at most ({why}) -----\n{}\n----- end of {name} output -----",
        LOG_CAPACITY / 1024,
        log.text().trim_end()
    );
}

async fn drain(pipe: impl AsyncRead + Unpin, log: Arc<OutputLog>) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => log.push(&line),
        }
    }
}

/// Sends a signal to a process by pid.
pub fn send_signal(pid: u32, sig: i32) -> anyhow::Result<()> {
    let raw_pid = i32::try_from(pid).context("pid out of range")?;
    let pid = rustix::process::Pid::from_raw(raw_pid).context("pid 0 is not a process")?;
    let signal = rustix::process::Signal::from_named_raw(sig)
        .with_context(|| format!("{sig} is not a named signal"))?;
    rustix::process::kill_process(pid, signal)
        .with_context(|| format!("sending signal {sig} to pid {raw_pid}"))
}

/// Whether this process runs as root (then PostgreSQL must be run as another user).
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A port on 127.0.0.1 that was free a moment ago. Another process may take it before the child
/// binds it; fixtures detect "address already in use" and retry with a new port.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Whether a child's output says its port was taken: worth a retry on another port.
pub(crate) fn port_was_taken(output: &str) -> bool {
    output.contains("already in use") || output.contains("EADDRINUSE")
}

/// Whether something accepts TCP connections at `addr`.
pub async fn tcp_accepts(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

/// Finds an executable by name: on `PATH`, then in `extra_dirs` (e.g. `/usr/sbin`, which a
/// non-root `PATH` often lacks, or `/usr/lib/postgresql/15/bin`).
pub fn find_binary(name: &str, extra_dirs: &[&str]) -> anyhow::Result<std::path::PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = path_dirs
        .into_iter()
        .chain(extra_dirs.iter().map(std::path::PathBuf::from));
    for dir in candidates {
        let path = dir.join(name);
        if is_executable(&path) {
            return Ok(path);
        }
    }
    bail!(
        "`{name}` not found on PATH or in {extra_dirs:?}; scripts/test.sh installs the test dependencies"
    )
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How long one readiness probe may take before it counts as "not ready yet".
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Polls `check` every 20 ms until it returns true, the process exits (an error with its output)
/// or the deadline passes (an error with its output).
pub(crate) async fn wait_ready<F, Fut>(
    process: &mut Process,
    what: &str,
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        // A probe may hang (a port held by something that never answers): bound each one, and
        // notice the child's exit meanwhile.
        let exited = tokio::select! {
            ready = tokio::time::timeout(PROBE_TIMEOUT, check()) => {
                if ready == Ok(true) {
                    return Ok(());
                }
                process.try_exit()?
            }
            status = process.child.wait(), if process.exit.is_none() => {
                process.exit = Some(status.context("waiting for child")?);
                process.exit
            }
        };
        if let Some(status) = exited {
            process.finish_output().await;
            bail!(
                "{} exited with {status} before {what}; its output:\n{}",
                process.name,
                process.logs()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} was not {what} within {timeout:?}; its output:\n{}",
                process.name,
                process.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_bytes_and_marks_survive_truncation() {
        let log = OutputLog::default();
        log.push(b"hello\n");
        let mark = log.mark();
        log.push(b"world\n");
        assert_eq!(log.since(mark), "world\n");
        let big = vec![b'x'; LOG_CAPACITY];
        log.push(&big);
        log.push(b"tail\n");
        let text = log.text();
        assert_eq!(text.len(), LOG_CAPACITY);
        assert!(text.ends_with("xtail\n"));
        assert!(!text.contains("world"));
        assert!(log.since(mark).ends_with("tail\n"));
        let end = log.mark();
        assert_eq!(log.since(end), "");
    }

    #[tokio::test]
    async fn output_is_captured_and_a_failing_child_is_reported() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let mut p = Process::spawn("sh", cmd).unwrap();
        let err = wait_ready(&mut p, "ready", Duration::from_secs(5), || async { false })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("exited with exit status: 3"), "{err}");
        assert!(err.contains("out") && err.contains("err"), "{err}");
    }

    #[tokio::test]
    async fn stop_signals_then_reaps() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut p = Process::spawn("sleep", cmd).unwrap();
        p.wait_for_log("nothing", Duration::from_millis(30))
            .await
            .unwrap_err();
        let status = p
            .stop(signal::SIGTERM, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(!status.success());
        assert!(p.signal(signal::SIGTERM).is_err());
    }
}

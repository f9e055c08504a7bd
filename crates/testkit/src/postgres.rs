//! A private PostgreSQL server: a fresh cluster in a temp dir, trust auth over TCP on 127.0.0.1,
//! a `switchboard` database, and stop / restart on the same port and data dir.
//!
//! `initdb` and `postgres` refuse to run as root. When the tests run as root (CI), both run as
//! `nobody` through `setpriv` (util-linux, always on Debian), and the temp dir is given to that
//! user; the client tools (`psql`, `createdb`, `pg_isready`) run as the test's own user.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tempfile::TempDir;
use tokio::process::Command;

use crate::process::{self, OutputLog, Process, signal};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const PORT_ATTEMPTS: usize = 5;
/// Where Debian installs the server binaries, which are not on `PATH`.
const PG_BIN_DIRS: &[&str] = &[
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/14/bin",
    "/usr/local/pgsql/bin",
];
/// The database [`Postgres::url`] names, created on first start.
pub const DATABASE: &str = "switchboard";
/// The superuser `initdb` creates; trust auth, no password.
pub const SUPERUSER: &str = "postgres";

/// A running (or deliberately stopped) PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    /// `None` while stopped. Declared before `dir` so the server dies before its dir is removed.
    process: Option<Process>,
    port: u16,
    /// Holds the server binaries and client tools.
    bin_dir: PathBuf,
    /// uid and gid to run the server as, when the tests run as root.
    run_as: Option<(u32, u32)>,
    log: Arc<OutputLog>,
    /// Holds `data/` (the cluster) and the Unix socket; removed on drop.
    dir: TempDir,
}

impl Postgres {
    /// Creates a cluster, starts the server on a free port, waits until it accepts connections
    /// and creates the `switchboard` database.
    pub async fn start() -> anyhow::Result<Self> {
        let bin_dir = find_bin_dir()?;
        let run_as = if process::running_as_root() {
            Some(nobody_ids())
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("switchboard-pg-")
            .tempdir()
            .context("creating postgres temp dir")?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("giving {} to uid {uid}", dir.path().display()))?;
        }
        let mut pg = Self {
            process: None,
            port: 0,
            bin_dir,
            run_as,
            log: OutputLog::new(),
            dir,
        };
        pg.initdb().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            pg.port = process::free_port()?;
            let mark = pg.log.mark();
            match pg.run().await {
                Ok(()) => break,
                Err(e)
                    if attempt < PORT_ATTEMPTS && process::port_was_taken(&pg.log.since(mark)) =>
                {
                    pg.log
                        .note(&format!("port {} taken, retrying: {e:#}", pg.port));
                }
                Err(e) => return Err(e),
            }
        }
        pg.create_database(DATABASE).await?;
        Ok(pg)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `cmd` for a server binary, run as `nobody` when the tests run as root.
    fn server_command(&self, program: &str) -> Command {
        let program = self.bin_dir.join(program);
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .args(["--clear-groups", "--"])
                    .arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.current_dir(self.dir.path())
            .env("LC_ALL", "C.UTF-8")
            .env_remove("PGDATA");
        cmd
    }

    async fn initdb(&self) -> anyhow::Result<()> {
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync"])
            .args(["--locale=C.UTF-8", "--no-instructions"]);
        let mut process = Process::spawn_with_log("initdb", cmd, Arc::clone(&self.log))?;
        let status = process
            .wait_exit(Duration::from_secs(120))
            .await
            .context("initdb did not finish within 120 s")?;
        if !status.success() {
            bail!(
                "initdb failed with {status}; its output:\n{}",
                self.log.text()
            );
        }
        Ok(())
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let mut cmd = self.server_command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"]);
        let mut process = Process::spawn_with_log(
            format!("postgres:{}", self.port),
            cmd,
            Arc::clone(&self.log),
        )?;
        // fsync=off loses nothing when only the process crashes (kill_hard), and commits stay
        // synchronous, so an acknowledged write survives a crash test.
        // SIGQUIT: immediate shutdown; the postmaster takes its backends and shared memory along.
        process.set_drop_signal(signal::SIGQUIT, Duration::from_secs(5));
        let (pg_isready, port) = (self.bin_dir.join("pg_isready"), self.port);
        process::wait_ready(&mut process, "accepting connections", READY_TIMEOUT, || {
            let pg_isready = pg_isready.clone();
            async move { is_ready(&pg_isready, port).await }
        })
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

    /// `postgres://postgres@127.0.0.1:PORT/switchboard`
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// The URL of another database on this server (see [`Postgres::create_database`]).
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// The data directory, which survives [`Postgres::stop`].
    pub fn data_path(&self) -> PathBuf {
        self.data_dir()
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Creates a database (e.g. one per gateway cluster in a test) and returns its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let out = self
            .client_tool("createdb")
            .arg(name)
            .output()
            .await
            .context("running createdb")?;
        if !out.status.success() {
            bail!(
                "createdb {name} failed with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(self.url_for(name))
    }

    /// Runs SQL in the `switchboard` database with `psql -At` and returns its output without the
    /// trailing newline: one line per row, columns separated by `|`. Fails on any SQL error.
    pub async fn psql(&self, sql: &str) -> anyhow::Result<String> {
        self.psql_in(DATABASE, sql).await
    }

    /// [`Postgres::psql`] in another database.
    pub async fn psql_in(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let run = self
            .client_tool("psql")
            .args(["-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .context("psql timed out after 60 s")?
            .context("running psql")?;
        if !out.status.success() {
            bail!(
                "psql failed with {} running {sql:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout.strip_suffix('\n').unwrap_or(&stdout).to_owned())
    }

    /// A client tool (`psql`, `createdb`, ...) aimed at this server.
    fn client_tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            SUPERUSER,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD")
        .env_remove("PGDATABASE")
        .env_remove("PGSERVICE")
        .kill_on_drop(true);
        cmd
    }

    /// Fast shutdown (SIGINT: sessions are ended, the cluster is checkpointed); the data dir
    /// stays for [`Postgres::restart`].
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            let status = process
                .stop(signal::SIGINT, Duration::from_secs(30))
                .await?;
            self.log
                .note(&format!("postgres stopped by the test ({status})"));
        }
        Ok(())
    }

    /// SIGKILL of the postmaster: a crash. The next start runs crash recovery.
    pub async fn kill_hard(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill_hard().await?;
            self.log.note("postgres killed by the test");
        }
        Ok(())
    }

    /// Starts the server again on the same port and data dir (stopping it first if it runs).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.log
            .note("postgres restarting on the same port and data dir");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mark = self.log.mark();
            match self.run().await {
                Ok(()) => return Ok(()),
                // The old postmaster's backends (after kill_hard) may hold the port briefly.
                Err(_)
                    if attempt < PORT_ATTEMPTS
                        && process::port_was_taken(&self.log.since(mark)) =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Freezes the server (SIGSTOP to the postmaster; running backends keep going).
    pub fn pause(&self) -> anyhow::Result<()> {
        self.running()?.signal(signal::SIGSTOP)
    }

    /// Undoes [`Postgres::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.running()?.signal(signal::SIGCONT)
    }

    /// Freezes the whole server: the postmaster and every backend (SIGSTOP). Its clients'
    /// connections stay open and nothing answers them, as with a hung machine; a statement
    /// already sent is carried out on [`Postgres::thaw`].
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal_all(signal::SIGSTOP)
    }

    /// Undoes [`Postgres::freeze`].
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal_all(signal::SIGCONT)
    }

    /// Signals the postmaster, then each child; a child that exited meanwhile is skipped.
    fn signal_all(&self, sig: i32) -> anyhow::Result<()> {
        let mut pids = self.server_pids()?.into_iter();
        if let Some(postmaster) = pids.next() {
            process::send_signal(postmaster, sig)?;
        }
        for child in pids {
            let _ = process::send_signal(child, sig);
        }
        Ok(())
    }

    /// The postmaster and its children, from /proc.
    pub fn server_pids(&self) -> anyhow::Result<Vec<u32>> {
        let postmaster = self.running()?.pid();
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").context("reading /proc")? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    fn running(&self) -> anyhow::Result<&Process> {
        self.process
            .as_ref()
            .context("postgres is stopped; restart() it first")
    }

    /// The captured output of initdb and every server run so far.
    pub fn logs(&self) -> String {
        self.log.text()
    }
}

async fn is_ready(pg_isready: &Path, port: u16) -> bool {
    let run = Command::new(pg_isready)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", SUPERUSER, "-d", "postgres", "-t", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), run).await,
        Ok(Ok(status)) if status.success()
    )
}

/// The directory holding `initdb`, `postgres` and the client tools: the one of `initdb` on
/// `PATH` (following a symlink into Debian's versioned dir), else Debian's install dirs.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let initdb = process::find_binary("initdb", PG_BIN_DIRS)?;
    let initdb = std::fs::canonicalize(&initdb).unwrap_or(initdb);
    let dir = initdb
        .parent()
        .context("initdb has no parent dir")?
        .to_path_buf();
    for tool in ["postgres", "pg_isready", "psql", "createdb"] {
        if !dir.join(tool).exists() {
            bail!(
                "{} has initdb but no {tool}; install postgresql-15 (scripts/test.sh does)",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// uid and primary gid of `nobody`, from `/etc/passwd` (65534 on Debian).
fn nobody_ids() -> (u32, u32) {
    let fallback = (65534, 65534);
    let Ok(passwd) = std::fs::read_to_string("/etc/passwd") else {
        return fallback;
    };
    passwd
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            (name == "nobody").then_some((uid, gid))
        })
        .next()
        .unwrap_or(fallback)
}

impl Drop for Postgres {
    /// A test that fails while the server is frozen must not leave it so: stopped backends
    /// never notice their postmaster's end and would linger, holding their shared memory. Thawed,
    /// the server shuts down in order when its process is dropped next.
    fn drop(&mut self) {
        if self.process.is_some() {
            let _ = self.signal_all(signal::SIGCONT);
        }
    }
}

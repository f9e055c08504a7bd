//! A private nginx, typically a WebSocket-aware reverse proxy in front of several gateways.
//!
//! Everything nginx writes stays in a temp dir (`-p`), its error log goes to stderr (captured),
//! so it runs as root or not without touching `/var`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;
use tokio::process::Command;

use crate::process::{self, OutputLog, Process, signal};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const PORT_ATTEMPTS: usize = 5;
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"];

/// A running nginx; stopped (SIGTERM, then SIGKILL) and its dir removed on drop.
#[derive(Debug)]
pub struct Nginx {
    /// Declared before `dir` so nginx dies before its dir is removed.
    process: Process,
    addr: SocketAddr,
    /// The prefix dir: `nginx.conf`, pid file, temp paths.
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx with a complete `nginx.conf` rendered from `template`, replacing:
    /// - `{{listen}}` with `127.0.0.1:PORT` (a free port) and `{{port}}` with `PORT`,
    /// - `{{dir}}` with the prefix temp dir,
    /// - `{{temp_paths}}` with `*_temp_path` directives inside that dir (put it in `http {}`).
    ///
    /// The template must not set `daemon`, `pid` or `error_log` in the main context: the fixture
    /// sets them (`daemon off`, a pid file in the dir, errors to stderr). When the tests run as
    /// root, `user root;` is added unless the template has a `user` directive, so workers can use
    /// the temp dir.
    pub async fn start(template: &str) -> anyhow::Result<Self> {
        let bin = process::find_binary("nginx", EXTRA_DIRS)?;
        let log = OutputLog::new();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mark = log.mark();
            match Self::try_start(&bin, template, Arc::clone(&log)).await {
                Ok(nginx) => return Ok(nginx),
                Err(e) if attempt < PORT_ATTEMPTS && process::port_was_taken(&log.since(mark)) => {
                    log.note(&format!("port taken, retrying: {e:#}"));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts nginx as a WebSocket-aware reverse proxy to `upstreams`, sticky by client address
    /// (`hash $remote_addr consistent`); see [`proxy_config`].
    pub async fn start_proxy(upstreams: &[SocketAddr]) -> anyhow::Result<Self> {
        Self::start(&proxy_config(upstreams)).await
    }

    async fn try_start(bin: &Path, template: &str, log: Arc<OutputLog>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-nginx-")
            .tempdir()
            .context("creating nginx temp dir")?;
        let port = process::free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = render(template, addr, dir.path());
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, &config)
            .with_context(|| format!("writing {}", conf_path.display()))?;
        std::fs::create_dir_all(dir.path().join("logs"))?;
        let pid_path = dir.path().join("nginx.pid");
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .args(["-e", "stderr", "-g"])
            .arg(format!(
                "daemon off; pid {}; error_log stderr notice;",
                pid_path.display()
            ))
            .current_dir(dir.path());
        let mut process = Process::spawn_with_log(format!("nginx:{port}"), cmd, log)?;
        // SIGTERM: fast shutdown, the master takes its workers along.
        process.set_drop_signal(signal::SIGTERM, Duration::from_secs(3));
        process::wait_ready(&mut process, "accepting connections", READY_TIMEOUT, || {
            process::tcp_accepts(addr)
        })
        .await?;
        Ok(Self { process, addr, dir })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// `http://127.0.0.1:PORT`
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The prefix dir holding `nginx.conf`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends a signal to the master (SIGHUP reloads the config).
    pub fn signal(&self, sig: i32) -> anyhow::Result<()> {
        self.process.signal(sig)
    }

    /// The captured error log (and anything else nginx printed).
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// Stops nginx (SIGQUIT: graceful; SIGKILL after `grace`).
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<()> {
        self.process.stop(signal::SIGQUIT, grace).await?;
        Ok(())
    }
}

fn render(template: &str, addr: SocketAddr, dir: &Path) -> String {
    let dir_text = dir.display().to_string();
    let temp_paths = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|kind| format!("    {kind}_temp_path {dir_text}/tmp_{kind};\n"))
        .collect::<String>();
    let mut config = template
        .replace("{{listen}}", &addr.to_string())
        .replace("{{port}}", &addr.port().to_string())
        .replace("{{dir}}", &dir_text)
        .replace("{{temp_paths}}", temp_paths.trim_start());
    let has_user = config
        .lines()
        .any(|line| line.trim_start().starts_with("user "));
    if process::running_as_root() && !has_user {
        config.insert_str(0, "user root;\n");
    }
    config
}

/// The config of [`Nginx::start_proxy`], as a template for [`Nginx::start`]: upgrade headers
/// passed through, long read timeouts for idle sockets, and an upstream that is sticky by client
/// address and fails over to the next node when one refuses connections.
pub fn proxy_config(upstreams: &[SocketAddr]) -> String {
    let servers = upstreams
        .iter()
        .map(|addr| format!("        server {addr} max_fails=1 fail_timeout=2s;\n"))
        .collect::<String>();
    format!(
        r#"worker_processes 1;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    {{{{temp_paths}}}}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream gateways {{
        hash $remote_addr consistent;
{servers}    }}
    server {{
        listen {{{{listen}}}};
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_connect_timeout 2s;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
        }}
    }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_template_renders_every_placeholder() {
        let upstream: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let config = render(
            &proxy_config(&[upstream]),
            "127.0.0.1:8080".parse().unwrap(),
            Path::new("/tmp/x"),
        );
        assert!(!config.contains("{{"), "{config}");
        assert!(config.contains("listen 127.0.0.1:8080;"));
        assert!(config.contains("server 127.0.0.1:9001 "));
        assert!(config.contains("proxy_temp_path /tmp/x/tmp_proxy;"));
    }
}

//! A real HTTP server standing in for the app's backend: it records every request (hooks,
//! webhooks) and answers each as the test's script says, with a status, a body and a delay.
//! Keep-alive, as the gateway's pooled client expects. [`Receiver::start_tls`] serves HTTPS
//! with the test certificate of `keys/tls-server.pem` (signed by `keys/tls-ca.pem`).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use switchboard_testkit::receiver::{Receiver, Reply};
//! let backend = Receiver::start(|_request| Reply::json(&serde_json::json!({"allow": true}))).await?;
//! // Point the gateway at backend.url("/hooks/join"), act, then:
//! let calls = backend.wait_for(1, std::time::Duration::from_secs(10)).await?;
//! assert_eq!(calls[0].path, "/hooks/join");
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest request the receiver reads.
const MAX_REQUEST_BYTES: usize = 8 << 20;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When its last byte arrived.
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "request body is not JSON: {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Whether the Standard Webhooks headers verify with `secret` (`whsec_<base64>`): some
    /// `v1,` signature in `webhook-signature` is the HMAC-SHA256 of
    /// `<webhook-id>.<webhook-timestamp>.<body>`. Written from the specification, apart from the
    /// gateway's code, so a test holds the gateway to the spec rather than to itself.
    pub fn signed_with(&self, secret: &str) -> bool {
        let (Some(id), Some(timestamp), Some(signatures)) = (
            self.header("webhook-id"),
            self.header("webhook-timestamp"),
            self.header("webhook-signature"),
        ) else {
            return false;
        };
        let Some(key) = secret
            .strip_prefix("whsec_")
            .and_then(|b64| BASE64.decode(b64).ok())
        else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
            return false;
        };
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(&self.body);
        let expected = BASE64.encode(mac.finalize().into_bytes());
        signatures
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .any(|s| s == expected)
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// Waited before answering: a slow backend.
    pub delay: Duration,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn json(value: &serde_json::Value) -> Self {
        Self {
            status: 200,
            body: value.to_string().into_bytes(),
            delay: Duration::ZERO,
        }
    }

    /// This status with an empty body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Script = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// The server; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    /// `https` or `http`.
    scheme: &'static str,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .finish()
    }
}

struct State {
    script: Box<Script>,
    requests: Mutex<Vec<Recorded>>,
    arrived: Notify,
}

impl Receiver {
    /// Listens on a free port of 127.0.0.1 and answers every request with `script`'s reply.
    pub async fn start(
        script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        Self::listen(script, None).await
    }

    /// As [`Receiver::start`], over TLS with the test certificate: trust `keys/tls-ca.pem`
    /// ([`crate::tls::CA_FILE`]) to reach it.
    pub async fn start_tls(
        script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        Self::listen(script, Some(tls_acceptor()?)).await
    }

    async fn listen(
        script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> anyhow::Result<Self> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the receiver")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            script: Box::new(script),
            requests: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let serving = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&serving);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let served = match tls {
                        None => serve(stream, &state).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => serve(stream, &state).await,
                            Err(error) => Err(error.into()),
                        },
                    };
                    if let Err(error) = served {
                        tracing::debug!(%error, "receiver connection ended");
                    }
                });
            }
        });
        Ok(Self {
            addr,
            scheme,
            state,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`, or `https://` for [`Receiver::start_tls`].
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// Waits until at least `n` requests arrived; all of them so far.
    pub async fn wait_for(&self, n: usize, within: Duration) -> anyhow::Result<Vec<Recorded>> {
        let deadline = Instant::now() + within;
        loop {
            let arrived = self.state.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let requests = self.requests();
            if requests.len() >= n {
                return Ok(requests);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                bail!(
                    "{} requests arrived within {within:?}, expected {n}: {:?}",
                    requests.len(),
                    requests.iter().map(|r| &r.path).collect::<Vec<_>>()
                );
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Answers the requests of one connection until it closes.
/// The test certificate and its key, ready to serve.
fn tls_acceptor() -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(crate::tls::SERVER.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the test certificate")?;
    let key = PrivateKeyDer::from_pem_slice(crate::tls::SERVER_KEY.as_bytes())
        .context("reading the test certificate's key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    state: &State,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some((recorded, keep_alive)) = read_request(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let reply = (state.script)(&recorded);
        lock(&state.requests).push(recorded);
        state.arrived.notify_waiters();
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let head = format!(
            "HTTP/1.1 {} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
            reply.status,
            reply.body.len(),
            if keep_alive {
                ""
            } else {
                "Connection: close\r\n"
            }
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&reply.body).await?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// The next request, and whether the connection stays open after it; `None` at a clean end.
async fn read_request(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> anyhow::Result<Option<(Recorded, bool)>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(head_len) = request.parse(buf)? {
            let method = request.method.unwrap_or_default().to_owned();
            let path = request.path.unwrap_or_default().to_owned();
            let headers: Vec<(String, String)> = request
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map(|(_, v)| v.trim().parse())
                .transpose()
                .context("bad content-length")?
                .unwrap_or(0);
            if length > MAX_REQUEST_BYTES {
                bail!("request body of {length} bytes");
            }
            while buf.len() < head_len + length {
                if read_more(stream, buf).await? == 0 {
                    bail!("connection closed inside a body");
                }
            }
            let body = buf[head_len..head_len + length].to_vec();
            buf.drain(..head_len + length);
            let keep_alive = !headers
                .iter()
                .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
            let recorded = Recorded {
                method,
                path,
                headers,
                body,
                at: Instant::now(),
            };
            return Ok(Some((recorded, keep_alive)));
        }
        if buf.len() > MAX_REQUEST_BYTES {
            bail!("request head too large");
        }
        if read_more(stream, buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside a request head");
        }
    }
}

async fn read_more(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    buf.reserve(16 * 1024);
    stream.read_buf(buf).await
}

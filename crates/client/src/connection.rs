//! One WebSocket to a gateway, speaking typed frames: the layer under [`Client`](crate::Client),
//! usable on its own by programs that want the protocol without reconnects (tests, load
//! generators, probes).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use switchboard_protocol::{ClientFrame, Codec, ServerFrame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::error::ConnectError;

/// The close code reported when a connection ended without a close frame (RFC 6455's 1006).
pub const ABNORMAL_CLOSURE: u16 = 1006;
/// The close code reported for a close frame without a code (RFC 6455's 1005).
pub const NO_STATUS: u16 = 1005;

/// How to open a connection.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Sent as `Authorization: Bearer <token>`; without it, send an `auth` frame first.
    pub bearer: Option<String>,
    /// The encoding, offered as its subprotocol (`switchboard.v1.json` by default).
    pub codec: Codec,
    /// Offers exactly these subprotocols instead of the codec's (none when empty): the codec is
    /// then the one the server picks, JSON if none. For tests of the negotiation.
    pub subprotocols: Option<Vec<String>>,
    /// Sent as `Origin` (servers that restrict origins refuse others with 403).
    pub origin: Option<String>,
    /// Any other request headers.
    pub headers: Vec<(String, String)>,
    /// Deadline for the TCP connect, TLS and the upgrade.
    pub timeout: Duration,
    /// Largest frame accepted from the server.
    pub max_frame_bytes: usize,
    /// TLS for `wss://` URLs: the Mozilla roots by default ([`tls_config`](crate::tls_config)
    /// adds your own CA).
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            bearer: None,
            codec: Codec::Json,
            subprotocols: None,
            origin: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            max_frame_bytes: 16 << 20,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl std::fmt::Debug for ConnectOptions {
    // The token is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("codec", &self.codec)
            .field("origin", &self.origin)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What a connection received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Frame(ServerFrame),
    /// A message this client cannot read as a server frame (a newer server's frame type, or
    /// garbage); the protocol says to ignore it.
    Unreadable(String),
    /// The connection ended: the server's close code and reason, or [`ABNORMAL_CLOSURE`].
    Closed {
        code: u16,
        reason: String,
    },
}

/// The byte stream under a connection: TCP, or TLS over TCP.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// The WebSocket under a [`Connection`], for tools that need raw messages.
pub type RawWebSocket = WebSocketStream<Box<dyn Transport>>;

/// One open WebSocket and its codec.
pub struct Connection {
    ws: RawWebSocket,
    codec: Codec,
    subprotocol: Option<String>,
    closed: Option<(u16, String)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens `url` (`ws://` or, with the `tls` feature, `wss://`).
    pub async fn open(url: &str, options: &ConnectOptions) -> Result<Self, ConnectError> {
        tokio::time::timeout(options.timeout, Self::open_now(url, options))
            .await
            .map_err(|_| ConnectError::Timeout(options.timeout))?
    }

    async fn open_now(url: &str, options: &ConnectOptions) -> Result<Self, ConnectError> {
        let bad_url = |why: &str| ConnectError::Url {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let mut request = url
            .into_client_request()
            .map_err(|e| bad_url(&e.to_string()))?;
        let uri = request.uri().clone();
        let host = uri.host().ok_or_else(|| bad_url("no host"))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(bad_url("the scheme must be ws or wss")),
        };
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let headers = request.headers_mut();
        let mut set = |name: &str, value: &str| -> Result<(), ConnectError> {
            let header = || ConnectError::Header {
                name: name.to_owned(),
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| header())?;
            let value = HeaderValue::from_str(value).map_err(|_| header())?;
            headers.append(name, value);
            Ok(())
        };
        let offers = match &options.subprotocols {
            Some(offers) => offers.join(", "),
            None => options.codec.subprotocol().to_owned(),
        };
        if !offers.is_empty() {
            set("sec-websocket-protocol", &offers)?;
        }
        if let Some(token) = &options.bearer {
            set("authorization", &format!("Bearer {token}"))?;
        }
        if let Some(origin) = &options.origin {
            set("origin", origin)?;
        }
        for (name, value) in &options.headers {
            set(name, value)?;
        }
        // Brackets off an IPv6 literal for the socket address.
        let tcp =
            TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Transport> = if tls {
            Box::new(tls_stream(host, tcp, options).await?)
        } else {
            Box::new(tcp)
        };
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(options.max_frame_bytes))
            .max_frame_size(Some(options.max_frame_bytes));
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(response) => ConnectError::Refused {
                        status: response.status().as_u16(),
                        headers: response
                            .headers()
                            .iter()
                            .map(|(name, value)| {
                                let value = String::from_utf8_lossy(value.as_bytes());
                                (name.to_string(), value.into_owned())
                            })
                            .collect(),
                        body: response
                            .body()
                            .as_deref()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .unwrap_or_default(),
                    },
                    other => ConnectError::WebSocket(other),
                })?;
        let subprotocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned());
        // A server that picked no subprotocol speaks JSON.
        let codec = subprotocol
            .as_deref()
            .and_then(Codec::from_subprotocol)
            .unwrap_or(Codec::Json);
        Ok(Self {
            ws,
            codec,
            subprotocol,
            closed: None,
        })
    }

    /// The codec the server picked.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The `Sec-WebSocket-Protocol` the server answered with.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The WebSocket itself, for raw messages (what a client must not send, in tests). Reading
    /// from it bypasses [`recv`](Self::recv)'s bookkeeping of how the connection ended.
    pub fn raw(&mut self) -> &mut RawWebSocket {
        &mut self.ws
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), tungstenite::Error> {
        let bytes = self
            .codec
            .encode(frame)
            .map_err(|e| tungstenite::Error::Io(std::io::Error::other(e)))?;
        let message = match self.codec {
            Codec::Json => Message::Text(
                String::from_utf8(bytes)
                    .map_err(|e| tungstenite::Error::Io(std::io::Error::other(e)))?
                    .into(),
            ),
            Codec::MsgPack => Message::Binary(bytes.into()),
        };
        self.ws.send(message).await
    }

    /// The next frame, or how the connection ended. After `Closed`, returns `Closed` again.
    pub async fn recv(&mut self) -> Incoming {
        loop {
            if let Some((code, reason)) = &self.closed {
                return Incoming::Closed {
                    code: *code,
                    reason: reason.clone(),
                };
            }
            let (bytes, binary) = match self.ws.next().await {
                Some(Ok(Message::Text(text))) => (Vec::from(text.as_bytes()), false),
                Some(Ok(Message::Binary(bytes))) => (bytes.to_vec(), true),
                Some(Ok(Message::Close(frame))) => {
                    self.closed = Some(frame.map_or((NO_STATUS, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    }));
                    // Reading on lets tungstenite send its close reply: a complete closing
                    // handshake.
                    let _ = tokio::time::timeout(Duration::from_millis(500), async {
                        while let Some(Ok(_)) = self.ws.next().await {}
                    })
                    .await;
                    continue;
                }
                // Pings are answered by tungstenite; pongs and raw frames carry nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Err(e)) => {
                    self.closed = Some((ABNORMAL_CLOSURE, e.to_string()));
                    continue;
                }
                None => {
                    self.closed = Some((ABNORMAL_CLOSURE, String::new()));
                    continue;
                }
            };
            let excerpt = || String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned();
            if binary != self.codec.is_binary() {
                let kind = if binary { "binary" } else { "text" };
                return Incoming::Unreadable(format!(
                    "a {kind} frame on a {:?} connection: {:?}",
                    self.codec,
                    excerpt()
                ));
            }
            return match self.codec.decode::<ServerFrame>(&bytes) {
                Ok(frame) => Incoming::Frame(frame),
                Err(why) => Incoming::Unreadable(format!("{why}: {:?}", excerpt())),
            };
        }
    }

    /// Closes with `code` and waits (briefly) for the server's close.
    pub async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: WsCloseCode::from(code),
            reason: reason.to_owned().into(),
        };
        if self.ws.close(Some(frame)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = self.ws.next().await {}
            })
            .await;
        }
    }
}

#[cfg(feature = "tls")]
async fn tls_stream(
    host: &str,
    tcp: TcpStream,
    options: &ConnectOptions,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
    let config = match &options.tls {
        Some(config) => Arc::clone(config),
        None => crate::tls::tls_config(&[]).map_err(ConnectError::Tls)?,
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
        ConnectError::Url {
            url: host.to_owned(),
            why: e.to_string(),
        }
    })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(ConnectError::Tls)
}

#[cfg(not(feature = "tls"))]
async fn tls_stream(_: &str, _: TcpStream, _: &ConnectOptions) -> Result<TcpStream, ConnectError> {
    Err(ConnectError::Url {
        url: "wss://".into(),
        why: "built without the `tls` feature".into(),
    })
}

//! Opening authenticated connections, and the few typed requests the setup phase needs.
//!
//! The hot path (counting deliveries) does not live here: see `fanout.rs`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use switchboard_client::Hs256Minter;
use switchboard_protocol::{AckResult, ClientFrame, ErrorBody, ErrorCode, RoomId, ServerFrame};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::procfs::Proc;
use crate::raw::RawWs;
use crate::socketio;

pub type Ws = WebSocketStream<TcpStream>;

/// Lifetime of every token: longer than any bounded run.
const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Every frame starts with its `type` (serde writes the tag first), so a prefix test is enough
/// to classify a frame without parsing it.
pub const SESSION_READY_PREFIX: &str = r#"{"type":"session:ready""#;
pub const ACK_PREFIX: &str = r#"{"type":"ack""#;

/// Which protocol the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    /// The Switchboard protocol (docs/protocol.md), authenticated with `Authorization: Bearer`.
    Switchboard,
    /// Socket.IO 4 over Engine.IO 4 on a raw WebSocket (`bench/peers/socketio`), authenticated
    /// with `{"token": …}` in the connect packet.
    #[value(name = "socketio")]
    SocketIo,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Self::Switchboard => "switchboard",
            Self::SocketIo => "socketio",
        }
    }
}

/// How a Switchboard client listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// A WebSocket session on `/ws`.
    Ws,
    /// A Server-Sent Events stream on `/sse`.
    Sse,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Sse => "sse",
        }
    }
}

/// Where and how to connect; shared by every scenario.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// WebSocket URL of the server (loopback). Repeat it to spread connections (receivers, idle
    /// connections) round-robin over several nodes. For `--dialect socketio`, a URL like
    /// ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: Vec<String>,
    /// Protocol the server speaks.
    #[arg(long, value_enum, default_value_t = Dialect::Switchboard)]
    pub dialect: Dialect,
    /// HS256 secret the server was started with (SWITCHBOARD_JWT_SECRET), at least 32 bytes.
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Server process id, to read its memory and CPU time from /proc. Repeat it for a cluster:
    /// the figures are then the sums over every node.
    #[arg(long)]
    pub gateway_pid: Vec<u32>,
    /// Process id of a backend the servers use (redis-server, PostgreSQL's postmaster): its CPU
    /// time, with that of its children in `fanout` (PostgreSQL's backends), is reported on its
    /// own and not counted as other processes' noise. Repeatable.
    #[arg(long)]
    pub backend_pid: Vec<u32>,
    /// Spread connections over 127.0.0.1 ..= 127.0.0.N as source addresses, when one address
    /// runs out of ephemeral ports.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub source_ips: u8,
    /// Connections being opened (handshake plus setup) at any one time.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
}

/// One server URL, resolved.
#[derive(Debug)]
pub struct Endpoint {
    url: String,
    /// `host:port` of the URL, for a `Host` header.
    authority: String,
    addr: SocketAddr,
}

impl Endpoint {
    pub async fn resolve(url: &str, dialect: Dialect, source_ips: u8) -> anyhow::Result<Self> {
        let request = url
            .into_client_request()
            .with_context(|| format!("bad URL {url}"))?;
        let authority = request
            .uri()
            .authority()
            .with_context(|| format!("URL {url} has no host"))?;
        let host_port = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        let addr = tokio::net::lookup_host(&host_port)
            .await?
            .find(SocketAddr::is_ipv4)
            .with_context(|| format!("{host_port} has no IPv4 address"))?;
        if source_ips > 1 && !addr.ip().is_loopback() {
            bail!("--source-ips > 1 only works against a loopback server");
        }
        if dialect == Dialect::SocketIo {
            socketio::check_url(url)?;
        }
        Ok(Self {
            url: url.to_owned(),
            authority: host_port,
            addr,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host:port`, for a `Host` header.
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// The resolved targets plus the token mint.
#[derive(Debug)]
pub struct Target {
    endpoints: Vec<Endpoint>,
    pub dialect: Dialect,
    source_ips: u8,
    mint: Hs256Minter,
    /// The server processes (one per node), for memory and CPU.
    pub gateway: Vec<Proc>,
    /// Backends of the servers (redis-server), for CPU.
    pub backends: Vec<Proc>,
}

impl Target {
    pub async fn new(args: &TargetArgs) -> anyhow::Result<Self> {
        let mut endpoints = Vec::with_capacity(args.url.len());
        for url in &args.url {
            endpoints.push(Endpoint::resolve(url, args.dialect, args.source_ips).await?);
        }
        if endpoints.is_empty() {
            bail!("give at least one --url");
        }
        Ok(Self {
            endpoints,
            dialect: args.dialect,
            source_ips: args.source_ips,
            mint: Hs256Minter::new(&args.secret).context("--secret")?,
            gateway: args.gateway_pid.iter().copied().map(Proc::Pid).collect(),
            backends: args.backend_pid.iter().copied().map(Proc::Pid).collect(),
        })
    }

    /// A URL of the same dialect and source addresses (e.g. the publishers' node), resolved.
    pub async fn resolve(&self, url: &str) -> anyhow::Result<Endpoint> {
        Endpoint::resolve(url, self.dialect, self.source_ips).await
    }

    /// The endpoint connection number `index` goes to: round-robin over every `--url`.
    pub fn endpoint(&self, index: usize) -> &Endpoint {
        &self.endpoints[index % self.endpoints.len()]
    }

    /// A token whose `sub` and `name` are `user`, valid longer than any bounded run.
    pub fn token(&self, user: &str) -> anyhow::Result<String> {
        Ok(self.mint.token(user, user, TOKEN_TTL)?)
    }

    /// The first `--url`.
    pub fn first(&self) -> &Endpoint {
        &self.endpoints[0]
    }

    /// Connects connection number `index` to its endpoint (round-robin over `--url`).
    pub async fn open(
        &self,
        index: usize,
        user: &str,
        config: WebSocketConfig,
    ) -> anyhow::Result<Ws> {
        self.open_at(self.endpoint(index), index, user, config)
            .await
    }

    /// Connects connection number `index` to `endpoint` as user `user` and waits until the
    /// session is ready: with `Authorization: Bearer` and `session:ready` for Switchboard, with
    /// the Engine.IO and Socket.IO handshakes for Socket.IO.
    pub async fn open_at(
        &self,
        endpoint: &Endpoint,
        index: usize,
        user: &str,
        config: WebSocketConfig,
    ) -> anyhow::Result<Ws> {
        let stream = self.connect(endpoint, index).await?;
        self.upgrade(endpoint, stream, user, config).await
    }

    /// The TCP connection of connection number `index`, from its source address.
    pub async fn connect(&self, endpoint: &Endpoint, index: usize) -> anyhow::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        if self.source_ips > 1 {
            let last = 1 + (index % usize::from(self.source_ips)) as u8;
            socket.bind(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
                0,
            ))?;
        }
        let stream = socket
            .connect(endpoint.addr)
            .await
            .with_context(|| format!("connecting to {}", endpoint.addr))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Connects connection number `index` (round-robin over `--url`) as user `user` with the
    /// raw client ([`RawWs`], Switchboard only) and waits until the session is ready.
    pub async fn open_raw(
        &self,
        index: usize,
        user: &str,
        read_buffer_bytes: usize,
    ) -> anyhow::Result<RawWs> {
        debug_assert_eq!(self.dialect, Dialect::Switchboard);
        let endpoint = self.endpoint(index);
        let stream = self.connect(endpoint, index).await?;
        let bearer = format!("Bearer {}", self.token(user)?);
        let headers = [("Authorization", bearer.as_str())];
        let mut ws = RawWs::handshake(stream, &endpoint.url, &headers, read_buffer_bytes).await?;
        while !ws
            .next_text()
            .await?
            .starts_with(SESSION_READY_PREFIX.as_bytes())
        {}
        Ok(ws)
    }

    /// The WebSocket upgrade on a connected `stream`, as user `user`, up to a ready session.
    pub async fn upgrade(
        &self,
        endpoint: &Endpoint,
        stream: TcpStream,
        user: &str,
        config: WebSocketConfig,
    ) -> anyhow::Result<Ws> {
        let mut request = endpoint.url.as_str().into_client_request()?;
        let token = self.token(user)?;
        if self.dialect == Dialect::Switchboard {
            let bearer = format!("Bearer {token}");
            request
                .headers_mut()
                .insert(AUTHORIZATION, HeaderValue::from_str(&bearer)?);
        }
        let (mut ws, _response) = client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|error| match error {
                WsError::Http(response) => anyhow::anyhow!(
                    "upgrade refused with HTTP {}: {}",
                    response.status(),
                    response
                        .body()
                        .as_deref()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default()
                        .trim()
                ),
                other => anyhow::Error::new(other).context("websocket handshake"),
            })?;
        match self.dialect {
            Dialect::Switchboard => loop {
                match next_text(&mut ws).await? {
                    text if text.starts_with(SESSION_READY_PREFIX) => return Ok(ws),
                    _ => continue,
                }
            },
            Dialect::SocketIo => {
                socketio::handshake(&mut ws, &token).await?;
                Ok(ws)
            }
        }
    }
}

/// The next text frame; pings are answered by tungstenite on the next write.
async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(Some(frame)))) => {
                bail!(
                    "closed by the gateway: {} {}",
                    u16::from(frame.code),
                    frame.reason
                )
            }
            Some(Ok(Message::Close(None))) => bail!("closed by the gateway"),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
            None => bail!("connection ended"),
        }
    }
}

/// A connection that can send a request and wait for its ack (the setup phase).
pub trait Requests {
    /// Sends a request and waits for its ack, skipping every other frame.
    async fn request(
        &mut self,
        frame: &ClientFrame,
    ) -> anyhow::Result<Result<AckResult, ErrorBody>>;
}

impl Requests for Ws {
    async fn request(
        &mut self,
        frame: &ClientFrame,
    ) -> anyhow::Result<Result<AckResult, ErrorBody>> {
        let id = frame.request_id().context("request without an id")?;
        self.send(Message::text(serde_json::to_string(frame)?))
            .await?;
        loop {
            if let Some(outcome) = ack_of(next_text(self).await?.as_bytes(), id)? {
                return Ok(outcome);
            }
        }
    }
}

impl Requests for RawWs {
    async fn request(
        &mut self,
        frame: &ClientFrame,
    ) -> anyhow::Result<Result<AckResult, ErrorBody>> {
        let id = frame.request_id().context("request without an id")?;
        self.send_text(&serde_json::to_vec(frame)?).await?;
        loop {
            if let Some(outcome) = ack_of(&self.next_text().await?, id)? {
                return Ok(outcome);
            }
        }
    }
}

/// The outcome `frame` carries if it is the ack of request `id`.
fn ack_of(frame: &[u8], id: u64) -> anyhow::Result<Option<Result<AckResult, ErrorBody>>> {
    if !frame.starts_with(ACK_PREFIX.as_bytes()) {
        return Ok(None);
    }
    match serde_json::from_slice(frame).context("unreadable ack")? {
        ServerFrame::Ack {
            id: acked,
            result,
            error,
        } if acked == id => match (result, error) {
            (_, Some(error)) => Ok(Some(Err(error))),
            (Some(result), None) => Ok(Some(Ok(result))),
            (None, None) => bail!("ack {id} has neither result nor error"),
        },
        _ => Ok(None),
    }
}

/// Makes this connection's user a member of `room`, creating the room if it does not exist.
pub async fn create_and_join(ws: &mut impl Requests, room: &RoomId) -> anyhow::Result<()> {
    let create = ClientFrame::RoomCreate {
        id: 1,
        room_id: room.clone(),
        name: None,
        kind: Default::default(),
        password: None,
    };
    match ws.request(&create).await? {
        Ok(_) => {}
        Err(error) if error.code == ErrorCode::RoomExists => {}
        Err(error) => bail!("room:create {room}: {} {}", error.code, error.message),
    }
    join(ws, room).await
}

/// Joins an existing room.
pub async fn join(ws: &mut impl Requests, room: &RoomId) -> anyhow::Result<()> {
    let join = ClientFrame::RoomJoin {
        id: 2,
        room_id: room.clone(),
        password: None,
        since_seq: None,
    };
    match ws.request(&join).await? {
        Ok(_) => Ok(()),
        Err(error) => bail!("room:join {room}: {} {}", error.code, error.message),
    }
}

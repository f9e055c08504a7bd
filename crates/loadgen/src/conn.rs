//! Opening authenticated connections, and the few typed requests the setup phase needs.
//!
//! The hot path (counting deliveries) does not live here: see `fanout.rs`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use switchboard_protocol::{AckResult, ClientFrame, ErrorBody, ErrorCode, RoomId, ServerFrame};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::procfs::Proc;
use crate::token::Mint;

pub type Ws = WebSocketStream<TcpStream>;

/// Every frame starts with its `type` (serde writes the tag first), so a prefix test is enough
/// to classify a frame without parsing it.
pub const SESSION_READY_PREFIX: &str = r#"{"type":"session:ready""#;
pub const ACK_PREFIX: &str = r#"{"type":"ack""#;

/// Where and how to connect; shared by every scenario.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// WebSocket URL of the gateway (loopback).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// HS256 secret the gateway was started with (SWITCHBOARD_JWT_SECRET), at least 32 bytes.
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Gateway process id, to read its memory and CPU time from /proc.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// Spread connections over 127.0.0.1 ..= 127.0.0.N as source addresses, when one address
    /// runs out of ephemeral ports.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub source_ips: u8,
    /// Connections being opened (handshake plus setup) at any one time.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
}

/// A resolved target plus the token mint.
#[derive(Debug)]
pub struct Target {
    url: String,
    addr: SocketAddr,
    source_ips: u8,
    mint: Mint,
    pub gateway: Option<Proc>,
}

impl Target {
    pub async fn new(args: &TargetArgs) -> anyhow::Result<Self> {
        let request = args
            .url
            .as_str()
            .into_client_request()
            .with_context(|| format!("bad --url {}", args.url))?;
        let authority = request
            .uri()
            .authority()
            .with_context(|| format!("--url {} has no host", args.url))?;
        let host_port = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        let addr = tokio::net::lookup_host(&host_port)
            .await?
            .find(SocketAddr::is_ipv4)
            .with_context(|| format!("{host_port} has no IPv4 address"))?;
        if args.source_ips > 1 && !addr.ip().is_loopback() {
            bail!("--source-ips > 1 only works against a loopback gateway");
        }
        Ok(Self {
            url: args.url.clone(),
            addr,
            source_ips: args.source_ips,
            mint: Mint::new(&args.secret)?,
            gateway: args.gateway_pid.map(Proc::Pid),
        })
    }

    /// Connects connection number `index` as user `user` (with `Authorization: Bearer`) and
    /// waits for `session:ready`.
    pub async fn open(
        &self,
        index: usize,
        user: &str,
        config: WebSocketConfig,
    ) -> anyhow::Result<Ws> {
        let socket = TcpSocket::new_v4()?;
        if self.source_ips > 1 {
            let last = 1 + (index % usize::from(self.source_ips)) as u8;
            socket.bind(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
                0,
            ))?;
        }
        let stream = socket
            .connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let mut request = self.url.as_str().into_client_request()?;
        let bearer = format!("Bearer {}", self.mint.token(user)?);
        request
            .headers_mut()
            .insert(AUTHORIZATION, HeaderValue::from_str(&bearer)?);
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
        loop {
            match next_text(&mut ws).await? {
                text if text.starts_with(SESSION_READY_PREFIX) => return Ok(ws),
                _ => continue,
            }
        }
    }
}

/// The next text frame; pings are answered by tungstenite on the next write.
async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => bail!("closed by the gateway: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
            None => bail!("connection ended"),
        }
    }
}

/// Sends a request and waits for its ack, skipping every other frame.
pub async fn request(
    ws: &mut Ws,
    frame: &ClientFrame,
) -> anyhow::Result<Result<AckResult, ErrorBody>> {
    let id = frame.request_id().context("request without an id")?;
    ws.send(Message::text(serde_json::to_string(frame)?))
        .await?;
    loop {
        let text = next_text(ws).await?;
        if !text.starts_with(ACK_PREFIX) {
            continue;
        }
        if let ServerFrame::Ack {
            id: acked,
            result,
            error,
        } = serde_json::from_str(&text).context("unreadable ack")?
            && acked == id
        {
            return match (result, error) {
                (_, Some(error)) => Ok(Err(error)),
                (Some(result), None) => Ok(Ok(result)),
                (None, None) => bail!("ack {id} has neither result nor error"),
            };
        }
    }
}

/// Makes this connection's user a member of `room`, creating the room if it does not exist.
pub async fn create_and_join(ws: &mut Ws, room: &RoomId) -> anyhow::Result<()> {
    let create = ClientFrame::RoomCreate {
        id: 1,
        room_id: room.clone(),
        name: None,
        kind: Default::default(),
        password: None,
    };
    match request(ws, &create).await? {
        Ok(_) => {}
        Err(error) if error.code == ErrorCode::RoomExists => {}
        Err(error) => bail!("room:create {room}: {} {}", error.code, error.message),
    }
    join(ws, room).await
}

/// Joins an existing room.
pub async fn join(ws: &mut Ws, room: &RoomId) -> anyhow::Result<()> {
    let join = ClientFrame::RoomJoin {
        id: 2,
        room_id: room.clone(),
        password: None,
        since_seq: None,
    };
    match request(ws, &join).await? {
        Ok(_) => Ok(()),
        Err(error) => bail!("room:join {room}: {} {}", error.code, error.message),
    }
}

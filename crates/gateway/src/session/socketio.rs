//! A session's connection as Socket.IO v5 over Engine.IO v4 on a WebSocket (`/socket.io/`), so
//! that `socket.io-client` apps connect unchanged: the connect packet's auth payload is the
//! `auth` frame, events are frames and frames are events (`crate::socketio::mapping`), acks
//! carry the replies, and Engine.IO pings probe liveness. The session's rules are the same as
//! on `/ws`; only the wire differs.

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_protocol::{CloseCode, Codec, ErrorBody, ErrorCode, ServerFrame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::connection::{Connection, End, Inbound, within};
use super::websocket::written;
use crate::app::App;
use crate::error::SessionError;
use crate::outbound::Outbound;
use crate::socketio::mapping::{auth_frame, event_of_frame, frame_of_event};
use crate::socketio::packet::{self, EnginePacket, MAIN_NAMESPACE, SocketKind, SocketPacket};

/// Queued frames written per flush.
const MAX_BATCH: usize = 256;
/// Time allowed for a close handshake before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Request ids the connection gives events sent without an ack: their replies are not
/// written. Above any id `socket.io-client` counts to.
const UNACKED_IDS: u64 = 1 << 53;

/// A Socket.IO client's WebSocket.
pub(crate) struct SocketIo<S> {
    ws: WebSocketStream<S>,
    write_timeout: Duration,
    /// The connect packet was answered: the socket is connected.
    connected: bool,
    /// The next id for an event without an ack.
    next_unacked: u64,
    /// Binary attachments still to skip (binary events are not supported).
    skip_attachments: usize,
}

impl<S> std::fmt::Debug for SocketIo<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIo")
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

impl<S> SocketIo<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Wraps a socket whose upgrade was answered with 101 and sends the Engine.IO open packet;
    /// `None` when the client is gone already.
    pub(crate) async fn accept(socket: S, app: &App) -> Option<Self> {
        let ws =
            WebSocketStream::from_raw_socket(socket, Role::Server, Some(app.ws_config())).await;
        let mut wire = Self {
            ws,
            write_timeout: app.config.write_timeout(),
            connected: false,
            next_unacked: UNACKED_IDS,
            skip_attachments: 0,
        };
        let interval = app.config.heartbeat_interval();
        let open = packet::open(
            &engine_sid(),
            millis(interval),
            // The session closes a connection silent for the heartbeat timeout.
            millis(app.config.heartbeat_timeout().saturating_sub(interval)),
            app.config.max_frame_bytes,
        );
        wire.write_text(open).await.ok()?;
        Some(wire)
    }

    async fn write_text(&mut self, text: String) -> Result<(), SessionError> {
        written(within(self.write_timeout, self.ws.send(WsMessage::text(text))).await)
    }

    /// Answers an event's ack with a refusal the connection makes itself.
    async fn refuse(&mut self, ack_id: Option<u64>, message: &str) -> Result<(), SessionError> {
        let Some(id) = ack_id else {
            return Ok(());
        };
        let error = ErrorBody {
            code: ErrorCode::InvalidField,
            message: message.to_owned(),
        };
        let payload = serde_json::json!({ "error": error }).to_string();
        self.write_text(packet::ack(id, &payload)).await
    }

    /// What one Socket.IO packet from the client means.
    async fn socket_packet(&mut self, text: &str) -> Result<Inbound, SessionError> {
        let Ok(socket) = SocketPacket::parse(text) else {
            tracing::debug!("unreadable Socket.IO packet");
            return Err(SessionError::Close(CloseCode::ProtocolError));
        };
        if socket.namespace != MAIN_NAMESPACE {
            if socket.kind == SocketKind::Connect {
                let refusal = packet::connect_error(socket.namespace, "Invalid namespace", None);
                self.write_text(refusal).await?;
            }
            return Ok(Inbound::Alive);
        }
        match socket.kind {
            SocketKind::Connect if !self.connected => {
                Ok(Inbound::Frame(auth_frame(socket.data).into()))
            }
            SocketKind::Connect | SocketKind::Ack => Ok(Inbound::Alive),
            SocketKind::Disconnect => Err(SessionError::Gone),
            SocketKind::Event => {
                let id = match socket.ack_id {
                    Some(id) => id,
                    None => {
                        self.next_unacked += 1;
                        self.next_unacked
                    }
                };
                match frame_of_event(socket.data, id) {
                    Ok((_, json)) => Ok(Inbound::Frame(json.into())),
                    Err(error) => {
                        self.refuse(socket.ack_id, &error.to_string()).await?;
                        Ok(Inbound::Alive)
                    }
                }
            }
            SocketKind::BinaryEvent | SocketKind::BinaryAck => {
                self.skip_attachments = socket.attachments;
                self.refuse(socket.ack_id, "binary events are not supported")
                    .await?;
                Ok(Inbound::Alive)
            }
            SocketKind::ConnectError => Err(SessionError::Close(CloseCode::ProtocolError)),
        }
    }

    /// Writes `frame` (its JSON, `type` first) as the packets the client expects.
    fn packets_of(&mut self, json: &str) -> Vec<String> {
        let Some((name, argument)) = event_of_frame(json) else {
            return Vec::new();
        };
        match name.as_str() {
            "session:ready" if !self.connected => {
                self.connected = true;
                let conn_id = serde_json::from_str::<serde_json::Value>(json)
                    .ok()
                    .and_then(|ready| ready["connId"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                vec![packet::connected(&conn_id), packet::event(&name, &argument)]
            }
            "ack" => ack_packet(json).into_iter().collect(),
            _ => vec![packet::event(&name, &argument)],
        }
    }
}

/// `43<id>[result]` or `43<id>[{"error": ...}]`; nothing for an event sent without an ack.
fn ack_packet(json: &str) -> Option<String> {
    let Ok(ServerFrame::Ack { id, result, error }) = serde_json::from_str::<ServerFrame>(json)
    else {
        return None;
    };
    if id >= UNACKED_IDS {
        return None;
    }
    let payload = match (result, error) {
        (Some(result), _) => serde_json::to_string(&result).ok()?,
        (None, Some(error)) => serde_json::json!({ "error": error }).to_string(),
        (None, None) => "{}".to_owned(),
    };
    Some(packet::ack(id, &payload))
}

impl<S> Connection for SocketIo<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn codec(&self) -> Codec {
        Codec::Json
    }

    type Incoming = Option<Result<WsMessage, WsError>>;

    fn incoming(&mut self) -> impl Future<Output = Self::Incoming> + Send {
        self.ws.next()
    }

    async fn inbound(&mut self, incoming: Self::Incoming) -> Result<Inbound, SessionError> {
        let text = match incoming {
            None | Some(Err(_)) => return Err(SessionError::Gone),
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Binary(_))) => {
                // An attachment of a refused binary event; nothing else comes as binary.
                if self.skip_attachments == 0 {
                    return Err(SessionError::Close(CloseCode::ProtocolError));
                }
                self.skip_attachments -= 1;
                return Ok(Inbound::Alive);
            }
            Some(Ok(WsMessage::Ping(_))) => {
                written(within(self.write_timeout, self.ws.flush()).await)?;
                return Ok(Inbound::Alive);
            }
            Some(Ok(WsMessage::Pong(_) | WsMessage::Frame(_))) => return Ok(Inbound::Alive),
            Some(Ok(WsMessage::Close(_))) => {
                let _ = self.ws.flush().await;
                return Err(SessionError::Gone);
            }
        };
        match EnginePacket::parse(text.as_str()) {
            Ok(EnginePacket::Message(socket)) => self.socket_packet(socket).await,
            Ok(EnginePacket::Pong | EnginePacket::Noop | EnginePacket::Upgrade) => {
                Ok(Inbound::Alive)
            }
            Ok(EnginePacket::Ping(data)) => {
                self.write_text(format!("3{data}")).await?;
                Ok(Inbound::Alive)
            }
            Ok(EnginePacket::Close) => Err(SessionError::Gone),
            Err(error) => {
                tracing::debug!(%error, "unreadable Engine.IO packet");
                Err(SessionError::Close(CloseCode::ProtocolError))
            }
        }
    }

    async fn send(&mut self, frame: &ServerFrame) -> Result<(), SessionError> {
        let json = serde_json::to_string(frame).map_err(|error| {
            tracing::error!(%error, "cannot encode frame");
            SessionError::Close(CloseCode::InternalError)
        })?;
        let packets = self.packets_of(&json);
        let ws = &mut self.ws;
        let batch = async {
            for packet in packets {
                ws.feed(WsMessage::text(packet)).await?;
            }
            ws.flush().await
        };
        written(within(self.write_timeout, batch).await)
    }

    async fn send_queued(
        &mut self,
        first: Outbound,
        more: &mut (dyn FnMut() -> Option<Outbound> + Send),
    ) -> Result<(), SessionError> {
        let mut packets = Vec::new();
        let mut next = Some(first);
        while let Some(outbound) = next.take() {
            if let WsMessage::Text(json) = &*outbound {
                packets.extend(self.packets_of(json.as_str()));
            }
            if packets.len() < MAX_BATCH {
                next = more();
            }
        }
        let ws = &mut self.ws;
        let batch = async {
            for packet in packets {
                ws.feed(WsMessage::text(packet)).await?;
            }
            ws.flush().await
        };
        written(within(self.write_timeout, batch).await)
    }

    async fn probe(&mut self) -> Result<(), SessionError> {
        self.write_text(packet::PING.to_owned()).await
    }

    /// Before the socket connected, a refusal is a connect error (`connect_error` with the
    /// close code in `data`); after, a code that says not to reconnect disconnects the socket
    /// (`41`: the client stays away), any other only closes the WebSocket, and the client
    /// reconnects.
    async fn close(&mut self, end: End) {
        let (frame, packet) = match end {
            End::Close(code) => {
                let packet = if !self.connected {
                    let data = serde_json::json!({ "code": code.code() });
                    Some(packet::connect_error(
                        MAIN_NAMESPACE,
                        code.reason(),
                        Some(&data),
                    ))
                } else if !code.reconnect() {
                    Some(packet::DISCONNECT.to_owned())
                } else {
                    None
                };
                let frame = CloseFrame {
                    code: WsCloseCode::from(code.code()),
                    reason: code.reason().into(),
                };
                (Some(frame), packet)
            }
            End::ByClient => (None, None),
        };
        let ws = &mut self.ws;
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if let Some(packet) = packet
                && ws.send(WsMessage::text(packet)).await.is_err()
            {
                return;
            }
            if ws.close(frame).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

/// An Engine.IO session id: unique enough to tell sessions apart in a client's logs.
fn engine_sid() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_go_to_acks_and_unacked_events_get_none() {
        let ok = r#"{"type":"ack","id":3,"result":{"kind":"ok"}}"#;
        assert_eq!(ack_packet(ok).as_deref(), Some(r#"433[{"kind":"ok"}]"#));
        let refused =
            r#"{"type":"ack","id":4,"error":{"code":"NOT_A_MEMBER","message":"join first"}}"#;
        assert_eq!(
            ack_packet(refused).as_deref(),
            Some(r#"434[{"error":{"code":"NOT_A_MEMBER","message":"join first"}}]"#)
        );
        let unacked = format!(
            r#"{{"type":"ack","id":{},"result":{{"kind":"ok"}}}}"#,
            UNACKED_IDS + 1
        );
        assert_eq!(ack_packet(&unacked), None);
    }
}

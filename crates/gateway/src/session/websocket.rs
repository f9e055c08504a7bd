//! A session's connection over a raw WebSocket (`/ws`): JSON in text frames or MessagePack in
//! binary frames, WebSocket pings for liveness, and the close handshake of RFC 6455.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_protocol::{CloseCode, Codec, ServerFrame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::connection::{Connection, End, Inbound, within};
use crate::app::App;
use crate::error::SessionError;
use crate::outbound::{Outbound, encode};

/// Queued frames written per flush.
const MAX_BATCH: usize = 256;
/// Time allowed for a close handshake before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A WebSocket the upgrade handed over.
pub(crate) struct WebSocket<S> {
    ws: WebSocketStream<S>,
    /// Text frames for JSON, binary frames for MessagePack.
    codec: Codec,
    /// Longest one write (or batch of writes) may take before the client counts as too slow.
    write_timeout: Duration,
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Wraps a socket whose upgrade was answered with 101.
    pub(crate) async fn accept(socket: S, codec: Codec, app: &App) -> Self {
        let ws =
            WebSocketStream::from_raw_socket(socket, Role::Server, Some(app.ws_config())).await;
        Self {
            ws,
            codec,
            write_timeout: app.config.write_timeout(),
        }
    }

    async fn write(&mut self, message: WsMessage) -> Result<(), SessionError> {
        written(within(self.write_timeout, self.ws.send(message)).await)
    }

    async fn flush(&mut self) -> Result<(), SessionError> {
        written(within(self.write_timeout, self.ws.flush()).await)
    }
}

impl<S> Connection for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn codec(&self) -> Codec {
        self.codec
    }

    type Incoming = Option<Result<WsMessage, WsError>>;

    fn incoming(&mut self) -> impl Future<Output = Self::Incoming> + Send {
        self.ws.next()
    }

    async fn inbound(&mut self, incoming: Self::Incoming) -> Result<Inbound, SessionError> {
        let message = match incoming {
            None => return Err(SessionError::Gone),
            Some(Ok(message)) => message,
            Some(Err(WsError::Capacity(error))) => {
                tracing::debug!(%error, "frame too big");
                return Err(SessionError::Close(CloseCode::MessageTooBig));
            }
            Some(Err(WsError::Utf8(error))) => {
                tracing::debug!(%error, "text frame is not UTF-8");
                return Err(SessionError::Close(CloseCode::InvalidPayload));
            }
            Some(Err(WsError::Protocol(error))) => {
                tracing::debug!(%error, "websocket protocol error");
                return Err(SessionError::Close(CloseCode::ProtocolError));
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "socket error");
                return Err(SessionError::Gone);
            }
        };
        Ok(match message {
            WsMessage::Text(text) if !self.codec.is_binary() => Inbound::Frame(text.into()),
            WsMessage::Binary(bytes) if self.codec.is_binary() => Inbound::Frame(bytes),
            WsMessage::Text(_) | WsMessage::Binary(_) => Inbound::WrongFraming,
            WsMessage::Ping(_) => {
                // tungstenite queued the pong; it goes out with this flush.
                self.flush().await?;
                Inbound::Alive
            }
            WsMessage::Pong(_) | WsMessage::Frame(_) => Inbound::Alive,
            WsMessage::Close(_) => {
                // tungstenite queued the echo of the client's close frame: send it, so the
                // client sees its own code rather than an abnormal closure (RFC 6455 §5.5.1).
                let _ = self.flush().await;
                return Err(SessionError::Gone);
            }
        })
    }

    async fn send(&mut self, frame: &ServerFrame) -> Result<(), SessionError> {
        let message = encode(self.codec, frame).map_err(|error| {
            tracing::error!(%error, "cannot encode frame");
            SessionError::Close(CloseCode::InternalError)
        })?;
        self.write(message).await
    }

    async fn send_queued(
        &mut self,
        first: Outbound,
        more: &mut (dyn FnMut() -> Option<Outbound> + Send),
    ) -> Result<(), SessionError> {
        let ws = &mut self.ws;
        let batch = async {
            ws.feed(Arc::unwrap_or_clone(first)).await?;
            for _ in 1..MAX_BATCH {
                match more() {
                    Some(next) => ws.feed(Arc::unwrap_or_clone(next)).await?,
                    None => break,
                }
            }
            ws.flush().await
        };
        written(within(self.write_timeout, batch).await)
    }

    async fn probe(&mut self) -> Result<(), SessionError> {
        self.write(WsMessage::Ping(Default::default())).await
    }

    /// Sends the close frame (for a close by the client, tungstenite answers its frame with the
    /// same code) and waits briefly for the client's, so the frame is not lost to a reset while
    /// unread data is still in the socket.
    async fn close(&mut self, end: End) {
        let frame = match end {
            End::Close(code) => Some(CloseFrame {
                code: WsCloseCode::from(code.code()),
                reason: code.reason().into(),
            }),
            End::ByClient => None,
        };
        let ws = &mut self.ws;
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if ws.close(frame).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

/// A write's outcome: done, the peer gone, or too slow (the caller treats the client as a slow
/// consumer).
pub(super) fn written(outcome: Option<Result<(), WsError>>) -> Result<(), SessionError> {
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(error)) => {
            tracing::debug!(%error, "write failed");
            Err(SessionError::Gone)
        }
        None => Err(SessionError::Close(CloseCode::SlowConsumer)),
    }
}

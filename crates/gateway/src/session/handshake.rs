//! First-frame authentication, for clients (browsers) that cannot send an Authorization header.

use futures_util::StreamExt;
use switchboard_protocol::{ClientFrame, CloseCode, Codec};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::End;
use crate::app::App;
use crate::auth::{AuthError, Identity};

/// Waits for the `auth` frame. Anything else first, a bad token, or silence past the auth
/// timeout ends the connection with a documented close code.
pub(super) async fn await_auth<S>(
    app: &App,
    ws: &mut WebSocketStream<S>,
    codec: Codec,
) -> Result<Identity, End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = app.config.auth_timeout();
    let first = tokio::time::timeout(deadline, first_data_frame(ws));
    let bytes = match first.await {
        Err(_) => return Err(End::Close(CloseCode::AuthTimeout)),
        Ok(None) => return Err(End::ByClient),
        Ok(Some(bytes)) => bytes,
    };
    let token = match codec.decode_client(&bytes) {
        Ok(ClientFrame::Auth { token }) => token,
        Ok(other) => {
            tracing::debug!(kind = other.kind().wire_name(), "first frame is not auth");
            return Err(End::Close(CloseCode::AuthFailed));
        }
        Err(error) => {
            tracing::debug!(%error, "first frame refused");
            return Err(End::Close(CloseCode::AuthFailed));
        }
    };
    match app.auth.verify(&token) {
        Ok(identity) => Ok(identity),
        Err(AuthError::Expired) => Err(End::Close(CloseCode::TokenExpired)),
        Err(error) => {
            tracing::debug!(%error, "auth frame refused");
            Err(End::Close(CloseCode::AuthFailed))
        }
    }
}

/// The first text or binary frame; pings are answered by tungstenite meanwhile.
async fn first_data_frame<S>(ws: &mut WebSocketStream<S>) -> Option<bytes::Bytes>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await? {
            Ok(WsMessage::Text(text)) => return Some(text.into()),
            Ok(WsMessage::Binary(bytes)) => return Some(bytes),
            Ok(WsMessage::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

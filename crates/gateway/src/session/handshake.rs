//! First-frame authentication, for clients (browsers) that cannot send an Authorization header.

use switchboard_protocol::{ClientFrame, CloseCode};

use super::{Connection, End, Inbound};
use crate::app::App;
use crate::auth::Identity;
use crate::error::SessionError;

/// Waits for the `auth` frame. Anything else first, a token that is not valid now (bad, expired
/// or not yet valid), or silence past the auth timeout ends the connection with a documented
/// close code: 4001, or 4002 for silence.
pub(super) async fn await_auth<C: Connection>(app: &App, wire: &mut C) -> Result<Identity, End> {
    let deadline = app.config.auth_timeout();
    let bytes = match tokio::time::timeout(deadline, first_frame(wire)).await {
        Err(_) => return Err(End::Close(CloseCode::AuthTimeout)),
        Ok(Err(end)) => return Err(end),
        Ok(Ok(bytes)) => bytes,
    };
    let token = match wire.codec().decode_client(&bytes) {
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
    app.auth.verify(&token).await.map_err(|error| {
        tracing::debug!(%error, "auth frame refused");
        End::Close(CloseCode::AuthFailed)
    })
}

/// The first frame; pings are answered meanwhile, and framing of the other codec counts as a
/// frame that is not `auth`.
async fn first_frame<C: Connection>(wire: &mut C) -> Result<bytes::Bytes, End> {
    loop {
        match wire.recv().await {
            Ok(Inbound::Frame(bytes)) => return Ok(bytes),
            Ok(Inbound::Alive) => {}
            Ok(Inbound::WrongFraming) => return Err(End::Close(CloseCode::AuthFailed)),
            Err(SessionError::Close(code)) => return Err(End::Close(code)),
            Err(_) => return Err(End::ByClient),
        }
    }
}

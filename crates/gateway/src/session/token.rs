//! A live connection's token: `auth:expiring` a configured time before it expires, and
//! `auth:refresh`, which replaces it with a newer token of the same user.

use std::time::SystemTime;

use switchboard_protocol::{AckResult, ErrorCode, ServerFrame};
use tokio::time::Instant;

use super::{Connection, Session, time_left};
use crate::error::SessionError;
use crate::wall_clock::unix_millis;

impl<C: Connection> Session<C> {
    /// When `auth:expiring` is due for the current token; `None` once sent, or when notices
    /// are off.
    pub(super) fn expiry_notice_at(&self) -> Option<Instant> {
        if self.expiry_told {
            return None;
        }
        let notice = self.app.config.token_refresh_notice()?;
        // A token shorter-lived than the notice is told at once.
        Some(
            self.expires_at
                .checked_sub(notice)
                .unwrap_or_else(Instant::now),
        )
    }

    pub(super) async fn tell_expiry(&mut self) -> Result<(), SessionError> {
        self.expiry_told = true;
        let left = self.expires_at.saturating_duration_since(Instant::now());
        let expires_at = unix_millis(SystemTime::now() + left);
        self.wire
            .send(&ServerFrame::AuthExpiring { expires_at })
            .await
    }

    /// `auth:refresh`: a token that verifies now and names this connection's user replaces
    /// the current one. Refused otherwise, and the current one stays.
    pub(super) async fn refresh_token(
        &mut self,
        token: String,
    ) -> Result<Option<AckResult>, SessionError> {
        let refused = |message: String| SessionError::refused(ErrorCode::InvalidToken, message);
        let identity = self
            .app
            .auth
            .verify(&token)
            .await
            .map_err(|error| refused(format!("the token is not valid: {error}")))?;
        if identity.user.id != self.user.id {
            return Err(refused(
                "the token is another user's: a connection keeps its user".to_owned(),
            ));
        }
        let Some(left) = time_left(identity.expires_at) else {
            return Err(refused("the token has expired".to_owned()));
        };
        self.expires_at = Instant::now() + left;
        self.expiry_told = false;
        tracing::debug!(conn = %self.conn, user = %self.user.id, "token refreshed");
        Ok(Some(AckResult::Auth {
            expires_at: unix_millis(identity.expires_at),
        }))
    }
}

//! How a failed request ends: a reply (the connection stays) or a close.
//!
//! This is the one place that maps backend errors to what a client sees. Client faults are
//! answered precisely; backend faults are logged here once, with their cause, and the client
//! sees only a code.

use switchboard_protocol::{CloseCode, ErrorCode};

use crate::presence::PresenceError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Answer the request with this code; the connection stays open.
    #[error("{code}: {message}")]
    Refused { code: ErrorCode, message: String },
    /// End the session with this close code.
    #[error("closing: {0:?}")]
    Close(CloseCode),
    /// The socket failed or the peer vanished; nothing more can be sent.
    #[error("connection lost")]
    Gone,
}

impl SessionError {
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for SessionError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::RoomExists(room) => {
                Self::refused(ErrorCode::RoomExists, format!("room {room} already exists"))
            }
            StoreError::RoomNotFound(room) => Self::refused(
                ErrorCode::RoomNotFound,
                format!("room {room} does not exist"),
            ),
            StoreError::SelfDirect => Self::refused(
                ErrorCode::InvalidRecipient,
                "cannot send a direct message to yourself",
            ),
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "store unavailable");
                Self::refused(
                    ErrorCode::StoreUnavailable,
                    "storage is unavailable; retry later",
                )
            }
        }
    }
}

impl From<PresenceError> for SessionError {
    fn from(error: PresenceError) -> Self {
        tracing::warn!(%error, "presence backend failed");
        Self::refused(ErrorCode::Internal, "presence is unavailable; retry later")
    }
}

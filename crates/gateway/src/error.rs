//! How a failed step ends: a reply (the connection stays) or a close.
//!
//! [`SessionError::verdict`] is the one place that decides, for every transport. Client faults
//! are answered precisely; backend faults keep their cause, are logged once there with it, and
//! the client sees only a code.

use std::error::Error;
use std::fmt;

use switchboard_protocol::{CloseCode, ErrorCode};

use crate::hooks::HookError;
use crate::presence::PresenceError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A client fault: answer the request with this code; the connection stays open.
    #[error("{code}: {message}")]
    Refused { code: ErrorCode, message: String },
    /// A backend fault: answered with a retryable code; the connection stays open.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// End the session with this close code.
    #[error("closing: {0:?}")]
    Close(CloseCode),
    /// The socket failed or the peer vanished; nothing more can be sent.
    #[error("connection lost")]
    Gone,
}

/// A backend that could not do its part of a request.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Store(StoreError),
    #[error("presence backend failed")]
    Presence(#[from] PresenceError),
    #[error("password hashing failed")]
    Passwords(#[source] Box<dyn Error + Send + Sync>),
    #[error("{0} hook")]
    Hook(&'static str, #[source] HookError),
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The server closes with this code.
    Close(CloseCode),
    /// The client closed, or the connection dropped.
    ByClient,
}

/// What a failed step means for the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Answer the request (or send an `error` frame) with this code; the connection stays.
    Reply { code: ErrorCode, message: String },
    /// End the session.
    Close(End),
}

impl SessionError {
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
        }
    }

    /// Reply or close, and the one log line of a backend fault, with its cause.
    pub fn verdict(self) -> Verdict {
        match self {
            Self::Refused { code, message } => Verdict::Reply { code, message },
            Self::Backend(error) => {
                tracing::warn!(error = %Chain(&error), "backend failed");
                let (code, message) = error.reply();
                Verdict::Reply {
                    code,
                    message: message.into(),
                }
            }
            Self::Close(code) => Verdict::Close(End::Close(code)),
            Self::Gone => Verdict::Close(End::ByClient),
        }
    }
}

impl BackendError {
    /// The code and message the client sees: never the cause.
    fn reply(&self) -> (ErrorCode, &'static str) {
        match self {
            Self::Store(StoreError::OutcomeUnknown(_)) => (
                ErrorCode::OutcomeUnknown,
                "storage did not confirm in time; retry with the same clientMsgId to learn the outcome",
            ),
            Self::Store(_) => (
                ErrorCode::StoreUnavailable,
                "storage is unavailable; retry later",
            ),
            Self::Presence(_) => (ErrorCode::Internal, "presence is unavailable; retry later"),
            Self::Passwords(_) => (ErrorCode::Internal, "internal error"),
            Self::Hook(..) => (
                ErrorCode::HookUnavailable,
                "the app's backend did not answer; retry later",
            ),
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
            error @ (StoreError::Unavailable(_) | StoreError::OutcomeUnknown(_)) => {
                Self::Backend(BackendError::Store(error))
            }
        }
    }
}

impl From<End> for SessionError {
    fn from(end: End) -> Self {
        match end {
            End::Close(code) => Self::Close(code),
            End::ByClient => Self::Gone,
        }
    }
}

impl From<PresenceError> for SessionError {
    fn from(error: PresenceError) -> Self {
        Self::Backend(error.into())
    }
}

/// Displays an error with its causes, `outer: inner: innermost`, each said once.
#[derive(Debug)]
pub struct Chain<'a>(pub &'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Many errors repeat their source in their own message: say each text once.
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_backend_fault_is_answered_with_a_code_and_keeps_its_cause() {
        let cause = Outer(std::io::Error::other("connection refused"));
        let error = SessionError::from(StoreError::unavailable(cause));
        let SessionError::Backend(backend) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(
            Chain(backend).to_string(),
            "store unavailable: outer: connection refused"
        );
        let Verdict::Reply { code, message } = error.verdict() else {
            panic!("a reply")
        };
        assert_eq!(code, ErrorCode::StoreUnavailable);
        assert!(!message.contains("refused"), "no internals: {message}");
    }

    #[test]
    fn an_unconfirmed_write_is_answered_as_outcome_unknown() {
        let error = SessionError::from(StoreError::outcome_unknown("no answer"));
        assert!(matches!(
            error.verdict(),
            Verdict::Reply {
                code: ErrorCode::OutcomeUnknown,
                ..
            }
        ));
    }

    #[test]
    fn answers_and_closes_are_told_apart() {
        assert!(matches!(
            SessionError::from(StoreError::SelfDirect).verdict(),
            Verdict::Reply {
                code: ErrorCode::InvalidRecipient,
                ..
            }
        ));
        assert_eq!(
            SessionError::Close(CloseCode::SlowConsumer).verdict(),
            Verdict::Close(End::Close(CloseCode::SlowConsumer))
        );
        assert_eq!(SessionError::Gone.verdict(), Verdict::Close(End::ByClient));
    }
}

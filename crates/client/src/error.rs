//! What can go wrong, typed: a refusal by the server keeps its protocol code, a transport failure
//! its cause.

use switchboard_protocol::ErrorCode;

/// Why a request, a send or a connect failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the request (an `ack` with an `error`).
    #[error("refused with {code:?}: {message}")]
    Refused { code: ErrorCode, message: String },
    /// Not connected now (a request is not queued; a send is: it waits in the outbox).
    #[error("not connected")]
    Disconnected,
    /// No answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The outbox already holds its limit of unsent messages.
    #[error("the outbox holds {0} unsent messages already")]
    OutboxFull(usize),
    /// The client stopped for good: closed by the app, or by a close code that says not to
    /// reconnect (the [`Event::Closed`](crate::Event::Closed) event says which).
    #[error("the client is closed")]
    Closed,
    /// An answer of an unexpected kind: a server that does not speak this protocol version.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// The WebSocket could not be opened.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

impl Error {
    /// The same error for another caller of the same send: a refusal as it is, anything else as
    /// its message.
    pub(crate) fn copy(&self) -> Self {
        match self {
            Self::Refused { code, message } => Self::Refused {
                code: *code,
                message: message.clone(),
            },
            Self::Disconnected => Self::Disconnected,
            Self::Timeout(after) => Self::Timeout(*after),
            Self::OutboxFull(limit) => Self::OutboxFull(*limit),
            Self::Closed => Self::Closed,
            other => Self::Unexpected(other.to_string()),
        }
    }

    /// Whether the same request may succeed later, unchanged (docs/protocol.md, "Error codes").
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Refused { code, .. } => code.retryable(),
            Self::Disconnected | Self::Timeout(_) => true,
            Self::OutboxFull(_) | Self::Closed | Self::Unexpected(_) | Self::Connect(_) => false,
        }
    }
}

/// Why a WebSocket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid URL {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("invalid header {name:?}")]
    Header { name: String },
    /// Refused before the upgrade, with the HTTP response (docs/protocol.md, "Handshake
    /// refusals"): its status, headers (`Retry-After`) and body.
    #[error("handshake refused with HTTP {status}: {body}")]
    Refused {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    #[error("no session within {0:?}")]
    Timeout(std::time::Duration),
    #[error("connection closed before the session started (close code {code})")]
    ClosedEarly { code: u16, reason: String },
    #[error("the token source failed: {0}")]
    Token(#[source] BoxError),
    #[cfg(feature = "tls")]
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
}

impl ConnectError {
    /// Whether trying again later may work: not after a refused token (401), origin (403) or
    /// subprotocol (400), nor a malformed URL; after anything else, with backoff.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Url { .. } | Self::Header { .. } => false,
            Self::Refused { status, .. } => !matches!(status, 400 | 401 | 403),
            Self::ClosedEarly { code, .. } => {
                switchboard_protocol::CloseCode::from_code(*code).is_none_or(|c| c.reconnect())
            }
            _ => true,
        }
    }
}

/// An error from the app's token function.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

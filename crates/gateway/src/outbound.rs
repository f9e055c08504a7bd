//! What flows from the hub to a session: encoded frames, and the kick that ends a session.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use switchboard_protocol::{CloseCode, Codec, EncodeError, ServerFrame};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Encodes a frame for one codec: JSON as a text message, MessagePack as a binary one.
pub fn encode(codec: Codec, frame: &ServerFrame) -> Result<WsMessage, EncodeError> {
    Ok(match codec {
        Codec::Json => WsMessage::Text(serde_json::to_string(frame)?.into()),
        Codec::MsgPack => WsMessage::Binary(rmp_serde::to_vec_named(frame)?.into()),
    })
}

/// What a session queue holds: a pointer to an encoded message shared by every recipient. One
/// word per slot keeps an idle connection's queue small.
pub type Outbound = Arc<WsMessage>;

/// A frame encoded at most once per codec, shared by every recipient: a WebSocket message clone
/// is a reference-count increment, not a copy.
#[derive(Debug)]
pub struct SharedFrame<'a> {
    frame: &'a ServerFrame,
    json: Option<Outbound>,
    msgpack: Option<Outbound>,
}

impl<'a> SharedFrame<'a> {
    pub fn new(frame: &'a ServerFrame) -> Self {
        Self {
            frame,
            json: None,
            msgpack: None,
        }
    }

    /// The encoded message for `codec`; `None` only if encoding failed (a bug, logged once).
    pub fn get(&mut self, codec: Codec) -> Option<Outbound> {
        let slot = match codec {
            Codec::Json => &mut self.json,
            Codec::MsgPack => &mut self.msgpack,
        };
        if slot.is_none() {
            match encode(codec, self.frame) {
                Ok(message) => *slot = Some(Arc::new(message)),
                Err(error) => {
                    tracing::error!(%error, kind = ?self.frame.kind(), "cannot encode frame");
                    return None;
                }
            }
        }
        slot.clone()
    }
}

/// Ends a session from outside its task: slow consumer, per-user limit, remote kick.
///
/// The first kick wins; the session reads the code when it wakes.
#[derive(Debug, Default)]
pub struct Kick {
    code: AtomicU16,
    notify: Notify,
}

impl Kick {
    /// Asks the session to close with `code`. Returns false if it was already kicked.
    pub fn kick(&self, code: CloseCode) -> bool {
        let first = self
            .code
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.notify.notify_one();
        }
        first
    }

    /// Resolves once the session has been kicked, with the close code to use.
    pub async fn kicked(&self) -> CloseCode {
        loop {
            if let Some(code) = CloseCode::from_code(self.code.load(Ordering::Acquire)) {
                return code;
            }
            self.notify.notified().await;
        }
    }
}

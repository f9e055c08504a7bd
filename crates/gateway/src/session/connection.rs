//! The connection layer: what a session needs from its wire, and nothing of the rules.
//!
//! A [`Connection`] carries frames of one session: it reads the client's frames, writes the
//! session's replies and its queued frames, probes liveness and ends with a close. The session
//! (authorization, validation, ordering, resume) never sees the wire, so another transport
//! drives the same session by implementing this trait: [`WebSocket`](super::websocket::WebSocket)
//! at `/ws`, [`Sse`](super::sse::Sse) at `/sse`.
//!
//! **Invariant:** a connection has one writer, its session task.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use switchboard_protocol::{Codec, ServerFrame};

pub(crate) use crate::error::End;
use crate::error::SessionError;
use crate::outbound::Outbound;

/// What arrived from the client.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A frame in the session's codec, to decode.
    Frame(Bytes),
    /// A frame in the other codec's framing (text on a MessagePack connection, binary on a
    /// JSON one): refused with `MALFORMED_FRAME`, the connection stays.
    WrongFraming,
    /// Proof of life only (a WebSocket ping or pong).
    Alive,
}

/// One client's wire, as a session drives it. Every method returns
/// [`SessionError::Close`] for a peer that broke the wire's rules or a write that timed out,
/// and [`SessionError::Gone`] when the peer closed or vanished.
pub(crate) trait Connection: Send + 'static {
    /// The codec the client chose; queued frames come encoded in it.
    fn codec(&self) -> Codec;

    /// What [`Connection::incoming`] yields, for [`Connection::inbound`] to make sense of.
    type Incoming: Send;

    /// Waits for what the client sends next. Every idle session holds this future, so it does
    /// nothing but wait; the work is in [`Connection::inbound`].
    fn incoming(&mut self) -> impl Future<Output = Self::Incoming> + Send;

    /// What arrived means: a frame, proof of life, or the end (after answering whatever the
    /// wire's rules ask, such as a pong or the echo of a close).
    fn inbound(
        &mut self,
        incoming: Self::Incoming,
    ) -> impl Future<Output = Result<Inbound, SessionError>> + Send;

    /// The next thing the client sent: [`Connection::incoming`], then [`Connection::inbound`].
    fn recv(&mut self) -> impl Future<Output = Result<Inbound, SessionError>> + Send {
        async move {
            let incoming = self.incoming().await;
            self.inbound(incoming).await
        }
    }

    /// Writes one frame of the session's own, now: a reply precedes anything queued later.
    fn send(
        &mut self,
        frame: &ServerFrame,
    ) -> impl Future<Output = Result<(), SessionError>> + Send;

    /// Writes `first`, then what `more` yields (up to a batch), with one flush.
    fn send_queued(
        &mut self,
        first: Outbound,
        more: &mut (dyn FnMut() -> Option<Outbound> + Send),
    ) -> impl Future<Output = Result<(), SessionError>> + Send;

    /// Asks the client for a sign of life (a WebSocket ping).
    fn probe(&mut self) -> impl Future<Output = Result<(), SessionError>> + Send;

    /// Ends the connection: the close handshake with `end`'s code, bounded in time.
    fn close(&mut self, end: End) -> impl Future<Output = ()> + Send;
}

/// Awaits `fut` for at most `limit`, arming the timer only when `fut` does not finish at once:
/// nearly every write completes without waiting, and a timer per write would cost more than it.
pub(crate) async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    if let Some(output) = fut.as_mut().now_or_never() {
        return Some(output);
    }
    tokio::time::timeout(limit, fut).await.ok()
}

//! What flows from the hub to a session: encoded frames, and the kick that ends a session. Both
//! travel through one queue with one waker, so an idle session waits on a single thing.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use switchboard_protocol::{CloseCode, Codec, EncodeError, ServerFrame};
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

/// Buffer slots a drained queue keeps; a larger buffer, grown in a burst, is given back.
const KEPT_SLOTS: usize = 32;

/// A session's bounded queue of outbound frames: the hub pushes without waiting, the session
/// task pops. The buffer is allocated with the first frame, not up front: tokio's bounded `mpsc`
/// holds ~0.8 KiB per channel even while empty, and most connections are idle most of the time.
pub fn queue(capacity: usize) -> (QueueTx, QueueRx) {
    let shared = Arc::new(Queue {
        frames: Mutex::new(VecDeque::new()),
        waker: AtomicWaker::new(),
        capacity,
        receiver_gone: AtomicBool::new(false),
        kicked: AtomicU16::new(0),
    });
    (QueueTx(Arc::clone(&shared)), QueueRx(shared))
}

#[derive(Debug)]
struct Queue {
    frames: Mutex<VecDeque<Outbound>>,
    /// The session task, parked until a frame arrives.
    waker: AtomicWaker,
    capacity: usize,
    /// The session ended: frames pushed now would never be written.
    receiver_gone: AtomicBool,
    /// The close code of the first kick; 0 while not kicked.
    kicked: AtomicU16,
}

impl Queue {
    fn kick(&self, code: CloseCode) -> bool {
        let first = self
            .kicked
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.waker.wake();
        }
        first
    }

    fn kicked(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.kicked.load(Ordering::Acquire))
    }

    fn frames(&self) -> MutexGuard<'_, VecDeque<Outbound>> {
        // A panic while holding the lock cannot leave a `VecDeque` half-changed.
        self.frames.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its capacity: the session is a slow consumer.
    Full,
    /// The session is gone.
    Closed,
}

/// The hub's end of a session queue.
#[derive(Debug, Clone)]
pub struct QueueTx(Arc<Queue>);

impl QueueTx {
    /// Queues a frame unless the queue is full or the session gone; never waits.
    pub fn try_push(&self, frame: Outbound) -> Result<(), PushError> {
        {
            let mut frames = self.0.frames();
            // Looked at under the lock: the session's drop sets it before it empties the queue
            // under the same lock, so no frame can slip in behind the clearing.
            if self.0.receiver_gone.load(Ordering::Acquire) {
                return Err(PushError::Closed);
            }
            if frames.len() >= self.0.capacity {
                return Err(PushError::Full);
            }
            frames.push_back(frame);
        }
        self.0.waker.wake();
        Ok(())
    }

    /// Ends the session from outside its task (slow consumer, per-user limit, remote kick):
    /// it closes with `code` when it next wakes, ahead of anything still queued. The first kick
    /// wins; returns false if the session was already kicked.
    pub fn kick(&self, code: CloseCode) -> bool {
        self.0.kick(code)
    }
}

/// What a waiting session wakes up for.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Frame(Outbound),
    Kicked(CloseCode),
}

/// The session task's end of its queue.
#[derive(Debug)]
pub struct QueueRx(Arc<Queue>);

impl QueueRx {
    /// The oldest queued frame, if any.
    pub fn try_pop(&mut self) -> Option<Outbound> {
        let mut frames = self.0.frames();
        let frame = frames.pop_front();
        if frames.is_empty() && frames.capacity() > KEPT_SLOTS {
            *frames = VecDeque::new();
        }
        frame
    }

    /// Waits for a kick or the next frame; a kick comes first.
    pub async fn next(&mut self) -> Next {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        if let Some(next) = self.ready() {
            return Poll::Ready(next);
        }
        self.0.waker.register(cx.waker());
        // A push or kick between the first look and the registration woke nobody: look again.
        match self.ready() {
            Some(next) => Poll::Ready(next),
            None => Poll::Pending,
        }
    }

    fn ready(&mut self) -> Option<Next> {
        if let Some(code) = self.0.kicked() {
            return Some(Next::Kicked(code));
        }
        self.try_pop().map(Next::Frame)
    }

    /// The close code, once the session has been kicked.
    pub fn kicked(&self) -> Option<CloseCode> {
        self.0.kicked()
    }

    /// Kicks this session from inside (a write that timed out), so the hub stops queueing.
    pub fn kick(&self, code: CloseCode) -> bool {
        self.0.kick(code)
    }
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        self.0.receiver_gone.store(true, Ordering::Release);
        self.0.frames().clear();
    }
}

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

#[cfg(test)]
mod queue_tests {
    use super::*;

    fn frame(text: &str) -> Outbound {
        Arc::new(WsMessage::Text(text.into()))
    }

    fn text(frame: &Outbound) -> &str {
        match &**frame {
            WsMessage::Text(text) => text.as_str(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frames_come_out_in_order_up_to_the_capacity() {
        let (tx, mut rx) = queue(2);
        assert_eq!(tx.try_push(frame("a")), Ok(()));
        assert_eq!(tx.try_push(frame("b")), Ok(()));
        assert_eq!(tx.try_push(frame("c")), Err(PushError::Full));
        assert_eq!(rx.try_pop().as_ref().map(text), Some("a"));
        assert_eq!(tx.try_push(frame("c")), Ok(()));
        assert_eq!(rx.try_pop().as_ref().map(text), Some("b"));
        assert_eq!(rx.try_pop().as_ref().map(text), Some("c"));
        assert!(rx.try_pop().is_none());
    }

    #[test]
    fn an_empty_queue_holds_no_buffer_and_gives_a_large_one_back() {
        let (tx, mut rx) = queue(1024);
        assert_eq!(tx.0.frames().capacity(), 0);
        for i in 0..100 {
            tx.try_push(frame(&i.to_string())).unwrap();
        }
        while rx.try_pop().is_some() {}
        assert_eq!(tx.0.frames().capacity(), 0);
    }

    #[test]
    fn a_gone_session_refuses_frames() {
        let (tx, rx) = queue(8);
        tx.try_push(frame("queued")).unwrap();
        drop(rx);
        assert_eq!(tx.try_push(frame("late")), Err(PushError::Closed));
        assert!(tx.0.frames().is_empty(), "queued frames are released");
    }

    #[tokio::test]
    async fn a_waiting_session_wakes_for_a_frame_pushed_from_another_task() {
        let (tx, mut rx) = queue(8);
        let waiting = tokio::spawn(async move { rx.next().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "parked on the empty queue");
        tx.try_push(frame("hello")).unwrap();
        match waiting.await.unwrap() {
            Next::Frame(popped) => assert_eq!(text(&popped), "hello"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_kick_wakes_the_session_ahead_of_queued_frames_and_the_first_kick_wins() {
        let (tx, mut rx) = queue(8);
        let waiting = tokio::spawn(async move {
            let first = rx.next().await;
            (first, rx)
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "parked on the empty queue");
        assert!(tx.kick(CloseCode::SlowConsumer));
        let (first, mut rx) = waiting.await.unwrap();
        assert_eq!(first, Next::Kicked(CloseCode::SlowConsumer));
        tx.try_push(frame("late")).unwrap();
        assert!(!tx.kick(CloseCode::SessionReplaced), "already kicked");
        assert_eq!(rx.next().await, Next::Kicked(CloseCode::SlowConsumer));
    }
}

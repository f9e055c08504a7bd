//! What flows from the hub to a session: encoded frames, and the kick that ends a session. Both
//! travel through one queue with one waker, so an idle session waits on a single thing.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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

/// Milliseconds since the process's first call: the queue's clock, read once per broadcast
/// (see [`SharedFrame`]) rather than once per recipient. Wraps after 49 days; only differences
/// of at most [`MAX_DELAY_MS`] are ever taken.
pub fn clock_ms() -> u32 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    EPOCH.elapsed().as_millis() as u32
}

/// The largest delay a queue may be given (ten minutes).
pub const MAX_DELAY_MS: u32 = 600_000;

/// How long a queue has been busy at `now_ms`. A broadcast reads the clock once before it
/// pushes to every recipient, so `now_ms` may be a little older than a `since` the session set
/// meanwhile from another thread: that counts as no wait, not as 49 days.
fn waited_ms(since_ms: u32, now_ms: u32) -> u32 {
    let waited = now_ms.wrapping_sub(since_ms);
    if waited > u32::MAX / 2 { 0 } else { waited }
}

/// A session's bounded queue of outbound frames: the hub pushes without waiting, the session
/// task pops. The buffer is allocated with the first frame, not up front: tokio's bounded `mpsc`
/// holds ~0.8 KiB per channel even while empty, and most connections are idle most of the time.
///
/// Bounded twice: by `capacity` frames, and by `max_delay`, how long the queue may stay
/// non-empty without the session emptying it. A client that cannot keep up on a busy node (or
/// a session that does not get to run: the node is past its capacity) is then cut off instead
/// of falling further behind: a push fails with [`PushError::Full`] or [`PushError::Behind`].
pub fn queue(capacity: usize, max_delay: Duration) -> (QueueTx, QueueRx) {
    let max_delay_ms =
        u32::try_from(max_delay.as_millis()).map_or(MAX_DELAY_MS, |ms| ms.min(MAX_DELAY_MS));
    let shared = Arc::new(Queue {
        frames: Mutex::new(Frames::default()),
        waker: AtomicWaker::new(),
        capacity,
        max_delay_ms,
        receiver_gone: AtomicBool::new(false),
        kicked: AtomicU16::new(0),
    });
    (QueueTx(Arc::clone(&shared)), QueueRx(shared))
}

#[derive(Debug, Default)]
struct Frames {
    queued: VecDeque<Outbound>,
    /// When (by [`clock_ms`]) the queue last went from empty to non-empty.
    busy_since_ms: u32,
    /// The session is busy with a request of its own and cannot empty the queue: its delay
    /// does not run (the capacity still bounds it).
    held: bool,
}

#[derive(Debug)]
struct Queue {
    frames: Mutex<Frames>,
    /// The session task, parked until a frame arrives.
    waker: AtomicWaker,
    capacity: usize,
    max_delay_ms: u32,
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

    fn frames(&self) -> MutexGuard<'_, Frames> {
        // A panic while holding the lock cannot leave a `VecDeque` half-changed.
        self.frames.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its capacity: the session is a slow consumer.
    Full,
    /// The queue has not been emptied for longer than its delay: a slow consumer too.
    Behind,
    /// The session is gone.
    Closed,
}

/// The hub's end of a session queue.
#[derive(Debug, Clone)]
pub struct QueueTx(Arc<Queue>);

impl QueueTx {
    /// Queues a frame at `now_ms` (by [`clock_ms`]) unless the queue is full, behind or the
    /// session gone; never waits.
    pub fn try_push(&self, frame: Outbound, now_ms: u32) -> Result<(), PushError> {
        {
            let mut frames = self.0.frames();
            // Looked at under the lock: the session's drop sets it before it empties the queue
            // under the same lock, so no frame can slip in behind the clearing.
            if self.0.receiver_gone.load(Ordering::Acquire) {
                return Err(PushError::Closed);
            }
            if frames.queued.is_empty() {
                frames.busy_since_ms = now_ms;
            } else if !frames.held && waited_ms(frames.busy_since_ms, now_ms) > self.0.max_delay_ms
            {
                return Err(PushError::Behind);
            }
            if frames.queued.len() >= self.0.capacity {
                return Err(PushError::Full);
            }
            frames.queued.push_back(frame);
        }
        self.0.waker.wake();
        Ok(())
    }

    /// How many frames wait in the queue now.
    pub fn queued(&self) -> usize {
        self.0.frames().queued.len()
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
    /// Stops the queue's delay until [`QueueRx::start_clock`]: the session is about to answer a
    /// request of its own, which can take seconds on a busy node or a slow store, and cannot
    /// empty its queue meanwhile; that is no sign of a slow client.
    pub fn hold_clock(&mut self) {
        self.0.frames().held = true;
    }

    /// Starts the queue's delay over at `now_ms`: the session can empty its queue from now on.
    /// Frames queued while it was busy (starting, or answering a request of its own) do not
    /// count against it.
    pub fn start_clock(&mut self, now_ms: u32) {
        let mut frames = self.0.frames();
        frames.busy_since_ms = now_ms;
        frames.held = false;
    }

    /// The oldest queued frame, if any.
    pub fn try_pop(&mut self) -> Option<Outbound> {
        let mut frames = self.0.frames();
        let frame = frames.queued.pop_front();
        if frames.queued.is_empty() && frames.queued.capacity() > KEPT_SLOTS {
            frames.queued = VecDeque::new();
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
        self.0.frames().queued.clear();
    }
}

/// A frame encoded at most once per codec, shared by every recipient: a WebSocket message clone
/// is a reference-count increment, not a copy.
#[derive(Debug)]
pub struct SharedFrame<'a> {
    frame: &'a ServerFrame,
    json: Option<Outbound>,
    msgpack: Option<Outbound>,
    /// When it is queued, for every recipient.
    now_ms: u32,
}

impl<'a> SharedFrame<'a> {
    pub fn new(frame: &'a ServerFrame) -> Self {
        Self {
            frame,
            json: None,
            msgpack: None,
            now_ms: clock_ms(),
        }
    }

    /// The queue clock when this broadcast began: what it is pushed at.
    pub fn now_ms(&self) -> u32 {
        self.now_ms
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

    const DELAY: Duration = Duration::from_millis(2_000);

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
        let (tx, mut rx) = queue(2, DELAY);
        assert_eq!(tx.try_push(frame("a"), 0), Ok(()));
        assert_eq!(tx.try_push(frame("b"), 0), Ok(()));
        assert_eq!(tx.try_push(frame("c"), 0), Err(PushError::Full));
        assert_eq!(rx.try_pop().as_ref().map(text), Some("a"));
        assert_eq!(tx.try_push(frame("c"), 0), Ok(()));
        assert_eq!(rx.try_pop().as_ref().map(text), Some("b"));
        assert_eq!(rx.try_pop().as_ref().map(text), Some("c"));
        assert!(rx.try_pop().is_none());
    }

    #[test]
    fn an_empty_queue_holds_no_buffer_and_gives_a_large_one_back() {
        let (tx, mut rx) = queue(1024, DELAY);
        assert_eq!(tx.0.frames().queued.capacity(), 0);
        for i in 0..100 {
            tx.try_push(frame(&i.to_string()), 0).unwrap();
        }
        while rx.try_pop().is_some() {}
        assert_eq!(tx.0.frames().queued.capacity(), 0);
    }

    #[test]
    fn a_queue_left_non_empty_past_its_delay_refuses_frames_and_an_emptied_one_starts_over() {
        let (tx, mut rx) = queue(1024, DELAY);
        let delay = DELAY.as_millis() as u32;
        tx.try_push(frame("a"), 1_000).unwrap();
        tx.try_push(frame("b"), 1_000 + delay).unwrap();
        assert_eq!(
            tx.try_push(frame("c"), 1_001 + delay),
            Err(PushError::Behind)
        );
        // The session empties its queue: it keeps up, however old the last frame was.
        while rx.try_pop().is_some() {}
        tx.try_push(frame("d"), 5_000).unwrap();
        tx.try_push(frame("e"), 5_000 + delay).unwrap();
        // Frames queued before the session could take them do not count.
        while rx.try_pop().is_some() {}
        tx.try_push(frame("i"), 9_000).unwrap();
        rx.start_clock(9_000 + 2 * delay);
        tx.try_push(frame("j"), 9_000 + 3 * delay).unwrap();
        assert_eq!(
            tx.try_push(frame("k"), 9_001 + 3 * delay),
            Err(PushError::Behind)
        );
        // The clock wraps after 49 days; only the difference counts.
        let (tx, _rx) = queue(8, DELAY);
        tx.try_push(frame("f"), u32::MAX - 10).unwrap();
        assert_eq!(tx.try_push(frame("g"), 20), Ok(()));
        assert_eq!(tx.try_push(frame("h"), delay + 20), Err(PushError::Behind));
    }

    #[test]
    fn a_held_clock_does_not_run_until_started_again_but_the_capacity_still_counts() {
        let (tx, mut rx) = queue(3, DELAY);
        let delay = DELAY.as_millis() as u32;
        tx.try_push(frame("a"), 1_000).unwrap();
        rx.hold_clock();
        tx.try_push(frame("b"), 1_000 + 10 * delay).unwrap();
        tx.try_push(frame("c"), 1_000 + 20 * delay).unwrap();
        assert_eq!(
            tx.try_push(frame("d"), 1_000 + 20 * delay),
            Err(PushError::Full)
        );
        rx.start_clock(50_000);
        rx.try_pop().unwrap();
        tx.try_push(frame("e"), 50_000 + delay).unwrap();
        rx.try_pop().unwrap();
        assert_eq!(
            tx.try_push(frame("f"), 50_001 + delay),
            Err(PushError::Behind),
            "started again, the clock runs"
        );
    }

    #[test]
    fn a_broadcast_that_read_the_clock_before_the_session_restarted_it_is_not_behind() {
        let (tx, mut rx) = queue(8, DELAY);
        tx.try_push(frame("a"), 1_000).unwrap();
        rx.hold_clock();
        rx.start_clock(1_005);
        assert_eq!(tx.try_push(frame("b"), 1_004), Ok(()));
        // Across the clock's wrap as well.
        let (tx, mut rx) = queue(8, DELAY);
        tx.try_push(frame("c"), u32::MAX - 1).unwrap();
        rx.start_clock(3);
        assert_eq!(tx.try_push(frame("d"), u32::MAX), Ok(()));
    }

    #[test]
    fn a_gone_session_refuses_frames() {
        let (tx, rx) = queue(8, DELAY);
        tx.try_push(frame("queued"), 0).unwrap();
        drop(rx);
        assert_eq!(tx.try_push(frame("late"), 0), Err(PushError::Closed));
        assert!(
            tx.0.frames().queued.is_empty(),
            "queued frames are released"
        );
    }

    #[tokio::test]
    async fn a_waiting_session_wakes_for_a_frame_pushed_from_another_task() {
        let (tx, mut rx) = queue(8, DELAY);
        let waiting = tokio::spawn(async move { rx.next().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "parked on the empty queue");
        tx.try_push(frame("hello"), 0).unwrap();
        match waiting.await.unwrap() {
            Next::Frame(popped) => assert_eq!(text(&popped), "hello"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_kick_wakes_the_session_ahead_of_queued_frames_and_the_first_kick_wins() {
        let (tx, mut rx) = queue(8, DELAY);
        let waiting = tokio::spawn(async move {
            let first = rx.next().await;
            (first, rx)
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "parked on the empty queue");
        assert!(tx.kick(CloseCode::SlowConsumer));
        let (first, mut rx) = waiting.await.unwrap();
        assert_eq!(first, Next::Kicked(CloseCode::SlowConsumer));
        tx.try_push(frame("late"), 0).unwrap();
        assert!(!tx.kick(CloseCode::SessionReplaced), "already kicked");
        assert_eq!(rx.next().await, Next::Kicked(CloseCode::SlowConsumer));
    }
}

//! The publish queue: a session hands an encoded envelope over and goes on; one task sends
//! whatever has queued up in one pipeline.
//!
//! A session used to wait for Redis's reply to each `PUBLISH`. That wait is what kept a sender
//! from handing the hub its next message before the members had written the last one, so each
//! delivery was its own wake-up and write; and it is a wait on Redis for something the sender
//! does not need (the message is stored and acknowledged either way, and delivery across nodes
//! is at-most-once). Now the publish returns once the envelope is queued.
//!
//! **Invariant:** bounded. The queue holds at most [`MAX_QUEUED_BYTES`] of payload; a publish
//! that finds it full fails at once, as one to an unreachable Redis does: counted, and the
//! other nodes' members get the message from the store (the room's next message shows them
//! the gap, a resume fills it). Order is kept: one task, one connection, in queue order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{Client, ClientLike, Options, PubsubInterface, Value};
use tokio::sync::{mpsc, oneshot};

use crate::broker::BrokerError;
use crate::metrics;

/// Payload bytes queued for Redis, past which a publish fails.
const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
/// Envelopes queued, past which a publish fails (a bound on the queue's own memory, whatever
/// the payload sizes).
const MAX_QUEUED: usize = 65_536;
/// Envelopes sent in one pipeline.
const MAX_PIPELINE: usize = 512;

/// One encoded envelope and the channels it goes to, or (no channel) a mark that tells its
/// waiter when everything queued before it has been sent.
#[derive(Debug)]
struct Outgoing {
    channels: Vec<String>,
    payload: Bytes,
    /// Answered once the pipeline carrying this item is done: whether it went through.
    sent: Option<oneshot::Sender<bool>>,
}

impl Outgoing {
    fn bytes(&self) -> usize {
        self.payload.len() * self.channels.len()
    }
}

/// The sessions' end of the queue.
#[derive(Debug)]
pub(super) struct PublishQueue {
    tx: mpsc::Sender<Outgoing>,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Payload bytes queued and not yet sent.
    queued_bytes: AtomicUsize,
    /// Envelopes that were queued but whose pipeline failed.
    failed: AtomicU64,
}

impl PublishQueue {
    /// The queue, and the task that empties it into `publisher` (each pipeline bounded by
    /// `options`' timeout). The task ends once the queue is dropped and drained.
    pub(super) fn start(publisher: Client, options: Options, timeout: Duration) -> Self {
        let (tx, rx) = mpsc::channel(MAX_QUEUED);
        let counts = Arc::new(Counts::default());
        tokio::spawn(send(publisher, options, timeout, rx, Arc::clone(&counts)));
        Self { tx, counts }
    }

    /// Envelopes queued and then lost to a failed pipeline, so far.
    pub(super) fn failed(&self) -> u64 {
        self.counts.failed.load(Ordering::Relaxed)
    }

    /// Queues `payload` for `channels`, or fails at once when the queue is full.
    pub(super) fn push(&self, channels: Vec<String>, payload: Bytes) -> Result<(), BrokerError> {
        let outgoing = Outgoing {
            channels,
            payload,
            sent: None,
        };
        let bytes = outgoing.bytes();
        let queued_bytes = &self.counts.queued_bytes;
        if queued_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes > MAX_QUEUED_BYTES {
            queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(BrokerError::Unavailable(
                "the publish queue is full: Redis is not keeping up".to_owned(),
            ));
        }
        self.tx.try_send(outgoing).map_err(|error| {
            queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            BrokerError::Unavailable(match error {
                mpsc::error::TrySendError::Full(_) => {
                    "the publish queue is full: Redis is not keeping up".to_owned()
                }
                mpsc::error::TrySendError::Closed(_) => "the publisher has stopped".to_owned(),
            })
        })
    }
}

impl PublishQueue {
    /// Waits until everything queued before this call has been sent, and Redis answered.
    pub(super) async fn flush(&self) -> Result<(), BrokerError> {
        let (done, sent) = oneshot::channel();
        let mark = Outgoing {
            channels: Vec::new(),
            payload: Bytes::new(),
            sent: Some(done),
        };
        // A mark waits for room in the queue (it holds no payload): the caller asked to wait.
        self.tx
            .send(mark)
            .await
            .map_err(|_| BrokerError::Unavailable("the publisher has stopped".to_owned()))?;
        match sent.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(BrokerError::Unavailable(
                "publishing to Redis failed".to_owned(),
            )),
            Err(_) => Err(BrokerError::Unavailable(
                "the publisher has stopped".to_owned(),
            )),
        }
    }
}

/// Sends what is queued, up to a pipeline at a time, until the queue is closed and empty.
async fn send(
    publisher: Client,
    options: Options,
    timeout: Duration,
    mut rx: mpsc::Receiver<Outgoing>,
    counts: Arc<Counts>,
) {
    let mut batch = Vec::with_capacity(MAX_PIPELINE);
    while rx.recv_many(&mut batch, MAX_PIPELINE).await > 0 {
        let bytes: usize = batch.iter().map(Outgoing::bytes).sum();
        let sent = async {
            let pipeline = fred::clients::Pipeline::from(publisher.with_options(&options));
            for outgoing in &batch {
                for channel in &outgoing.channels {
                    pipeline
                        .publish::<(), _, _>(channel.as_str(), outgoing.payload.clone())
                        .await?;
                }
            }
            pipeline.all::<Value>().await
        };
        let envelopes = batch.iter().filter(|o| o.sent.is_none()).count();
        let failed = if batch.iter().all(|o| o.channels.is_empty()) {
            // Marks only (or envelopes for no channel): nothing to send.
            drop(sent);
            None
        } else {
            match tokio::time::timeout(timeout, sent).await {
                Ok(Ok(_)) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some("publish timed out".to_owned()),
            }
        };
        if let Some(error) = &failed {
            // Some of the batch may have gone through; counted as failed all the same, since
            // nothing tells which.
            for _ in 0..envelopes {
                metrics::broker_publish_failed();
            }
            counts.failed.fetch_add(envelopes as u64, Ordering::Relaxed);
            tracing::warn!(%error, envelopes, "publish failed");
        }
        counts.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        let went_through = failed.is_none();
        for outgoing in batch.drain(..) {
            if let Some(sent) = outgoing.sent {
                let _ = sent.send(went_through);
            }
        }
    }
}

//! The behaviour every [`Broker`] must have, as suites run against each implementation: the
//! in-memory broker in unit tests, Redis in integration tests against a real server.
//!
//! A case talks to two nodes, A and B, each a broker with a [`Recorder`] as its hub. For a
//! single-node broker both are the same node: [`run_all`] holds for it too. [`run_cluster`]
//! adds what only means something with two real nodes (a node gets nothing it did not
//! subscribe to). Events are `pong` frames whose `id` marks them.
//!
//! Each case uses its own room and user ids (from `prefix`) and marker ids.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use switchboard_protocol::{RoomId, ServerFrame, UserId};
use tokio::sync::watch;

use super::{Broker, Envelope, Event, Inbox, Topic};

/// How long an event may take to cross nodes before the case fails.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);

/// A hub stand-in that records what the broker delivers and the gaps it reports.
#[derive(Debug)]
pub struct Recorder {
    log: Mutex<Log>,
    /// Bumped on every delivery and gap, so waiters wake on events, not on timers.
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Log {
    envelopes: Vec<Envelope>,
    gaps: Vec<Vec<Topic>>,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            log: Mutex::new(Log::default()),
            changed: watch::Sender::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many times the marker was delivered.
    pub fn count(&self, marker: u64) -> usize {
        self.lock()
            .envelopes
            .iter()
            .filter(|e| marker_of(e) == Some(marker))
            .count()
    }

    /// Every envelope delivered so far.
    pub fn envelopes(&self) -> Vec<Envelope> {
        self.lock().envelopes.clone()
    }

    /// Every topic reported in a gap so far.
    pub fn gap_topics(&self) -> Vec<Topic> {
        self.lock().gaps.iter().flatten().cloned().collect()
    }

    /// Waits until `check` holds, or `deadline` passes; returns whether it held.
    pub async fn wait_until(&self, deadline: Duration, check: impl Fn(&Self) -> bool) -> bool {
        let mut changed = self.changed.subscribe();
        let wait = async {
            while !check(self) {
                if changed.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(deadline, wait).await.unwrap_or(false)
    }

    /// Waits until the marker was delivered at least once.
    pub async fn wait_for(&self, marker: u64) -> bool {
        self.wait_until(DELIVERY_DEADLINE, |r| r.count(marker) > 0)
            .await
    }
}

impl Inbox for Recorder {
    fn deliver(&self, envelope: &Envelope) {
        self.lock().envelopes.push(envelope.clone());
        self.changed.send_modify(|n| *n += 1);
    }

    fn gap(&self, topics: &[Topic]) {
        self.lock().gaps.push(topics.to_vec());
        self.changed.send_modify(|n| *n += 1);
    }
}

/// One node of a case: its broker and the recorder it delivers to.
#[derive(Debug, Clone)]
pub struct Node {
    pub broker: Arc<dyn Broker>,
    pub inbox: Arc<Recorder>,
}

/// An event for `topics` carrying `marker`.
pub fn marked(topics: Vec<Topic>, marker: u64) -> Envelope {
    Envelope::frame(topics, ServerFrame::Pong { id: Some(marker) })
}

fn marker_of(envelope: &Envelope) -> Option<u64> {
    match &envelope.event {
        Event::Frame {
            frame: ServerFrame::Pong { id },
            ..
        } => *id,
        _ => None,
    }
}

pub fn room(prefix: &str, name: &str) -> Topic {
    Topic::Room(RoomId::parse(format!("{prefix}-{name}")).expect("room id"))
}

pub fn user(prefix: &str, name: &str) -> Topic {
    Topic::User(UserId::parse(format!("{prefix}-{name}")).expect("user id"))
}

async fn publish(node: &Node, topics: Vec<Topic>, marker: u64) {
    node.broker
        .publish(marked(topics, marker))
        .await
        .expect("publish");
}

async fn subscribe(node: &Node, topics: &[Topic]) {
    node.broker.subscribe(topics).await.expect("subscribe");
}

async fn unsubscribe(node: &Node, topics: &[Topic]) {
    node.broker.unsubscribe(topics).await.expect("unsubscribe");
}

/// Publishes `marker` on `topic` from `from` and waits until `to` received it: everything
/// `from` published on the topics `to` follows before it has arrived by then.
async fn flush(from: &Node, to: &Node, topic: &Topic, marker: u64) {
    publish(from, vec![topic.clone()], marker).await;
    assert!(
        to.inbox.wait_for(marker).await,
        "marker {marker} on {topic:?} did not arrive"
    );
}

/// The cases that hold for every broker; `a` and `b` may be the same node.
pub async fn run_all(a: &Node, b: &Node, prefix: &str) {
    local_members_get_what_their_node_publishes(a, prefix).await;
    a_subscribed_node_gets_what_another_publishes_once(a, b, prefix).await;
    an_event_for_several_topics_arrives_once(a, b, prefix).await;
    a.broker
        .health()
        .await
        .expect("a running broker is healthy");
    b.broker
        .health()
        .await
        .expect("a running broker is healthy");
}

/// The cases that need two distinct nodes sharing a backend.
pub async fn run_cluster(a: &Node, b: &Node, prefix: &str) {
    assert!(!Arc::ptr_eq(&a.inbox, &b.inbox), "two distinct nodes");
    a_node_gets_nothing_for_topics_it_did_not_subscribe(a, b, prefix).await;
    unsubscribe_stops_delivery(a, b, prefix).await;
    a_node_gets_its_own_events_once(a, b, prefix).await;
    a_racing_unsubscribe_and_subscribe_end_subscribed(a, b, prefix).await;
}

pub async fn local_members_get_what_their_node_publishes(a: &Node, prefix: &str) {
    let solo = room(prefix, "solo");
    publish(a, vec![solo], 101).await;
    assert_eq!(a.inbox.count(101), 1, "delivered locally, during publish");
}

pub async fn a_subscribed_node_gets_what_another_publishes_once(a: &Node, b: &Node, prefix: &str) {
    let shared = room(prefix, "shared");
    subscribe(b, std::slice::from_ref(&shared)).await;
    publish(a, vec![shared.clone()], 201).await;
    assert!(
        b.inbox.wait_for(201).await,
        "crossed to the subscribed node"
    );
    flush(a, b, &shared, 202).await;
    assert_eq!(b.inbox.count(201), 1);
    assert_eq!(a.inbox.count(201), 1);
    unsubscribe(b, &[shared]).await;
}

pub async fn an_event_for_several_topics_arrives_once(a: &Node, b: &Node, prefix: &str) {
    let (lobby, bob) = (room(prefix, "lobby"), user(prefix, "bob"));
    let topics = vec![lobby.clone(), bob.clone()];
    subscribe(b, &topics).await;
    publish(a, topics.clone(), 301).await;
    flush(a, b, &lobby, 302).await;
    flush(a, b, &bob, 303).await;
    assert_eq!(b.inbox.count(301), 1, "once, though on two channels");
    assert_eq!(a.inbox.count(301), 1);
    unsubscribe(b, &topics).await;
}

pub async fn a_node_gets_nothing_for_topics_it_did_not_subscribe(a: &Node, b: &Node, prefix: &str) {
    let (x, y) = (room(prefix, "x"), room(prefix, "y"));
    subscribe(b, std::slice::from_ref(&x)).await;
    publish(a, vec![y.clone()], 401).await;
    publish(a, vec![user(prefix, "nobody")], 402).await;
    flush(a, b, &x, 403).await;
    assert_eq!(b.inbox.count(401), 0, "b does not serve room y");
    assert_eq!(b.inbox.count(402), 0, "b does not serve that user");
    assert_eq!(a.inbox.count(401), 1, "a's local members still get it");
    unsubscribe(b, &[x]).await;
}

pub async fn unsubscribe_stops_delivery(a: &Node, b: &Node, prefix: &str) {
    let (gone, kept) = (room(prefix, "gone"), room(prefix, "kept"));
    subscribe(b, &[gone.clone(), kept.clone()]).await;
    flush(a, b, &gone, 501).await;
    unsubscribe(b, std::slice::from_ref(&gone)).await;
    publish(a, vec![gone.clone()], 502).await;
    flush(a, b, &kept, 503).await;
    assert_eq!(
        b.inbox.count(502),
        0,
        "unsubscribed before it was published"
    );
    unsubscribe(b, &[kept]).await;
}

pub async fn a_node_gets_its_own_events_once(a: &Node, b: &Node, prefix: &str) {
    let both = room(prefix, "both");
    subscribe(a, std::slice::from_ref(&both)).await;
    subscribe(b, std::slice::from_ref(&both)).await;
    publish(a, vec![both.clone()], 601).await;
    // b's event is published after a's, on the same channel: when it reaches a, so would have
    // the echo of a's own.
    flush(b, a, &both, 602).await;
    assert_eq!(a.inbox.count(601), 1, "delivered locally, the echo dropped");
    assert!(b.inbox.wait_for(601).await);
    unsubscribe(a, std::slice::from_ref(&both)).await;
    unsubscribe(b, &[both]).await;
}

pub async fn a_racing_unsubscribe_and_subscribe_end_subscribed(a: &Node, b: &Node, prefix: &str) {
    let churn = room(prefix, "churn");
    let topics = std::slice::from_ref(&churn);
    subscribe(b, topics).await;
    // The last session leaves while a new one arrives: one reference remains.
    let (left, joined) = tokio::join!(b.broker.unsubscribe(topics), b.broker.subscribe(topics));
    left.expect("unsubscribe");
    joined.expect("subscribe");
    flush(a, b, &churn, 701).await;
    unsubscribe(b, topics).await;
    publish(a, vec![churn.clone()], 702).await;
    let other = room(prefix, "after-churn");
    subscribe(b, std::slice::from_ref(&other)).await;
    flush(a, b, &other, 703).await;
    assert_eq!(b.inbox.count(702), 0, "no reference left");
    unsubscribe(b, &[other]).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::MemoryBroker;

    #[tokio::test]
    async fn the_memory_broker_meets_the_broker_contract() {
        let broker = Arc::new(MemoryBroker::new());
        let inbox = Recorder::new();
        broker.attach(inbox.clone());
        let node = Node { broker, inbox };
        run_all(&node, &node, "mem").await;
    }
}

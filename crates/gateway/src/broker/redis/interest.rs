//! Which channels this node wants and which ones Redis confirmed: the bookkeeping of the
//! subscription manager, free of I/O so it can be tested on its own.
//!
//! **Invariant:** a channel is subscribed only while it is wanted, i.e. while the hub has a
//! local session on its topic. The manager converges `actual` to `wanted` in batches, so a
//! racing unsubscribe + subscribe of one topic ends in the state the last reference asks for.

use std::collections::{HashMap, HashSet};

use crate::broker::Topic;

/// The Redis channel of a topic. Ids are validated (`[A-Za-z0-9_.@-]`), so they are safe here.
pub(crate) fn channel(topic: &Topic) -> String {
    match topic {
        Topic::Room(room) => format!("sb:room:{room}"),
        Topic::User(user) => format!("sb:user:{user}"),
    }
}

#[derive(Debug, Default)]
pub(crate) struct Interest {
    /// Channel → its topic and how many subscribes are not yet matched by an unsubscribe. The
    /// count may dip below zero when an unsubscribe overtakes its subscribe; the channel is
    /// wanted while the count is above zero, and forgotten at zero.
    wanted: HashMap<String, Want>,
    /// Channels Redis confirmed on the current subscriber connection.
    actual: HashSet<String>,
    /// Wanted channels whose subscriber stopped waiting for the confirmation: whatever was
    /// published before it came may be lost, so they are repaired once it comes.
    late: HashSet<String>,
}

#[derive(Debug)]
struct Want {
    topic: Topic,
    count: i64,
}

/// One round of the manager: what to send to Redis.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Batch {
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

impl Interest {
    /// Adds `delta` references to `topic`; returns its channel.
    pub fn add(&mut self, topic: &Topic, delta: i64) -> String {
        let channel = channel(topic);
        let want = self.wanted.entry(channel.clone()).or_insert_with(|| Want {
            topic: topic.clone(),
            count: 0,
        });
        want.count += delta;
        if want.count == 0 {
            self.wanted.remove(&channel);
            self.late.remove(&channel);
        }
        channel
    }

    pub fn is_wanted(&self, channel: &str) -> bool {
        self.wanted.get(channel).is_some_and(|w| w.count > 0)
    }

    /// Every channel is subscribed, or no longer wanted.
    pub fn confirmed(&self, channels: &[String]) -> bool {
        channels
            .iter()
            .all(|c| self.actual.contains(c) || !self.is_wanted(c))
    }

    /// Every channel is unsubscribed, or wanted again.
    pub fn released(&self, channels: &[String]) -> bool {
        channels
            .iter()
            .all(|c| !self.actual.contains(c) || self.is_wanted(c))
    }

    /// Remembers that these channels' subscribers gave up waiting.
    pub fn mark_late(&mut self, channels: &[String]) {
        for channel in channels {
            if self.is_wanted(channel) && !self.actual.contains(channel) {
                self.late.insert(channel.clone());
            }
        }
    }

    /// What separates `actual` from `wanted`.
    pub fn diff(&self) -> Batch {
        let mut batch = Batch {
            subscribe: self
                .wanted
                .iter()
                .filter(|(c, w)| w.count > 0 && !self.actual.contains(*c))
                .map(|(c, _)| c.clone())
                .collect(),
            unsubscribe: self
                .actual
                .iter()
                .filter(|c| !self.is_wanted(c))
                .cloned()
                .collect(),
        };
        batch.subscribe.sort_unstable();
        batch.unsubscribe.sort_unstable();
        batch
    }

    /// Redis confirmed `batch`; returns the topics that were late and must be repaired.
    pub fn applied(&mut self, batch: &Batch) -> Vec<Topic> {
        for channel in &batch.unsubscribe {
            self.actual.remove(channel);
        }
        self.actual.extend(batch.subscribe.iter().cloned());
        let late: Vec<String> = batch
            .subscribe
            .iter()
            .filter(|c| self.late.remove(*c))
            .cloned()
            .collect();
        self.topics(&late)
    }

    /// The subscriber connection was replaced: Redis knows none of our channels any more.
    /// Returns every wanted channel, to subscribe from scratch.
    pub fn reset(&mut self) -> Vec<String> {
        self.actual.clear();
        let mut all: Vec<String> = self
            .wanted
            .iter()
            .filter(|(_, w)| w.count > 0)
            .map(|(c, _)| c.clone())
            .collect();
        all.sort_unstable();
        all
    }

    /// Redis confirmed `channels` on a fresh connection; returns the topics of those still
    /// wanted, which may have lost events while the connection was down.
    pub fn reset_applied(&mut self, channels: &[String]) -> Vec<Topic> {
        self.actual = channels.iter().cloned().collect();
        for channel in channels {
            self.late.remove(channel);
        }
        self.topics(channels)
    }

    /// The topics of every wanted channel.
    pub fn wanted_topics(&self) -> Vec<Topic> {
        self.wanted
            .values()
            .filter(|w| w.count > 0)
            .map(|w| w.topic.clone())
            .collect()
    }

    pub fn subscribed(&self) -> usize {
        self.actual.len()
    }

    fn topics(&self, channels: &[String]) -> Vec<Topic> {
        channels
            .iter()
            .filter_map(|c| self.wanted.get(c))
            .filter(|w| w.count > 0)
            .map(|w| w.topic.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::{RoomId, UserId};

    fn room(id: &str) -> Topic {
        Topic::Room(RoomId::parse(id).unwrap())
    }

    #[test]
    fn channels_are_named_per_room_and_per_user() {
        assert_eq!(channel(&room("general")), "sb:room:general");
        assert_eq!(
            channel(&Topic::User(UserId::parse("alice").unwrap())),
            "sb:user:alice"
        );
    }

    #[test]
    fn a_channel_is_subscribed_while_it_has_references() {
        let mut interest = Interest::default();
        let x = interest.add(&room("x"), 1);
        interest.add(&room("x"), 1);
        let batch = interest.diff();
        assert_eq!(batch.subscribe, vec![x.clone()]);
        assert!(!interest.confirmed(std::slice::from_ref(&x)));
        assert!(interest.applied(&batch).is_empty());
        assert!(interest.confirmed(std::slice::from_ref(&x)));
        interest.add(&room("x"), -1);
        assert!(interest.diff().is_empty(), "one reference left");
        interest.add(&room("x"), -1);
        let batch = interest.diff();
        assert_eq!(batch.unsubscribe, vec![x.clone()]);
        assert!(!interest.released(std::slice::from_ref(&x)));
        interest.applied(&batch);
        assert!(interest.released(std::slice::from_ref(&x)));
        assert_eq!(interest.subscribed(), 0);
    }

    #[test]
    fn an_unsubscribe_that_overtakes_its_subscribe_leaves_nothing_subscribed() {
        let mut interest = Interest::default();
        interest.add(&room("x"), -1);
        interest.add(&room("x"), 1);
        assert!(interest.diff().is_empty());
        assert!(interest.wanted_topics().is_empty());
    }

    #[test]
    fn a_quick_unsubscribe_then_subscribe_keeps_the_channel() {
        let mut interest = Interest::default();
        let x = interest.add(&room("x"), 1);
        let batch = interest.diff();
        interest.applied(&batch);
        interest.add(&room("x"), -1);
        interest.add(&room("x"), 1);
        assert!(interest.diff().is_empty(), "no churn: stays subscribed");
        assert!(interest.confirmed(&[x]));
    }

    #[test]
    fn a_late_channel_is_repaired_once_confirmed() {
        let mut interest = Interest::default();
        let x = interest.add(&room("x"), 1);
        let y = interest.add(&room("y"), 1);
        interest.mark_late(std::slice::from_ref(&x));
        let batch = interest.diff();
        assert_eq!(batch.subscribe, vec![x, y]);
        assert_eq!(interest.applied(&batch), vec![room("x")]);
        assert!(interest.applied(&Batch::default()).is_empty(), "once");
    }

    #[test]
    fn a_reset_resubscribes_every_wanted_channel_and_repairs_them() {
        let mut interest = Interest::default();
        let x = interest.add(&room("x"), 1);
        let batch = interest.diff();
        interest.applied(&batch);
        let all = interest.reset();
        assert_eq!(all, vec![x.clone()]);
        assert!(!interest.confirmed(std::slice::from_ref(&x)));
        assert_eq!(interest.reset_applied(&all), vec![room("x")]);
        assert!(interest.confirmed(&[x]));
    }
}

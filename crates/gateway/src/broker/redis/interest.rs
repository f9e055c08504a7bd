//! Which channels this node wants and which ones Redis confirmed: the bookkeeping of the
//! subscription manager, free of I/O so it can be tested on its own.
//!
//! **Invariant:** a channel is subscribed only while it is wanted, i.e. while the hub has a
//! local session on its topic. The manager converges the subscribed channels to the wanted ones in
//! batches, so a racing unsubscribe + subscribe of one topic ends in the state the last reference
//! asks for.

use std::collections::HashMap;

use switchboard_protocol::{RoomId, UserId};

use crate::broker::Topic;

/// The Redis channel of a topic. Ids are validated (`[A-Za-z0-9_.@-]`), so they are safe here.
pub(crate) fn channel(topic: &Topic) -> String {
    match topic {
        Topic::Room(room) => format!("sb:room:{room}"),
        Topic::User(user) => format!("sb:user:{user}"),
    }
}

/// The topic a channel carries (the inverse of [`channel`]).
fn topic_of(channel: &str) -> Option<Topic> {
    if let Some(room) = channel.strip_prefix("sb:room:") {
        return RoomId::parse(room).ok().map(Topic::Room);
    }
    let user = channel.strip_prefix("sb:user:")?;
    UserId::parse(user).ok().map(Topic::User)
}

/// Every channel this node wants or Redis has confirmed, in one map: a node holds one user
/// channel per connected user, so what each one costs is part of every connection's memory.
#[derive(Debug, Default)]
pub(crate) struct Interest {
    channels: HashMap<Box<str>, Channel>,
    /// How many channels are `subscribed`.
    subscribed: usize,
}

#[derive(Debug, Default)]
struct Channel {
    /// Subscribes not yet matched by an unsubscribe. It may dip below zero when an unsubscribe
    /// overtakes its subscribe; the channel is wanted while it is above zero.
    count: i64,
    /// Redis confirmed it on the current subscriber connection.
    subscribed: bool,
    /// Wanted, and its subscriber stopped waiting for the confirmation: whatever was published
    /// before it came may be lost, so it is repaired once it comes.
    late: bool,
}

impl Channel {
    fn wanted(&self) -> bool {
        self.count > 0
    }

    /// Nothing to remember: no references owed, not subscribed.
    fn forgettable(&self) -> bool {
        self.count == 0 && !self.subscribed
    }
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
        let name = channel(topic);
        let entry = self.entry(&name);
        entry.count += delta;
        if entry.count == 0 {
            entry.late = false;
        }
        self.tidy(&name);
        name
    }

    pub fn is_wanted(&self, channel: &str) -> bool {
        self.channels.get(channel).is_some_and(Channel::wanted)
    }

    fn is_subscribed(&self, channel: &str) -> bool {
        self.channels.get(channel).is_some_and(|c| c.subscribed)
    }

    /// Every channel is subscribed, or no longer wanted.
    pub fn confirmed(&self, channels: &[String]) -> bool {
        channels
            .iter()
            .all(|c| self.is_subscribed(c) || !self.is_wanted(c))
    }

    /// Every channel is unsubscribed, or wanted again.
    pub fn released(&self, channels: &[String]) -> bool {
        channels
            .iter()
            .all(|c| !self.is_subscribed(c) || self.is_wanted(c))
    }

    /// Remembers that these channels' subscribers gave up waiting.
    pub fn mark_late(&mut self, channels: &[String]) {
        for channel in channels {
            if let Some(entry) = self.channels.get_mut(channel.as_str())
                && entry.wanted()
                && !entry.subscribed
            {
                entry.late = true;
            }
        }
    }

    /// What separates the subscribed channels from the wanted ones.
    pub fn diff(&self) -> Batch {
        let mut batch = Batch::default();
        for (name, entry) in &self.channels {
            match (entry.wanted(), entry.subscribed) {
                (true, false) => batch.subscribe.push(name.to_string()),
                (false, true) => batch.unsubscribe.push(name.to_string()),
                _ => {}
            }
        }
        batch.subscribe.sort_unstable();
        batch.unsubscribe.sort_unstable();
        batch
    }

    /// Redis confirmed `batch`; returns the topics that were late and must be repaired.
    pub fn applied(&mut self, batch: &Batch) -> Vec<Topic> {
        for name in &batch.unsubscribe {
            self.set_subscribed(name, false);
        }
        let mut late = Vec::new();
        for name in &batch.subscribe {
            self.set_subscribed(name, true);
            if let Some(entry) = self.channels.get_mut(name.as_str())
                && std::mem::take(&mut entry.late)
            {
                late.push(name.clone());
            }
        }
        self.topics(&late)
    }

    /// The subscriber connection was replaced: Redis knows none of our channels any more.
    /// Returns every wanted channel, to subscribe from scratch.
    pub fn reset(&mut self) -> Vec<String> {
        self.unsubscribe_all();
        let mut all: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, entry)| entry.wanted())
            .map(|(name, _)| name.to_string())
            .collect();
        all.sort_unstable();
        all
    }

    /// Redis confirmed `channels` on a fresh connection; returns the topics of those still
    /// wanted, which may have lost events while the connection was down.
    pub fn reset_applied(&mut self, channels: &[String]) -> Vec<Topic> {
        self.unsubscribe_all();
        for name in channels {
            self.set_subscribed(name, true);
            if let Some(entry) = self.channels.get_mut(name.as_str()) {
                entry.late = false;
            }
        }
        self.topics(channels)
    }

    /// The topics of every wanted channel.
    pub fn wanted_topics(&self) -> Vec<Topic> {
        self.channels
            .iter()
            .filter(|(_, entry)| entry.wanted())
            .filter_map(|(name, _)| topic_of(name))
            .collect()
    }

    pub fn subscribed(&self) -> usize {
        self.subscribed
    }

    /// The channel's entry, made when missing (the key is allocated only then).
    fn entry(&mut self, name: &str) -> &mut Channel {
        if !self.channels.contains_key(name) {
            self.channels.insert(name.into(), Channel::default());
        }
        self.channels.get_mut(name).expect("inserted above")
    }

    /// No channel is subscribed any more; the ones that were only subscribed are forgotten.
    fn unsubscribe_all(&mut self) {
        for entry in self.channels.values_mut() {
            entry.subscribed = false;
        }
        self.subscribed = 0;
        self.channels.retain(|_, entry| !entry.forgettable());
    }

    fn set_subscribed(&mut self, name: &str, subscribed: bool) {
        let entry = self.entry(name);
        if entry.subscribed != subscribed {
            entry.subscribed = subscribed;
            if subscribed {
                self.subscribed += 1;
            } else {
                self.subscribed -= 1;
            }
        }
        self.tidy(name);
    }

    fn tidy(&mut self, name: &str) {
        if self.channels.get(name).is_some_and(Channel::forgettable) {
            self.channels.remove(name);
        }
    }

    fn topics(&self, channels: &[String]) -> Vec<Topic> {
        channels
            .iter()
            .filter(|name| self.is_wanted(name))
            .filter_map(|name| topic_of(name))
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
    fn channels_read_back_as_their_topics() {
        let user = Topic::User(UserId::parse("a.b@c-d_e").unwrap());
        assert_eq!(topic_of(&channel(&room("general"))), Some(room("general")));
        assert_eq!(topic_of(&channel(&user)), Some(user));
        assert_eq!(topic_of("sb:other:x"), None);
    }

    #[test]
    fn a_channel_neither_wanted_nor_subscribed_is_forgotten() {
        let mut interest = Interest::default();
        interest.add(&room("x"), 1);
        interest.applied(&interest.diff());
        interest.add(&room("x"), -1);
        interest.applied(&interest.diff());
        assert!(interest.channels.is_empty(), "{:?}", interest.channels);
        assert_eq!(interest.subscribed(), 0);
        interest.add(&room("y"), -1);
        assert_eq!(interest.channels.len(), 1, "an overtaken subscribe is owed");
        interest.add(&room("y"), 1);
        assert!(interest.channels.is_empty());
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

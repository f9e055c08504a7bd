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
/// The pattern of every room's channel.
pub(crate) const ROOM_CHANNELS: &str = "sb:room:*";

pub(crate) fn channel(topic: &Topic) -> String {
    match topic {
        Topic::Room(room) => format!("sb:room:{room}"),
        Topic::User(user) => format!("sb:user:{user}"),
    }
}

/// Every topic this node wants or Redis has confirmed. A node holds one user channel per
/// connected user, so what each one costs is part of every connection's memory: the key is the
/// id itself, shared with the session (no allocation per user); channel names are made only to
/// talk to Redis.
#[derive(Debug, Default)]
pub(crate) struct Interest {
    channels: Channels,
    /// How many channels are `subscribed`.
    subscribed: usize,
}

/// Room and user channels in a map each: a user's entry is then its 16-byte id and the 8-byte
/// [`Channel`], where a [`Topic`] key would take 24.
#[derive(Debug, Default)]
struct Channels {
    rooms: HashMap<RoomId, Channel>,
    users: HashMap<UserId, Channel>,
}

impl Channels {
    fn get(&self, topic: &Topic) -> Option<&Channel> {
        match topic {
            Topic::Room(room) => self.rooms.get(room),
            Topic::User(user) => self.users.get(user),
        }
    }

    fn get_mut(&mut self, topic: &Topic) -> Option<&mut Channel> {
        match topic {
            Topic::Room(room) => self.rooms.get_mut(room),
            Topic::User(user) => self.users.get_mut(user),
        }
    }

    /// The topic's entry, made when missing (the key is cloned only then).
    fn entry(&mut self, topic: &Topic) -> &mut Channel {
        match topic {
            Topic::Room(room) => entry(&mut self.rooms, room),
            Topic::User(user) => entry(&mut self.users, user),
        }
    }

    fn remove(&mut self, topic: &Topic) {
        match topic {
            Topic::Room(room) => self.rooms.remove(room),
            Topic::User(user) => self.users.remove(user),
        };
    }

    /// The topics whose entry `pick`s; only those are cloned.
    fn topics_where(&self, pick: impl Fn(&Channel) -> bool) -> Vec<Topic> {
        let rooms = self
            .rooms
            .iter()
            .filter(|(_, entry)| pick(entry))
            .map(|(room, _)| Topic::Room(room.clone()));
        let users = self
            .users
            .iter()
            .filter(|(_, entry)| pick(entry))
            .map(|(user, _)| Topic::User(user.clone()));
        rooms.chain(users).collect()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Channel> {
        self.rooms.values_mut().chain(self.users.values_mut())
    }

    fn retain(&mut self, keep: impl Fn(&Channel) -> bool) {
        self.rooms.retain(|_, entry| keep(entry));
        self.users.retain(|_, entry| keep(entry));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.rooms.len() + self.users.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn entry<'a, K: Clone + Eq + std::hash::Hash>(
    map: &'a mut HashMap<K, Channel>,
    key: &K,
) -> &'a mut Channel {
    if !map.contains_key(key) {
        map.insert(key.clone(), Channel::default());
    }
    map.get_mut(key).expect("inserted above")
}

#[derive(Debug, Default)]
struct Channel {
    /// Subscribes not yet matched by an unsubscribe. It may dip below zero when an unsubscribe
    /// overtakes its subscribe; the channel is wanted while it is above zero. (Sessions on one
    /// node: far from `i32`'s range, and the entry stays 8 bytes.)
    count: i32,
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
    pub subscribe: Vec<Topic>,
    pub unsubscribe: Vec<Topic>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

/// The channel names of `topics`, for a Redis command.
pub(crate) fn channels(topics: &[Topic]) -> Vec<String> {
    topics.iter().map(channel).collect()
}

impl Interest {
    /// Adds `delta` references to `topic`.
    pub fn add(&mut self, topic: &Topic, delta: i32) {
        let entry = self.channels.entry(topic);
        entry.count += delta;
        if entry.count == 0 {
            entry.late = false;
        }
        self.tidy(topic);
    }

    pub fn is_wanted(&self, topic: &Topic) -> bool {
        self.channels.get(topic).is_some_and(Channel::wanted)
    }

    fn is_subscribed(&self, topic: &Topic) -> bool {
        self.channels.get(topic).is_some_and(|c| c.subscribed)
    }

    /// Every topic is subscribed, or no longer wanted.
    pub fn confirmed(&self, topics: &[Topic]) -> bool {
        topics
            .iter()
            .all(|t| self.is_subscribed(t) || !self.is_wanted(t))
    }

    /// Every topic is unsubscribed, or wanted again.
    pub fn released(&self, topics: &[Topic]) -> bool {
        topics
            .iter()
            .all(|t| !self.is_subscribed(t) || self.is_wanted(t))
    }

    /// Remembers that these topics' subscribers gave up waiting.
    pub fn mark_late(&mut self, topics: &[Topic]) {
        for topic in topics {
            if let Some(entry) = self.channels.get_mut(topic)
                && entry.wanted()
                && !entry.subscribed
            {
                entry.late = true;
            }
        }
    }

    /// What separates the subscribed channels from the wanted ones.
    pub fn diff(&self) -> Batch {
        Batch {
            subscribe: self
                .channels
                .topics_where(|entry| entry.wanted() && !entry.subscribed),
            unsubscribe: self
                .channels
                .topics_where(|entry| !entry.wanted() && entry.subscribed),
        }
    }

    /// Redis confirmed `batch`; returns the topics that were late and must be repaired.
    pub fn applied(&mut self, batch: &Batch) -> Vec<Topic> {
        for topic in &batch.unsubscribe {
            self.set_subscribed(topic, false);
        }
        let mut late = Vec::new();
        for topic in &batch.subscribe {
            self.set_subscribed(topic, true);
            if let Some(entry) = self.channels.get_mut(topic)
                && std::mem::take(&mut entry.late)
            {
                late.push(topic.clone());
            }
        }
        self.still_wanted(&late)
    }

    /// The subscriber connection was replaced: Redis knows none of our channels any more.
    /// Returns every wanted topic, to subscribe from scratch.
    pub fn reset(&mut self) -> Vec<Topic> {
        self.unsubscribe_all();
        self.wanted_topics()
    }

    /// Redis confirmed `topics` on a fresh connection; returns those still wanted, which may
    /// have lost events while the connection was down.
    pub fn reset_applied(&mut self, topics: &[Topic]) -> Vec<Topic> {
        self.unsubscribe_all();
        for topic in topics {
            self.set_subscribed(topic, true);
            if let Some(entry) = self.channels.get_mut(topic) {
                entry.late = false;
            }
        }
        self.still_wanted(topics)
    }

    /// Every wanted topic.
    pub fn wanted_topics(&self) -> Vec<Topic> {
        self.channels.topics_where(Channel::wanted)
    }

    pub fn subscribed(&self) -> usize {
        self.subscribed
    }

    /// No channel is subscribed any more; the ones that were only subscribed are forgotten.
    fn unsubscribe_all(&mut self) {
        for entry in self.channels.values_mut() {
            entry.subscribed = false;
        }
        self.subscribed = 0;
        self.channels.retain(|entry| !entry.forgettable());
    }

    fn set_subscribed(&mut self, topic: &Topic, subscribed: bool) {
        let entry = self.channels.entry(topic);
        if entry.subscribed != subscribed {
            entry.subscribed = subscribed;
            if subscribed {
                self.subscribed += 1;
            } else {
                self.subscribed -= 1;
            }
        }
        self.tidy(topic);
    }

    fn tidy(&mut self, topic: &Topic) {
        if self.channels.get(topic).is_some_and(Channel::forgettable) {
            self.channels.remove(topic);
        }
    }

    fn still_wanted(&self, topics: &[Topic]) -> Vec<Topic> {
        topics
            .iter()
            .filter(|topic| self.is_wanted(topic))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str) -> Topic {
        Topic::Room(RoomId::parse(id).unwrap())
    }

    fn sorted(mut topics: Vec<Topic>) -> Vec<String> {
        topics.sort_by_key(channel);
        channels(&topics)
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
    fn a_users_entry_is_its_id_and_eight_bytes() {
        // Every connected user has one: a larger key or count costs every connection.
        assert_eq!(size_of::<Channel>(), 8);
        assert_eq!(size_of::<UserId>(), 16);
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
        let x = room("x");
        interest.add(&x, 1);
        interest.add(&x, 1);
        let batch = interest.diff();
        assert_eq!(batch.subscribe, vec![x.clone()]);
        assert!(!interest.confirmed(std::slice::from_ref(&x)));
        assert!(interest.applied(&batch).is_empty());
        assert!(interest.confirmed(std::slice::from_ref(&x)));
        interest.add(&x, -1);
        assert!(interest.diff().is_empty(), "one reference left");
        interest.add(&x, -1);
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
        let x = room("x");
        interest.add(&x, 1);
        let batch = interest.diff();
        interest.applied(&batch);
        interest.add(&x, -1);
        interest.add(&x, 1);
        assert!(interest.diff().is_empty(), "no churn: stays subscribed");
        assert!(interest.confirmed(&[x]));
    }

    #[test]
    fn a_late_channel_is_repaired_once_confirmed() {
        let mut interest = Interest::default();
        let (x, y) = (room("x"), room("y"));
        interest.add(&x, 1);
        interest.add(&y, 1);
        interest.mark_late(std::slice::from_ref(&x));
        let batch = interest.diff();
        assert_eq!(sorted(batch.subscribe.clone()), ["sb:room:x", "sb:room:y"]);
        assert_eq!(interest.applied(&batch), vec![x]);
        assert!(interest.applied(&Batch::default()).is_empty(), "once");
    }

    #[test]
    fn a_reset_resubscribes_every_wanted_channel_and_repairs_them() {
        let mut interest = Interest::default();
        let x = room("x");
        let user = Topic::User(UserId::parse("alice").unwrap());
        interest.add(&x, 1);
        interest.add(&user, 1);
        let batch = interest.diff();
        interest.applied(&batch);
        let all = interest.reset();
        assert_eq!(sorted(all.clone()), ["sb:room:x", "sb:user:alice"]);
        assert!(!interest.confirmed(std::slice::from_ref(&x)));
        assert_eq!(
            sorted(interest.reset_applied(&all)),
            ["sb:room:x", "sb:user:alice"]
        );
        assert!(interest.confirmed(&[x, user]));
    }
}

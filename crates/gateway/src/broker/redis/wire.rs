//! What travels on a Redis channel: the envelope, encoded once per publish with MessagePack
//! (named fields, the same shape as the JSON codec), with who sent it and a per-node id.
//!
//! An envelope for several topics is published on each of their channels, so a node subscribed
//! to two of them receives it twice; [`Recent`] lets it through once.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::broker::Envelope;

#[derive(Debug, Serialize)]
struct Outgoing<'a> {
    origin: &'a str,
    id: u64,
    envelope: &'a Envelope,
}

/// A decoded message from another node (or this one: the caller drops those).
#[derive(Debug, Deserialize)]
pub(crate) struct Incoming {
    /// The publishing node's id.
    pub origin: String,
    /// Unique per origin among recent messages: a counter started at a random value, so a
    /// restarted node with the same id does not collide with its previous life.
    pub id: u64,
    pub envelope: Envelope,
}

pub(crate) fn encode(origin: &str, id: u64, envelope: &Envelope) -> Result<Bytes, String> {
    rmp_serde::to_vec_named(&Outgoing {
        origin,
        id,
        envelope,
    })
    .map(Bytes::from)
    .map_err(|e| e.to_string())
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Incoming, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

/// The last `capacity` (origin, id) pairs seen, to let a multi-channel message through once.
#[derive(Debug)]
pub(crate) struct Recent {
    order: VecDeque<(String, u64)>,
    seen: HashSet<(String, u64)>,
    capacity: usize,
}

impl Recent {
    pub fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::with_capacity(capacity),
            seen: HashSet::with_capacity(capacity),
            capacity,
        }
    }

    /// True the first time a pair is seen (among the last `capacity`).
    pub fn first_time(&mut self, origin: &str, id: u64) -> bool {
        let key = (origin.to_owned(), id);
        if self.seen.contains(&key) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.seen.insert(key);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{ConnId, Event, Topic};
    use switchboard_protocol::{
        Message, MessageKind, PresenceStatus, RoomId, ServerFrame, UserId, UserRef,
    };

    fn alice() -> UserRef {
        UserRef {
            id: UserId::parse("alice").unwrap(),
            name: "Alice".into(),
        }
    }

    #[test]
    fn every_kind_of_event_survives_the_trip() {
        let room = RoomId::parse("general").unwrap();
        let message = Message {
            message_id: "m1".into(),
            room_id: room.clone(),
            seq: 7,
            sender: alice(),
            kind: MessageKind::Text,
            content: "héllo".into(),
            client_msg_id: "c1".into(),
            created_at: 1_700_000_000_000,
        };
        let envelopes = [
            Envelope {
                topics: vec![Topic::Room(room.clone()), Topic::User(alice().id)],
                event: Event::Frame {
                    frame: ServerFrame::MessageNew { message },
                    skip_conn: Some(ConnId::new("n1", 3)),
                    skip_user: None,
                },
            },
            Envelope::frame(
                vec![Topic::User(alice().id)],
                ServerFrame::PresenceUpdate {
                    user_id: alice().id,
                    status: PresenceStatus::Away,
                },
            ),
            Envelope::frame(vec![], ServerFrame::Pong { id: None }),
            Envelope {
                topics: vec![Topic::User(alice().id)],
                event: Event::MemberJoined {
                    user: alice().id,
                    room: room.clone(),
                    since_seq: 4,
                    skip_conn: None,
                    feed: true,
                },
            },
            Envelope {
                topics: vec![Topic::User(alice().id)],
                event: Event::KickUser {
                    user: alice().id,
                    code: 4008,
                },
            },
            Envelope {
                topics: vec![Topic::Room(room.clone())],
                event: Event::RoomKind {
                    room: room.clone(),
                    feed: true,
                },
            },
            Envelope {
                topics: vec![Topic::User(alice().id)],
                event: Event::MemberLeft {
                    user: alice().id,
                    room,
                },
            },
            Envelope {
                topics: vec![Topic::User(alice().id)],
                event: Event::Kick {
                    conn: ConnId::new("n2", 1),
                    code: 4003,
                },
            },
        ];
        for (i, envelope) in envelopes.iter().enumerate() {
            let bytes = encode("node-a", i as u64, envelope).unwrap();
            let back = decode(&bytes).unwrap();
            assert_eq!((back.origin.as_str(), back.id), ("node-a", i as u64));
            assert_eq!(format!("{:?}", back.envelope), format!("{envelope:?}"));
        }
    }

    #[test]
    fn garbage_is_refused_not_misread() {
        assert!(decode(b"\x93hello").is_err());
        assert!(decode(b"").is_err());
    }

    #[test]
    fn recent_lets_each_pair_through_once_and_stays_bounded() {
        let mut recent = Recent::new(3);
        assert!(recent.first_time("a", 1));
        assert!(!recent.first_time("a", 1));
        assert!(recent.first_time("b", 1), "another origin");
        assert!(recent.first_time("a", 2));
        assert!(recent.first_time("a", 3));
        assert_eq!(recent.len(), 3);
        assert!(
            recent.first_time("a", 1),
            "forgotten: the oldest went first"
        );
        assert_eq!(recent.len(), 3);
    }
}

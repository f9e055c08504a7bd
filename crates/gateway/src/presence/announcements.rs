//! What the app's backend was told about who is online, debounced, for one process: the rules
//! the Redis presence keeps in its scripts (`redis.rs`), kept here for the in-memory presence.
//!
//! Per subject (a user, a room): the generation it was announced online (occupied) under (none:
//! announced offline, or never announced), since when it has been without a connection (a room:
//! without a user counted toward it), and the announcement owed to the outbox while its lease
//! runs. Subjects with something to look at are in `due`, by time. Rooms have no grace: the
//! users counted toward them already had theirs.

use std::collections::{BTreeSet, HashMap, HashSet};

use switchboard_protocol::{RoomId, UserId};

use super::{Announcement, Subject};

#[derive(Debug, Default)]
pub(super) struct Announcements {
    subjects: HashMap<Subject, State>,
    due: BTreeSet<(u64, Subject)>,
    generation: u64,
    /// Room → the users counted toward its occupancy, and the reverse.
    occupants: HashMap<RoomId, HashSet<UserId>>,
    rooms_of: HashMap<UserId, HashSet<RoomId>>,
}

#[derive(Debug, Default)]
struct State {
    generation: Option<u64>,
    offline_since: Option<u64>,
    owed: Option<Owed>,
    due: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Owed {
    online: bool,
    generation: u64,
    at: u64,
    leased_until: u64,
}

impl Announcements {
    pub(super) fn watch(&mut self, user: &UserId, offline_since: Option<u64>, now: u64) {
        let subject = Subject::User(user.clone());
        let state = self.subjects.entry(subject.clone()).or_default();
        if offline_since.is_some() {
            state.offline_since = offline_since;
        }
        let at = offline_since.unwrap_or(now);
        Self::schedule(&mut self.due, &subject, state, at);
    }

    pub(super) fn enter_rooms(&mut self, user: &UserId, rooms: &[RoomId], now: u64) {
        let announced = self
            .subjects
            .get(&Subject::User(user.clone()))
            .is_some_and(|s| s.generation.is_some());
        if !announced {
            return;
        }
        for room in rooms {
            self.occupants
                .entry(room.clone())
                .or_default()
                .insert(user.clone());
            self.rooms_of
                .entry(user.clone())
                .or_default()
                .insert(room.clone());
            self.look_at_room(room, now);
        }
    }

    pub(super) fn leave_rooms(&mut self, user: &UserId, rooms: Option<&[RoomId]>, now: u64) {
        let left: Vec<RoomId> = match rooms {
            Some(rooms) => rooms.to_vec(),
            None => self
                .rooms_of
                .get(user)
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default(),
        };
        for room in &left {
            if let Some(users) = self.occupants.get_mut(room) {
                users.remove(user);
                if users.is_empty() {
                    self.occupants.remove(room);
                }
            }
            if let Some(rooms) = self.rooms_of.get_mut(user) {
                rooms.remove(room);
                if rooms.is_empty() {
                    self.rooms_of.remove(user);
                }
            }
            self.look_at_room(room, now);
        }
    }

    fn look_at_room(&mut self, room: &RoomId, now: u64) {
        let subject = Subject::Room(room.clone());
        let state = self.subjects.entry(subject.clone()).or_default();
        Self::schedule(&mut self.due, &subject, state, now);
    }

    fn schedule(due: &mut BTreeSet<(u64, Subject)>, subject: &Subject, state: &mut State, at: u64) {
        if let Some(old) = state.due.replace(at) {
            due.remove(&(old, subject.clone()));
        }
        due.insert((at, subject.clone()));
    }

    /// Up to `max` announcements due at `now`; `online` says whether a user has a connection.
    pub(super) fn due(
        &mut self,
        now: u64,
        max: usize,
        grace_ms: u64,
        lease_ms: u64,
        online: impl Fn(&UserId) -> bool,
    ) -> Vec<Announcement> {
        let ready: Vec<Subject> = self
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(max)
            .map(|(_, subject)| subject.clone())
            .collect();
        let mut out = Vec::new();
        for subject in ready {
            let (live, grace_ms) = match &subject {
                Subject::User(user) => (online(user), grace_ms),
                Subject::Room(room) => (self.occupants.contains_key(room), 0),
            };
            let Some(state) = self.subjects.get_mut(&subject) else {
                continue;
            };
            if let Some(due) = state.due.take() {
                self.due.remove(&(due, subject.clone()));
            }
            let owed = match state.owed {
                Some(owed) if owed.leased_until > now => {
                    Self::schedule(&mut self.due, &subject, state, owed.leased_until);
                    continue;
                }
                Some(owed) => Some(owed),
                None if live => {
                    state.offline_since = None;
                    match state.generation {
                        Some(_) => None,
                        None => {
                            self.generation += 1;
                            state.generation = Some(self.generation);
                            Some(Owed {
                                online: true,
                                generation: self.generation,
                                at: now,
                                leased_until: 0,
                            })
                        }
                    }
                }
                None => match state.generation {
                    Some(generation) => {
                        let since = *state.offline_since.get_or_insert(now);
                        if now >= since.saturating_add(grace_ms) {
                            state.generation = None;
                            state.offline_since = None;
                            Some(Owed {
                                online: false,
                                generation,
                                at: since,
                                leased_until: 0,
                            })
                        } else {
                            Self::schedule(&mut self.due, &subject, state, since + grace_ms);
                            continue;
                        }
                    }
                    None => None,
                },
            };
            match owed {
                Some(mut owed) => {
                    owed.leased_until = now.saturating_add(lease_ms);
                    state.owed = Some(owed);
                    Self::schedule(&mut self.due, &subject, state, owed.leased_until);
                    out.push(Announcement {
                        subject,
                        online: owed.online,
                        generation: owed.generation,
                        at: owed.at,
                    });
                }
                None if state.generation.is_none() => {
                    self.subjects.remove(&subject);
                }
                None => {}
            }
        }
        out
    }

    pub(super) fn settled(&mut self, announcement: &Announcement) {
        let subject = &announcement.subject;
        let Some(state) = self.subjects.get_mut(subject) else {
            return;
        };
        if state.owed.is_some_and(|owed| {
            owed.generation == announcement.generation && owed.online == announcement.online
        }) {
            state.owed = None;
            // What changed while it was owed is looked at now.
            Self::schedule(&mut self.due, subject, state, 0);
        }
    }
}

/// An owed announcement as the Redis scripts store it: `on|<generation>|<at>` or
/// `off|<generation>|<at>`.
pub(super) fn encode(online: bool, generation: u64, at: u64) -> String {
    format!("{}|{generation}|{at}", if online { "on" } else { "off" })
}

pub(super) fn decode(subject: Subject, owed: &str) -> Option<Announcement> {
    let mut parts = owed.split('|');
    let online = match parts.next()? {
        "on" => true,
        "off" => false,
        _ => return None,
    };
    let generation = parts.next()?.parse().ok()?;
    let at = parts.next()?.parse().ok()?;
    Some(Announcement {
        subject,
        online,
        generation,
        at,
    })
}

/// A subject as the Redis scripts name it: `u|<user>` or `r|<room>` (neither id holds a `|`).
pub(super) fn subject_name(subject: &Subject) -> String {
    match subject {
        Subject::User(user) => format!("u|{user}"),
        Subject::Room(room) => format!("r|{room}"),
    }
}

pub(super) fn parse_subject(name: &str) -> Option<Subject> {
    match name.split_once('|')? {
        ("u", user) => UserId::parse(user).ok().map(Subject::User),
        ("r", room) => RoomId::parse(room).ok().map(Subject::Room),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::parse("alice").expect("valid id")
    }

    fn lobby() -> RoomId {
        RoomId::parse("lobby").expect("valid id")
    }

    #[test]
    fn owed_announcements_and_subjects_read_back_as_stored() {
        let stored = encode(false, 7, 1_795_782_708_123);
        assert_eq!(stored, "off|7|1795782708123");
        let back = decode(Subject::User(alice()), &stored).expect("decodes");
        assert_eq!(
            (back.online, back.generation, back.at),
            (false, 7, 1_795_782_708_123)
        );
        assert_eq!(decode(Subject::User(alice()), "maybe|1|2"), None);
        assert_eq!(decode(Subject::User(alice()), "on|x|2"), None);
        for subject in [Subject::User(alice()), Subject::Room(lobby())] {
            assert_eq!(parse_subject(&subject_name(&subject)), Some(subject));
        }
        assert_eq!(parse_subject("x|alice"), None);
    }

    #[test]
    fn a_return_within_the_grace_is_never_announced_and_a_lease_hands_it_out_again() {
        let mut a = Announcements::default();
        let user = alice();
        a.watch(&user, None, 1_000);
        let online = a.due(1_000, 10, 5_000, 100, |_| true);
        assert_eq!(online.len(), 1);
        assert!(online[0].online);
        // Not settled: leased, then handed out again, the same announcement.
        assert!(a.due(1_050, 10, 5_000, 100, |_| true).is_empty());
        assert_eq!(a.due(1_100, 10, 5_000, 100, |_| true), online);
        a.settled(&online[0]);
        assert!(a.due(1_100, 10, 5_000, 100, |_| true).is_empty());

        // Gone at 2,000 and back at 4,000: nothing to tell.
        a.watch(&user, Some(2_000), 2_000);
        assert!(a.due(2_000, 10, 5_000, 100, |_| false).is_empty());
        a.watch(&user, None, 4_000);
        assert!(a.due(7_000, 10, 5_000, 100, |_| true).is_empty());

        // Gone at 8,000 for good: offline once the grace is over, last seen at 8,000.
        a.watch(&user, Some(8_000), 8_000);
        assert!(a.due(12_999, 10, 5_000, 100, |_| false).is_empty());
        let offline = a.due(13_000, 10, 5_000, 100, |_| false);
        assert_eq!(offline.len(), 1);
        assert!(!offline[0].online);
        assert_eq!(
            (offline[0].generation, offline[0].at),
            (online[0].generation, 8_000)
        );
        a.settled(&offline[0]);
        assert!(a.due(20_000, 10, 5_000, 100, |_| false).is_empty());
        assert!(
            a.subjects.is_empty() && a.due.is_empty(),
            "nothing kept: {a:?}"
        );
    }

    #[test]
    fn a_room_is_occupied_while_an_announced_member_counts_toward_it() {
        let mut a = Announcements::default();
        let (user, room) = (alice(), lobby());
        // Not announced online yet: does not count.
        a.enter_rooms(&user, std::slice::from_ref(&room), 1_000);
        assert!(a.occupants.is_empty());
        a.watch(&user, None, 1_000);
        let online = a.due(1_000, 10, 5_000, 100, |_| true);
        a.settled(&online[0]);
        a.enter_rooms(&user, std::slice::from_ref(&room), 1_000);
        let occupied = a.due(1_000, 10, 5_000, 100, |_| true);
        assert_eq!(occupied.len(), 1);
        assert_eq!(occupied[0].subject, Subject::Room(room.clone()));
        assert!(occupied[0].online);
        a.settled(&occupied[0]);
        // Leaving every room: vacated at once, rooms have no grace of their own.
        a.leave_rooms(&user, None, 2_000);
        let vacated = a.due(2_000, 10, 5_000, 100, |_| true);
        assert_eq!(vacated.len(), 1);
        assert!(!vacated[0].online);
        assert_eq!(vacated[0].generation, occupied[0].generation);
        a.settled(&vacated[0]);
        assert!(a.due(2_000, 10, 5_000, 100, |_| true).is_empty());
        assert!(a.occupants.is_empty() && a.rooms_of.is_empty());
    }
}

//! What the app's backend was told about who is online, debounced, for one process: the rules
//! the Redis presence keeps in its scripts (`redis.rs`), kept here for the in-memory presence.
//!
//! Per user: the generation they were announced online under (none: announced offline, or never
//! announced), since when they have had no connection, and the announcement owed to the
//! outbox while its lease runs. Users with something to look at are in `due`, by time.

use std::collections::{BTreeSet, HashMap};

use switchboard_protocol::UserId;

use super::Announcement;

#[derive(Debug, Default)]
pub(super) struct Announcements {
    users: HashMap<UserId, State>,
    due: BTreeSet<(u64, UserId)>,
    generation: u64,
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
        let state = self.users.entry(user.clone()).or_default();
        if offline_since.is_some() {
            state.offline_since = offline_since;
        }
        let at = offline_since.unwrap_or(now);
        Self::schedule(&mut self.due, user, state, at);
    }

    fn schedule(due: &mut BTreeSet<(u64, UserId)>, user: &UserId, state: &mut State, at: u64) {
        if let Some(old) = state.due.replace(at) {
            due.remove(&(old, user.clone()));
        }
        due.insert((at, user.clone()));
    }

    /// Up to `max` announcements due at `now`; `live` says whether a user has a connection.
    pub(super) fn due(
        &mut self,
        now: u64,
        max: usize,
        grace_ms: u64,
        lease_ms: u64,
        live: impl Fn(&UserId) -> bool,
    ) -> Vec<Announcement> {
        let ready: Vec<UserId> = self
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(max)
            .map(|(_, user)| user.clone())
            .collect();
        let mut out = Vec::new();
        for user in ready {
            let Some(state) = self.users.get_mut(&user) else {
                continue;
            };
            if let Some(due) = state.due.take() {
                self.due.remove(&(due, user.clone()));
            }
            let owed = match state.owed {
                Some(owed) if owed.leased_until > now => {
                    Self::schedule(&mut self.due, &user, state, owed.leased_until);
                    continue;
                }
                Some(owed) => Some(owed),
                None if live(&user) => {
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
                            Self::schedule(&mut self.due, &user, state, since + grace_ms);
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
                    Self::schedule(&mut self.due, &user, state, owed.leased_until);
                    out.push(Announcement {
                        user,
                        online: owed.online,
                        generation: owed.generation,
                        at: owed.at,
                    });
                }
                None if state.generation.is_none() => {
                    self.users.remove(&user);
                }
                None => {}
            }
        }
        out
    }

    pub(super) fn settled(&mut self, announcement: &Announcement) {
        let Some(state) = self.users.get_mut(&announcement.user) else {
            return;
        };
        if state.owed.is_some_and(|owed| {
            owed.generation == announcement.generation && owed.online == announcement.online
        }) {
            state.owed = None;
            // What changed while it was owed is looked at now.
            Self::schedule(&mut self.due, &announcement.user, state, 0);
        }
    }
}

/// An owed announcement as the Redis scripts store it: `on|<generation>|<at>` or
/// `off|<generation>|<at>`.
pub(super) fn encode(online: bool, generation: u64, at: u64) -> String {
    format!("{}|{generation}|{at}", if online { "on" } else { "off" })
}

pub(super) fn decode(user: UserId, owed: &str) -> Option<Announcement> {
    let mut parts = owed.split('|');
    let online = match parts.next()? {
        "on" => true,
        "off" => false,
        _ => return None,
    };
    let generation = parts.next()?.parse().ok()?;
    let at = parts.next()?.parse().ok()?;
    Some(Announcement {
        user,
        online,
        generation,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::parse("alice").expect("valid id")
    }

    #[test]
    fn owed_announcements_read_back_as_stored() {
        let stored = encode(false, 7, 1_795_782_708_123);
        assert_eq!(stored, "off|7|1795782708123");
        let back = decode(alice(), &stored).expect("decodes");
        assert_eq!(
            (back.online, back.generation, back.at),
            (false, 7, 1_795_782_708_123)
        );
        assert_eq!(decode(alice(), "maybe|1|2"), None);
        assert_eq!(decode(alice(), "on|x|2"), None);
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
            a.users.is_empty() && a.due.is_empty(),
            "nothing kept: {a:?}"
        );
    }
}

//! The push rule's passes on the embedded store (the rule: `webhooks/push.rs`).

use switchboard_protocol::{RoomId, UserId};

use super::Inner;
use crate::webhooks::push::{
    PASS_LIMIT, PushBatch, PushMessage, PushNotification, PushNotifications, PushRoom, PushRule,
};

/// A member's push state in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MemberPush {
    pub(super) muted: bool,
    /// Their messages up to this seq were pushed to them, or need never be.
    pub(super) pushed_seq: u64,
}

impl MemberPush {
    /// A member from the room's `seq` on: what came before is not theirs to be pushed.
    pub(super) fn since(seq: u64) -> Self {
        Self {
            muted: false,
            pushed_seq: seq,
        }
    }

    /// Unmuting does not owe them what came while muted.
    pub(super) fn set_muted(&mut self, muted: bool, last_seq: u64) {
        if self.muted && !muted {
            self.pushed_seq = self.pushed_seq.max(last_seq);
        }
        self.muted = muted;
    }
}

/// A user's push state for notifications.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct UserPush {
    due: Option<u64>,
    /// Their notifications up to this id were looked at by a pass.
    pushed_id: u64,
}

impl Inner {
    /// Makes `room` due at `due` unless it already is.
    pub(super) fn room_due(&mut self, room: &RoomId, due: u64) {
        if let Some(state) = self.rooms.get_mut(room)
            && state.push_due.is_none()
        {
            state.push_due = Some(due);
            self.due_rooms.insert((due, room.clone()));
        }
    }

    /// Makes `user`'s notifications due at `due` unless they already are.
    pub(super) fn user_due(&mut self, user: &UserId, due: u64) {
        let push = self.user_push.entry(user.clone()).or_default();
        if push.due.is_none() {
            push.due = Some(due);
            self.due_users.insert((due, user.clone()));
        }
    }

    /// One pass at `now`: what is owed, marked as made; and whether more is due than one pass
    /// looks at.
    pub(super) fn push_pass(&mut self, rule: PushRule, now: u64) -> (PushBatch, bool) {
        let cutoff = rule.cutoff(now);
        let mut batch = PushBatch::default();
        let rooms = take_due(&mut self.due_rooms, now);
        let users = take_due(&mut self.due_users, now);
        let more = rooms.len() == PASS_LIMIT || users.len() == PASS_LIMIT;
        for room in rooms {
            let next = self.push_room(&room, rule, cutoff, &mut batch);
            if let Some(state) = self.rooms.get_mut(&room) {
                state.push_due = None;
            }
            if let Some(due) = next {
                self.room_due(&room, due);
            }
        }
        for user in users {
            let next = self.push_notifications(&user, rule, cutoff, &mut batch);
            if let Some(push) = self.user_push.get_mut(&user) {
                push.due = None;
            }
            if let Some(due) = next {
                self.user_due(&user, due);
            }
        }
        (batch, more)
    }

    /// What `room`'s members are owed of its messages up to `cutoff`; returns when the room is
    /// due next, if newer messages wait.
    fn push_room(
        &mut self,
        room: &RoomId,
        rule: PushRule,
        cutoff: u64,
        batch: &mut PushBatch,
    ) -> Option<u64> {
        let Inner { rooms, reads, .. } = self;
        let state = rooms.get_mut(room)?;
        let messages = &state.messages;
        // Messages are kept in seq order; the oldest still kept may be past the cutoff.
        let old_enough = messages.partition_point(|m| m.created_at <= cutoff);
        let next_due = messages.get(old_enough).map(|m| rule.due(m.created_at));
        let cut = match old_enough.checked_sub(1) {
            Some(last) => messages[last].seq,
            None => return next_due,
        };
        let info = &state.record.info;
        for (user, membership) in state.members.iter_mut() {
            let push = &mut membership.push;
            let read = reads
                .get(&(user.clone(), room.clone()))
                .copied()
                .unwrap_or(0);
            let from = read.max(push.pushed_seq);
            if push.muted || from >= cut {
                continue;
            }
            push.pushed_seq = cut;
            // The latest owed message someone else sent; their own alone owe nothing.
            let owed = messages
                .range(..old_enough)
                .rev()
                .take_while(|m| m.seq > from)
                .find(|m| m.sender.id != *user);
            if let Some(message) = owed {
                batch.room(
                    user.clone(),
                    PushRoom {
                        room_id: room.clone(),
                        name: info.name.clone(),
                        unread: info.last_seq.saturating_sub(read),
                        message: PushMessage::of(message),
                    },
                );
            }
        }
        next_due
    }

    /// What `user` is owed of their notifications up to `cutoff`; returns when they are due
    /// next, if newer unread ones wait.
    fn push_notifications(
        &mut self,
        user: &UserId,
        rule: PushRule,
        cutoff: u64,
        batch: &mut PushBatch,
    ) -> Option<u64> {
        let list = self.notifications.get(user)?;
        let push = self.user_push.get_mut(user)?;
        let fresh = || list.iter().filter(|n| n.id > push.pushed_id);
        let owed = fresh()
            .filter(|n| n.created_at <= cutoff && n.read_at.is_none())
            .max_by_key(|n| n.id);
        if let Some(latest) = owed {
            let unread = list.iter().filter(|n| n.read_at.is_none()).count() as u64;
            batch.notifications(
                user.clone(),
                PushNotifications {
                    unread,
                    latest: PushNotification::of(latest),
                },
            );
        }
        let looked_at = fresh()
            .filter(|n| n.created_at <= cutoff)
            .map(|n| n.id)
            .max();
        if let Some(id) = looked_at {
            push.pushed_id = id;
        }
        let pushed_id = push.pushed_id;
        list.iter()
            .filter(|n| n.id > pushed_id && n.read_at.is_none())
            .map(|n| rule.due(n.created_at))
            .min()
    }
}

/// Up to [`PASS_LIMIT`] entries due at `now`, taken out of `due`.
fn take_due<T: Ord + Clone>(due: &mut std::collections::BTreeSet<(u64, T)>, now: u64) -> Vec<T> {
    let mut taken = Vec::new();
    while taken.len() < PASS_LIMIT {
        match due.first() {
            Some((at, _)) if *at <= now => {
                if let Some((_, item)) = due.pop_first() {
                    taken.push(item);
                }
            }
            _ => break,
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmuting_does_not_owe_what_came_while_muted() {
        let mut push = MemberPush::since(3);
        push.set_muted(true, 3);
        assert_eq!(push.pushed_seq, 3);
        push.set_muted(false, 9);
        assert_eq!(
            push,
            MemberPush {
                muted: false,
                pushed_seq: 9
            }
        );
        push.set_muted(false, 12);
        assert_eq!(push.pushed_seq, 9, "already unmuted: nothing changes");
    }
}

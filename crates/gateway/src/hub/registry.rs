//! The node-local registry behind the hub's lock: which sessions are here, which rooms and users
//! they follow with their floors, and the delivery of frames into their queues.

use std::collections::{HashMap, HashSet};

use switchboard_protocol::{RoomId, ServerFrame, UserId};

use super::SessionHandle;
use super::sequencer::Sequencer;
use crate::broker::{ConnId, ConnIds, Envelope, Event, Topic};
use crate::metrics;
use crate::outbound::SharedFrame;

/// Floor of a connection attached to a room but not yet live: it receives nothing.
pub(super) const NOT_LIVE: u64 = u64::MAX;

/// Everything the hub knows, under one lock: dispatch reads it for every delivery, and each
/// change (attach, go live, detach) must be atomic with respect to delivery.
#[derive(Debug, Default)]
pub(super) struct Registry {
    /// Every session on this node.
    pub(super) conns: HashMap<ConnId, ConnEntry>,
    /// Rooms with at least one attached session here; a room leaves with its last session.
    pub(super) rooms: HashMap<RoomId, RoomEntry>,
    /// Users with at least one session here, and those sessions.
    pub(super) users: HashMap<UserId, ConnIds>,
}

/// One session: how to reach it, and the rooms it is attached to (live or not).
#[derive(Debug)]
pub(super) struct ConnEntry {
    pub(super) handle: SessionHandle,
    pub(super) rooms: HashSet<RoomId>,
}

/// One room on this node.
#[derive(Debug, Default)]
pub(super) struct RoomEntry {
    /// Attached connections and their floors: each receives only seqs above its floor, and
    /// nothing while its floor is [`NOT_LIVE`].
    pub(super) subs: HashMap<ConnId, u64>,
    /// The room's delivery order on this node.
    pub(super) seq: Sequencer,
    /// A feed: its sessions may read, not publish. Set by whoever makes the entry follow it.
    pub(super) feed: bool,
}

impl Registry {
    /// Adds `conn` to `room`, not live yet; true when the room is new on this node.
    pub(super) fn attach(&mut self, conn: &ConnId, room: &RoomId) -> bool {
        let Some(entry) = self.conns.get_mut(conn) else {
            return false;
        };
        if !entry.rooms.insert(room.clone()) {
            return false;
        }
        let new = !self.rooms.contains_key(room);
        self.rooms
            .entry(room.clone())
            .or_default()
            .subs
            .insert(conn.clone(), NOT_LIVE);
        new
    }

    /// Starts live delivery of `room` to `conn` after `floor`, a position read after `conn`
    /// was attached, and delivers whatever held message that makes next in line.
    ///
    /// Returns the effective floor: above `floor` when this node already delivered the messages
    /// in between to others, so the session must read them from the store itself. `None` when
    /// `conn` is not attached to `room`. A connection that is live already keeps its floor.
    pub(super) fn go_live(&mut self, conn: &ConnId, room: &RoomId, floor: u64) -> Option<u64> {
        let entry = self.rooms.get_mut(room)?;
        let current = *entry.subs.get(conn)?;
        if current != NOT_LIVE {
            // Already live: its floor stands (lowering it would repeat what it read).
            return self.live_position(conn, room);
        }
        let effective = match entry.seq.delivered {
            Some(delivered) => floor.max(delivered),
            None => {
                entry.seq.start_at(floor);
                floor
            }
        };
        *entry.subs.get_mut(conn)? = effective;
        self.drain_room(room);
        Some(effective)
    }

    /// Marks `room` as a feed or not, if any session here follows it.
    pub(super) fn set_feed(&mut self, room: &RoomId, feed: bool) {
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.feed = feed;
        }
    }

    /// Where live delivery of `room` to `conn` stands: every seq up to it is either queued for
    /// the session or covered by what it read. `None` unless the connection is live there.
    pub(super) fn live_position(&self, conn: &ConnId, room: &RoomId) -> Option<u64> {
        let entry = self.rooms.get(room)?;
        let floor = entry.subs.get(conn).copied().filter(|f| *f != NOT_LIVE)?;
        Some(entry.seq.delivered.map_or(floor, |d| d.max(floor)))
    }

    /// Removes `conn` from `room`; true when the room has no session left on this node.
    pub(super) fn unsubscribe_room(&mut self, conn: &ConnId, room: &RoomId) -> bool {
        let Some(entry) = self.rooms.get_mut(room) else {
            return false;
        };
        entry.subs.remove(conn);
        if entry.subs.is_empty() {
            self.rooms.remove(room);
            return true;
        }
        false
    }

    /// Delivers every held message of `room` that is now next in line.
    pub(super) fn drain_room(&mut self, room: &RoomId) {
        while let Some(envelope) = self.rooms.get_mut(room).and_then(|r| r.seq.next_ready()) {
            self.deliver_room_message(room, &envelope);
        }
    }

    pub(super) fn deliver_room_message(&self, room: &RoomId, envelope: &Envelope) {
        let Event::Frame {
            frame: frame @ ServerFrame::MessageNew { message },
            skip_conn,
            skip_user,
        } = &envelope.event
        else {
            return;
        };
        let Some(entry) = self.rooms.get(room) else {
            return;
        };
        let mut shared = SharedFrame::new(frame);
        let mut sent = 0;
        for (conn, &floor) in &entry.subs {
            if message.seq <= floor || skip_conn.as_ref() == Some(conn) {
                continue;
            }
            let Some(target) = self.conns.get(conn) else {
                continue;
            };
            if skip_user.as_ref() == Some(&target.handle.user) {
                continue;
            }
            if let Some(bytes) = shared.get(target.handle.codec)
                && target.handle.push(bytes, shared.now_ms())
            {
                sent += 1;
            }
        }
        metrics::frames_out(sent);
    }

    /// Delivers any frame other than a room message: once per connection across all topics.
    pub(super) fn deliver_frame(
        &self,
        topics: &[Topic],
        frame: &ServerFrame,
        skip_conn: Option<&ConnId>,
        skip_user: Option<&UserId>,
    ) {
        let mut targets: Vec<&ConnId> = Vec::new();
        for topic in topics {
            match topic {
                Topic::Room(room) => {
                    if let Some(entry) = self.rooms.get(room) {
                        targets.extend(
                            entry
                                .subs
                                .iter()
                                .filter(|(_, floor)| **floor != NOT_LIVE)
                                .map(|(c, _)| c),
                        );
                    }
                }
                Topic::User(user) => {
                    if skip_user != Some(user)
                        && let Some(conns) = self.users.get(user)
                    {
                        targets.extend(conns.iter());
                    }
                }
            }
        }
        if topics.len() > 1 {
            targets.sort_unstable();
            targets.dedup();
        }
        let mut shared = SharedFrame::new(frame);
        let mut sent = 0;
        for conn in targets {
            if skip_conn == Some(conn) {
                continue;
            }
            let Some(target) = self.conns.get(conn) else {
                continue;
            };
            if skip_user == Some(&target.handle.user) {
                continue;
            }
            if let Some(bytes) = shared.get(target.handle.codec)
                && target.handle.push(bytes, shared.now_ms())
            {
                sent += 1;
            }
        }
        metrics::frames_out(sent);
    }
}

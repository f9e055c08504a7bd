//! Connection state recovery, as `socket.io-client` does it, on the store's seqs: the connect
//! answer gives the socket a private id (pid), every `message:new` event carries an offset as
//! its last argument, and a client that comes back presents both in its connect packet. Any node
//! can honour them: the pid holds the user and every room's position when the socket first
//! connected, the offset the rooms that moved since, so nothing is kept on the node that died.
//!
//! A pid is bound to its user (another user's token recovers nothing) and to a window after it
//! was issued; neither is secret: what a pid asks for is a `room:join` with `sinceSeq` of the
//! user's own rooms, which the user may send anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use switchboard_protocol::{RoomId, UserId};

use crate::session::{format_positions, parse_positions};

/// A socket's private id: who, since when, and where each of the user's rooms stood then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pid {
    pub user: UserId,
    pub issued_ms: u64,
    pub base: BTreeMap<RoomId, u64>,
}

#[derive(Serialize, Deserialize)]
struct PidWire {
    u: String,
    t: u64,
    p: String,
}

impl Pid {
    pub fn encode(&self) -> String {
        let wire = PidWire {
            u: self.user.to_string(),
            t: self.issued_ms,
            p: format_positions(&self.base),
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }

    pub fn parse(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let wire: PidWire = serde_json::from_slice(&bytes).ok()?;
        Some(Self {
            user: UserId::parse(wire.u).ok()?,
            issued_ms: wire.t,
            base: parse_positions(&wire.p)?,
        })
    }
}

/// The offset of a socket at `positions`: the rooms whose position moved from the pid's `base`.
pub fn offset(positions: &BTreeMap<RoomId, u64>, base: &BTreeMap<RoomId, u64>) -> String {
    let moved: BTreeMap<RoomId, u64> = positions
        .iter()
        .filter(|(room, seq)| base.get(*room) != Some(*seq))
        .map(|(room, seq)| (room.clone(), *seq))
        .collect();
    format_positions(&moved)
}

/// Where each room stands on a socket: the last seq handed over (or where the room stood when
/// the socket connected), what its offsets say. The socket's own sends get no `message:new`
/// back, so their seqs are kept until the position reaches them and moves on through: a
/// recovery then neither replays the socket's own messages nor skips one it has not seen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Positions {
    seen: BTreeMap<RoomId, u64>,
    own: BTreeMap<RoomId, BTreeSet<u64>>,
}

/// Own sends kept per room beyond its position; more are not counted (at worst replayed).
const MAX_OWN: usize = 4_096;

impl Positions {
    pub fn new(seen: BTreeMap<RoomId, u64>) -> Self {
        Self {
            seen,
            own: BTreeMap::new(),
        }
    }

    pub fn seen(&self) -> &BTreeMap<RoomId, u64> {
        &self.seen
    }

    /// `seq` of `room` was handed over (or the room stands there): the position moves to it
    /// if that is further, then on through the socket's own messages that follow.
    pub fn advance(&mut self, room: &RoomId, seq: u64) {
        let position = self.seen.entry(room.clone()).or_insert(0);
        *position = (*position).max(seq);
        if let Some(own) = self.own.get_mut(room) {
            while let Some(first) = own.first().copied().filter(|&first| first <= *position + 1) {
                own.pop_first();
                *position = (*position).max(first);
            }
            if own.is_empty() {
                self.own.remove(room);
            }
        }
    }

    /// The socket's own message `seq` of `room` was stored.
    pub fn sent(&mut self, room: &RoomId, seq: u64) {
        let own = self.own.entry(room.clone()).or_default();
        if own.len() < MAX_OWN {
            own.insert(seq);
        }
        self.advance(room, 0);
    }
}

/// What a client that comes back claims in its connect packet: `{"pid", "offset", ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The pid as presented: a recovered socket is answered with it unchanged.
    pub pid_text: String,
    pub pid: Pid,
    pub offset: BTreeMap<RoomId, u64>,
}

impl Claim {
    /// The claim in a connect packet's payload, if it holds a readable one.
    pub fn of_connect(payload: &str) -> Option<Self> {
        let payload: serde_json::Value = serde_json::from_str(payload).ok()?;
        let pid_text = payload.get("pid")?.as_str()?.to_owned();
        let pid = Pid::parse(&pid_text)?;
        let offset = match payload.get("offset") {
            Some(serde_json::Value::String(offset)) => parse_positions(offset)?,
            _ => BTreeMap::new(),
        };
        Some(Self {
            pid_text,
            pid,
            offset,
        })
    }

    /// Where to resume each of `members` from, or `None` when the claim is not honoured: it
    /// is another user's, or older than `window`. Rooms the user left since are not resumed.
    pub fn resume_points(
        &self,
        user: &UserId,
        now_ms: u64,
        window: Duration,
        members: &BTreeSet<RoomId>,
    ) -> Option<BTreeMap<RoomId, u64>> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        if self.pid.user != *user || now_ms.saturating_sub(self.pid.issued_ms) > window_ms {
            return None;
        }
        let mut points = self.pid.base.clone();
        points.extend(self.offset.iter().map(|(room, seq)| (room.clone(), *seq)));
        points.retain(|room, _| members.contains(room));
        Some(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str) -> RoomId {
        RoomId::parse(id).unwrap_or_else(|e| panic!("{e}"))
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap_or_else(|e| panic!("{e}"))
    }

    fn pid() -> Pid {
        Pid {
            user: user("alice"),
            issued_ms: 1_000,
            base: [(room("general"), 5), (room("dm:alice:bob"), 2)].into(),
        }
    }

    #[test]
    fn a_pid_reads_back_as_written() {
        let text = pid().encode();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Pid::parse(&text), Some(pid()));
        assert_eq!(Pid::parse("not a pid"), None);
    }

    #[test]
    fn the_offset_names_the_rooms_that_moved() {
        let mut positions = pid().base;
        assert_eq!(offset(&positions, &pid().base), "");
        positions.insert(room("general"), 7);
        positions.insert(room("new"), 1);
        assert_eq!(offset(&positions, &pid().base), "general:7,new:1");
    }

    #[test]
    fn positions_move_through_the_sockets_own_messages_but_never_past_a_gap() {
        let general = room("general");
        let mut positions = Positions::new([(general.clone(), 3)].into());
        // Its own 5 is stored while 4 (someone else's) is still on its way: 4 must not be skipped.
        positions.sent(&general, 5);
        assert_eq!(positions.seen()[&general], 3);
        positions.advance(&general, 4);
        assert_eq!(
            positions.seen()[&general],
            5,
            "4 handed over, then through its own 5"
        );
        positions.sent(&general, 6);
        assert_eq!(positions.seen()[&general], 6, "nothing before it: at once");
        positions.advance(&room("other"), 2);
        assert_eq!(positions.seen().len(), 2);
    }

    #[test]
    fn a_claim_resumes_its_own_users_rooms_within_the_window() {
        let connect =
            serde_json::json!({"token": "t", "pid": pid().encode(), "offset": "general:7,gone:3"});
        let claim = Claim::of_connect(&connect.to_string()).unwrap_or_else(|| panic!("a claim"));
        let members: BTreeSet<RoomId> = [room("general"), room("dm:alice:bob")].into();
        let window = Duration::from_secs(60);
        assert_eq!(
            claim.resume_points(&user("alice"), 2_000, window, &members),
            Some([(room("general"), 7), (room("dm:alice:bob"), 2)].into()),
            "the offset over the base; a room no longer the user's is left out"
        );
        assert_eq!(
            claim.resume_points(&user("mallory"), 2_000, window, &members),
            None
        );
        assert_eq!(
            claim.resume_points(&user("alice"), 62_001, window, &members),
            None
        );
        assert_eq!(Claim::of_connect(r#"{"token":"t"}"#), None);
        assert_eq!(Claim::of_connect(r#"{"pid":"x","offset":""}"#), None);
    }
}

//! Per-room delivery order on one node: a message is delivered when it is next in line, held
//! while it is early, and dropped when it was delivered before.

use std::collections::BTreeMap;

use crate::broker::Envelope;

/// Frames a room may hold back waiting for a missing seq before giving up on it.
pub(super) const MAX_HELD: usize = 1_024;

/// What to do with an arriving room message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Offer {
    /// Next in line: deliver now.
    Deliver,
    /// Early (or the room's position is not known yet): hold it.
    Hold,
    /// Already delivered: drop it.
    Stale,
}

/// Per-room delivery order on this node.
#[derive(Debug, Default)]
pub(super) struct Sequencer {
    /// The last seq delivered; `None` until the first session goes live.
    pub(super) delivered: Option<u64>,
    /// Early messages by seq, bounded by [`MAX_HELD`].
    pub(super) held: BTreeMap<u64, Envelope>,
    /// A repair from the store is scheduled; one at a time per room.
    pub(super) repairing: bool,
}

impl Sequencer {
    /// Sets the position once known: `seq` and everything before it count as delivered.
    pub(super) fn start_at(&mut self, seq: u64) {
        self.delivered = Some(seq);
        self.held = self.held.split_off(&(seq + 1));
    }

    pub(super) fn offer(&mut self, seq: u64) -> Offer {
        match self.delivered {
            None => Offer::Hold,
            Some(d) if seq <= d => Offer::Stale,
            Some(d) if seq == d + 1 => {
                self.delivered = Some(seq);
                Offer::Deliver
            }
            Some(_) => Offer::Hold,
        }
    }

    /// Holds an early message. When too many are held, skips the gap (returns true): the
    /// messages after it must not wait forever.
    pub(super) fn hold(&mut self, seq: u64, envelope: Envelope) -> bool {
        self.held.insert(seq, envelope);
        if self.held.len() <= MAX_HELD {
            return false;
        }
        match (self.delivered, self.held.keys().next()) {
            (Some(_), Some(&first)) => {
                self.delivered = Some(first - 1);
                true
            }
            _ => {
                // Position unknown and overflowing: drop the oldest to stay bounded.
                self.held.pop_first();
                true
            }
        }
    }

    /// The held message that is next in line, if any; it counts as delivered.
    pub(super) fn next_ready(&mut self) -> Option<Envelope> {
        let next = self.delivered? + 1;
        let envelope = self.held.remove(&next)?;
        self.delivered = Some(next);
        Some(envelope)
    }
}

#[cfg(test)]
mod tests {
    use switchboard_protocol::ServerFrame;

    use super::*;

    fn envelope() -> Envelope {
        Envelope::frame(vec![], ServerFrame::Pong { id: None })
    }

    #[test]
    fn sequencer_holds_early_messages_until_the_gap_fills() {
        let mut seq = Sequencer::default();
        assert_eq!(seq.offer(5), Offer::Hold);
        seq.hold(5, envelope());
        seq.start_at(3);
        assert!(seq.next_ready().is_none());
        assert_eq!(seq.offer(4), Offer::Deliver);
        assert!(seq.next_ready().is_some(), "5 follows 4");
        assert_eq!(seq.delivered, Some(5));
        assert_eq!(seq.offer(5), Offer::Stale);
        assert_eq!(seq.offer(7), Offer::Hold);
    }

    #[test]
    fn sequencer_skips_a_gap_rather_than_grow_without_bound() {
        let mut seq = Sequencer::default();
        seq.start_at(0);
        let mut skipped = false;
        for s in 2..=(MAX_HELD as u64 + 2) {
            skipped |= seq.hold(s, envelope());
        }
        assert!(skipped);
        let mut delivered = 0;
        while seq.next_ready().is_some() {
            delivered += 1;
        }
        assert_eq!(delivered, MAX_HELD + 1);
        assert!(seq.held.is_empty());
    }

    #[test]
    fn start_at_drops_what_the_store_read_covered() {
        let mut seq = Sequencer::default();
        seq.hold(3, envelope());
        seq.hold(4, envelope());
        seq.start_at(3);
        assert!(seq.next_ready().is_some());
        assert_eq!(seq.delivered, Some(4));
    }
}

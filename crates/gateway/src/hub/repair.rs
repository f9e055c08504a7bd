//! Room messages in seq order, and the repair of gaps from the store.
//!
//! **Invariant:** a gap is never silent. When a room's next seq does not arrive (a publication
//! lost by the broker, a reconnect, a sender that stored but never published), the room reads
//! the missing messages from the store after [`GAP_WAIT`] and delivers them in order.

use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::{RoomId, ServerFrame};

use super::Hub;
use super::sequencer::Offer;
use crate::broker::{Envelope, Event, Topic};
use crate::metrics;

/// How long a room holds an early message before reading the missing ones from the store.
pub(super) const GAP_WAIT: Duration = Duration::from_millis(200);

/// Messages read per repair query, and queries per repair.
const REPAIR_PAGE: usize = 500;
const REPAIR_PAGES: usize = 20;

impl Hub {
    /// Delivers a room message in seq order: now if it is next, later if it is early (then a
    /// repair from the store is scheduled in case the missing ones never arrive), never if stale.
    pub(super) fn offer_room_message(self: &Arc<Self>, envelope: &Envelope) {
        let Event::Frame {
            frame: ServerFrame::MessageNew { message },
            ..
        } = &envelope.event
        else {
            return;
        };
        let room = &message.room_id;
        let mut registry = self.lock();
        let Some(entry) = registry.rooms.get_mut(room) else {
            return;
        };
        match entry.seq.offer(message.seq) {
            Offer::Deliver => {
                registry.deliver_room_message(room, envelope);
                registry.drain_room(room);
            }
            Offer::Hold => {
                if entry.seq.hold(message.seq, envelope.clone()) {
                    metrics::sequence_gap();
                    tracing::warn!(%room, "too many messages held: skipping a gap");
                }
                let schedule = entry.seq.delivered.is_some()
                    && !std::mem::replace(&mut entry.seq.repairing, true);
                registry.drain_room(room);
                drop(registry);
                if schedule {
                    self.spawn_repair(room.clone(), GAP_WAIT);
                }
            }
            Offer::Stale => {}
        }
    }

    pub(super) fn spawn_repair(self: &Arc<Self>, room: RoomId, after: Duration) {
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            hub.repair(&room).await;
        });
    }

    /// Reads what this node has not delivered of `room` from the store and offers it, in order.
    /// Gives up (the held messages then wait for the next repair or overflow) when the store fails.
    async fn repair(self: &Arc<Self>, room: &RoomId) {
        for _ in 0..REPAIR_PAGES {
            let Some(from) = self.lock().rooms.get(room).and_then(|r| r.seq.delivered) else {
                return;
            };
            let page = match self.store.messages_after(room, from, REPAIR_PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%room, error = %crate::error::Chain(&error), "gap repair failed; retrying");
                    self.spawn_repair(room.clone(), GAP_WAIT * 5);
                    return;
                }
            };
            let full = page.len() == REPAIR_PAGE;
            if !page.is_empty() {
                tracing::debug!(%room, from, count = page.len(), "repaired from the store");
            }
            for message in page {
                let frame = ServerFrame::MessageNew { message };
                self.offer_room_message(&Envelope::frame(vec![Topic::Room(room.clone())], frame));
            }
            if !full {
                break;
            }
        }
        let mut registry = self.lock();
        if let Some(entry) = registry.rooms.get_mut(room) {
            entry.seq.repairing = false;
            if !entry.seq.held.is_empty() {
                // Still waiting: the missing message is not in the store yet. Look again.
                entry.seq.repairing = true;
                drop(registry);
                self.spawn_repair(room.clone(), GAP_WAIT);
            }
        }
    }
}

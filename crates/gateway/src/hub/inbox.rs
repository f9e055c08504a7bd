//! What the broker delivers to this node, dispatched into the registry.

use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::{CloseCode, ServerFrame};

use super::Hub;
use crate::broker::{ConnId, ConnIds, Envelope, Event, Inbox, Topic};

/// Handles what the broker delivers to this node. Needs `Arc<Hub>` to spawn subscriptions.
#[derive(Debug)]
pub struct HubInbox(pub Arc<Hub>);

impl Inbox for HubInbox {
    fn deliver(&self, envelope: &Envelope) {
        let hub = &self.0;
        match &envelope.event {
            Event::Frame {
                frame: ServerFrame::MessageNew { .. },
                ..
            } => hub.offer_room_message(envelope),
            Event::Frame {
                frame,
                skip_conn,
                skip_user,
            } => {
                hub.lock().deliver_frame(
                    &envelope.topics,
                    frame,
                    skip_conn.as_ref(),
                    skip_user.as_ref(),
                );
            }
            Event::MemberJoined {
                user,
                room,
                since_seq,
                skip_conn,
                feed,
            } => {
                // The user's other sessions here follow the room from the joining session's
                // position, read after it attached: attach, then go live, as every session does.
                let new = {
                    let mut registry = hub.lock();
                    let conns: Vec<ConnId> = registry
                        .users
                        .get(user)
                        .map(|c| {
                            c.iter()
                                .filter(|c| Some(*c) != skip_conn.as_ref())
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    let mut new = false;
                    for conn in &conns {
                        new |= registry.attach(conn, room);
                        registry.go_live(conn, room, *since_seq);
                    }
                    registry.set_feed(room, *feed);
                    new
                };
                if new {
                    let hub = Arc::clone(hub);
                    let room = room.clone();
                    tokio::spawn(async move {
                        hub.subscribe(vec![Topic::Room(room.clone())]).await;
                        // What was published to the room before this node's subscription took
                        // effect never reached it (the joining session's node publishes the
                        // room's next message right away): read it from the store.
                        hub.spawn_repair(room, Duration::ZERO);
                    });
                }
            }
            Event::MemberLeft { user, room } => {
                let conns: ConnIds = hub.lock().users.get(user).cloned().unwrap_or_default();
                let hub = Arc::clone(hub);
                let room = room.clone();
                tokio::spawn(async move {
                    for conn in conns {
                        hub.detach(&conn, &room).await;
                    }
                });
            }
            Event::Kick { conn, code } => {
                if let (Some(entry), Some(code)) =
                    (hub.lock().conns.get(conn), CloseCode::from_code(*code))
                {
                    entry.handle.tx.kick(code);
                }
            }
            Event::KickUser { user, code } => {
                let registry = hub.lock();
                if let (Some(conns), Some(code)) =
                    (registry.users.get(user), CloseCode::from_code(*code))
                {
                    for conn in conns {
                        if let Some(entry) = registry.conns.get(conn) {
                            entry.handle.tx.kick(code);
                        }
                    }
                }
            }
            Event::RoomKind { room, feed } => hub.lock().set_feed(room, *feed),
        }
    }

    fn gap(&self, topics: &[Topic]) {
        tracing::warn!(
            count = topics.len(),
            "broker may have lost events: repairing from the store"
        );
        for topic in topics {
            if let Topic::Room(room) = topic {
                self.0.spawn_repair(room.clone(), Duration::ZERO);
            }
        }
    }
}

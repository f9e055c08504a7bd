//! Ephemeral signals: typing indicators and presence status. Nothing here is stored.

use std::sync::Arc;

use switchboard_protocol::{AckResult, PresenceStatus, RoomId, ServerFrame};
use tokio::time::Instant;

use super::{Connection, Session};
use crate::broker::{Envelope, Event, Topic};
use crate::error::SessionError;

/// The rooms a session is typing in, each with when its indicator stops by itself. A session
/// types in one room or two at a time: a vector, which an idle session holds empty in 24 bytes.
#[derive(Debug, Default)]
pub(super) struct Typing(Vec<(RoomId, Instant)>);

impl Typing {
    /// Sets the room's deadline; true if it was not typing there.
    fn start(&mut self, room: &RoomId, until: Instant) -> bool {
        match self.0.iter_mut().find(|(r, _)| r == room) {
            Some((_, at)) => {
                *at = until;
                false
            }
            None => {
                self.0.push((room.clone(), until));
                true
            }
        }
    }

    /// True if it was typing there.
    pub(super) fn stop(&mut self, room: &RoomId) -> bool {
        let before = self.0.len();
        self.0.retain(|(r, _)| r != room);
        self.0.len() != before
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.0.iter().map(|(_, at)| *at).min()
    }

    /// The rooms whose deadline is `now` or earlier.
    pub(super) fn due(&self, now: Instant) -> Vec<RoomId> {
        self.0
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(room, _)| room.clone())
            .collect()
    }

    pub(super) fn rooms(&self) -> Vec<RoomId> {
        self.0.iter().map(|(room, _)| room.clone()).collect()
    }
}

impl<C: Connection> Session<C> {
    /// Relays the start once and refreshes the deadline on repeats; the session loop sends the
    /// stop when the deadline passes.
    pub(super) async fn start_typing(
        &mut self,
        room_id: RoomId,
    ) -> Result<Option<AckResult>, SessionError> {
        self.require_publisher(&room_id)?;
        let until = Instant::now() + self.app.config.typing_timeout();
        if self.typing.start(&room_id, until) {
            let frame = ServerFrame::TypingStart {
                room_id: room_id.clone(),
                user: self.user.clone(),
            };
            self.relay_to_others(room_id, frame).await;
        }
        Ok(None)
    }

    pub(super) async fn stop_typing(&mut self, room_id: &RoomId) {
        if self.typing.stop(room_id) {
            let frame = ServerFrame::TypingStop {
                room_id: room_id.clone(),
                user_id: self.user.id.clone(),
            };
            self.relay_to_others(room_id.clone(), frame).await;
        }
    }

    /// Publishes `frame` to every connection in the room but this one: the user's other
    /// connections get it too.
    pub(super) async fn relay_to_room(&mut self, room_id: RoomId, frame: ServerFrame) {
        crate::actions::relay_to_room(&self.app, room_id, frame, Some(self.conn.clone())).await;
    }

    async fn relay_to_others(&mut self, room_id: RoomId, frame: ServerFrame) {
        self.app
            .publish(Envelope {
                topics: vec![Topic::Room(room_id)],
                event: Event::Frame {
                    frame,
                    skip_conn: None,
                    skip_user: Some(self.user.id.clone()),
                },
            })
            .await;
    }

    /// Sends a presence frame to everyone who watches this user: members of the rooms they
    /// share, and friends. One envelope, so a watcher in several of those gets it once.
    pub(super) async fn tell_watchers(
        &mut self,
        frame: ServerFrame,
        skip_conn: Option<crate::broker::ConnId>,
    ) -> Result<(), SessionError> {
        let app = Arc::clone(&self.app);
        let topics = app.watcher_topics(&self.user.id).await?;
        if !topics.is_empty() {
            // Without a connection to skip, the user's own connections are skipped.
            let skip_user = if skip_conn.is_some() {
                None
            } else {
                Some(self.user.id.clone())
            };
            let event = Event::Frame {
                frame,
                skip_conn,
                skip_user,
            };
            app.publish(Envelope { topics, event }).await;
        }
        Ok(())
    }

    pub(super) async fn update_presence(
        &mut self,
        status: PresenceStatus,
    ) -> Result<Option<AckResult>, SessionError> {
        self.app.presence.set_status(&self.user.id, status).await?;
        let frame = ServerFrame::PresenceUpdate {
            user_id: self.user.id.clone(),
            status,
        };
        let conn = self.conn.clone();
        self.tell_watchers(frame, Some(conn)).await?;
        Ok(Some(AckResult::Ok))
    }
}

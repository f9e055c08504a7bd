//! The connect hook's word on a new session, before it is registered anywhere: refused (close
//! 4010), no answer (close 1013: reconnect with backoff), or admitted, perhaps under another
//! display name and with rooms to be a member of.

use std::sync::Arc;

use switchboard_protocol::{CloseCode, RoomId, RoomKind};

use super::{Connection, Session};
use crate::error::SessionError;
use crate::{actions, auth};

impl<C: Connection> Session<C> {
    /// Asks the connect hook; returns the rooms it grants.
    pub(super) async fn admit(&mut self) -> Result<Vec<RoomId>, SessionError> {
        let verdict = match self.app.hooks.connect(&self.user, &self.conn).await {
            Ok(verdict) => verdict,
            Err(error) => {
                tracing::warn!(user = %self.user.id, error = %crate::error::Chain(&error), "connect hook failed: closing 1013");
                return Err(SessionError::Close(CloseCode::TryAgainLater));
            }
        };
        if let Some(reason) = verdict.denied {
            tracing::info!(user = %self.user.id, %reason, "connection refused by the app");
            return Err(SessionError::Close(CloseCode::ConnectDenied));
        }
        if let Some(name) = verdict.name {
            self.user.name = auth::display_name(Some(&name), &self.user.id);
        }
        Ok(verdict.rooms)
    }

    /// Makes the user a member of the rooms the connect hook granted, announcing each new
    /// membership as the server API's does. A room that does not exist, or a direct room, is
    /// skipped with a warning: the app named it, the user cannot fix it.
    pub(super) async fn enter_granted(&mut self, rooms: Vec<RoomId>) -> Result<(), SessionError> {
        let app = Arc::clone(&self.app);
        for room in rooms {
            let Some(record) = app.store.room(&room).await? else {
                tracing::warn!(%room, user = %self.user.id, "connect hook granted a room that does not exist");
                continue;
            };
            if record.info.kind == RoomKind::Direct {
                tracing::warn!(%room, "connect hook granted a direct room: its members are fixed");
                continue;
            }
            if app.store.add_member(&room, &self.user.id, None).await? {
                let kind = record.info.kind;
                let since = record.info.last_seq;
                // This session picks the room up with the others it is a member of.
                actions::member_joined(
                    &app,
                    &room,
                    kind,
                    &self.user,
                    since,
                    Some(self.conn.clone()),
                )
                .await;
            }
        }
        Ok(())
    }
}

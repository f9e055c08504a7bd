//! `room:emit`: application-defined events relayed to a room's members as `room:event`, at most
//! once and never stored.

use switchboard_protocol::{AckResult, ErrorCode, RoomId, ServerFrame};
use tokio::time::Instant;

use super::{Connection, Session};
use crate::actions;
use crate::error::SessionError;
use crate::limiter::RateLimiter;

impl<C: Connection> Session<C> {
    /// Checks the event (name, size, membership, its own rate) and publishes it to the room's
    /// connections but this one; acknowledged once it is on its way.
    pub(super) async fn emit_event(
        &mut self,
        room_id: RoomId,
        event: String,
        data: serde_json::Value,
    ) -> Result<Option<AckResult>, SessionError> {
        actions::check_event(&self.app.config, &event, &data)?;
        self.require_publisher(&room_id)?;
        if !self.event_limiter().admit(Instant::now()) {
            return Err(SessionError::refused(
                ErrorCode::RateLimited,
                "too many room events; slow down",
            ));
        }
        let frame = ServerFrame::RoomEvent {
            room_id: room_id.clone(),
            event,
            data,
            from: self.user.clone(),
        };
        self.relay_to_room(room_id, frame).await;
        Ok(Some(AckResult::Ok))
    }

    fn event_limiter(&mut self) -> &mut RateLimiter {
        let config = &self.app.config;
        self.event_limiter.get_or_insert_with(|| {
            // Refusing is enough: a connection that keeps emitting meets the general limit's
            // strikes.
            Box::new(RateLimiter::new(
                config.event_rate_per_sec,
                config.event_rate_burst,
                u32::MAX,
            ))
        })
    }
}

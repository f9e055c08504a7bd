//! `room:emit`: application-defined events relayed to a room's members as `room:event`, at most
//! once and never stored.

use switchboard_protocol::{AckResult, ErrorCode, RoomId, ServerFrame, is_event_name};
use tokio::time::Instant;

use super::limiter::RateLimiter;
use super::{Connection, Session};
use crate::error::SessionError;

impl<C: Connection> Session<C> {
    /// Checks the event (name, size, membership, its own rate) and publishes it to the room's
    /// connections but this one; acknowledged once it is on its way.
    pub(super) async fn emit_event(
        &mut self,
        room_id: RoomId,
        event: String,
        data: serde_json::Value,
    ) -> Result<Option<AckResult>, SessionError> {
        if !is_event_name(&event) {
            return Err(SessionError::refused(
                ErrorCode::InvalidField,
                format!(
                    "event must match {}",
                    switchboard_protocol::EVENT_NAME_PATTERN
                ),
            ));
        }
        let max = self.app.config.max_event_bytes;
        let size = serde_json::to_vec(&data).map_or(usize::MAX, |bytes| bytes.len());
        if size > max {
            return Err(SessionError::refused(
                ErrorCode::ContentTooLong,
                format!("data is {size} bytes as JSON; at most {max}"),
            ));
        }
        self.require_member(&room_id)?;
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

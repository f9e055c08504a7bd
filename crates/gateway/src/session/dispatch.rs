//! Dispatch: a decoded [`ClientFrame`] to the handler of its request, and the answer back.
//! The handlers live in one file per concern (`rooms.rs`, `messages.rs`, `signals.rs`,
//! `social.rs`, `rpc.rs`).

use switchboard_protocol::{AckResult, ClientFrame, ErrorCode, ServerFrame};

use super::Session;
use super::connection::Connection;
use crate::error::SessionError;

impl<C: Connection> Session<C> {
    /// Runs one decoded request and answers it: an `ack` with its result, or its refusal.
    pub(super) async fn dispatch(&mut self, frame: ClientFrame) -> Result<(), SessionError> {
        let id = frame.request_id();
        // Each request's future is boxed on its own: a box is as large as its future, and inline
        // the largest of them would be allocated and copied for every frame.
        let outcome = match frame {
            ClientFrame::Auth { .. } => Err(SessionError::refused(
                ErrorCode::AlreadyAuthenticated,
                "this connection is already authenticated",
            )),
            ClientFrame::Ping { id } => return self.wire.send(&ServerFrame::Pong { id }).await,
            ClientFrame::AuthRefresh { token, .. } => Box::pin(self.refresh_token(token)).await,
            ClientFrame::RoomCreate {
                room_id,
                name,
                kind,
                password,
                ..
            } => Box::pin(self.create_room(room_id, name, kind, password)).await,
            ClientFrame::RoomJoin {
                room_id,
                password,
                since_seq,
                ..
            } => Box::pin(self.join_room(room_id, password, since_seq)).await,
            ClientFrame::RoomLeave { room_id, .. } => Box::pin(self.leave_room(room_id)).await,
            ClientFrame::RoomMute { room_id, muted, .. } => {
                Box::pin(self.mute_room(room_id, muted)).await
            }
            ClientFrame::HistoryFetch {
                room_id,
                before_seq,
                after_seq,
                limit,
                ..
            } => {
                self.fetch_history(room_id, before_seq, after_seq, limit)
                    .await
            }
            ClientFrame::MessageSend {
                room_id,
                content,
                kind,
                client_msg_id,
                ..
            } => match self.check_send(id, room_id, content, kind, client_msg_id) {
                Ok(first) => return Box::pin(self.send_burst(first)).await,
                Err(refused) => Err(refused),
            },
            ClientFrame::DmSend {
                recipient_id,
                content,
                kind,
                client_msg_id,
                ..
            } => Box::pin(self.send_direct(recipient_id, content, kind, client_msg_id)).await,
            ClientFrame::MessageRead { room_id, seq, .. } => {
                Box::pin(self.mark_read(room_id, seq)).await
            }
            ClientFrame::TypingStart { room_id } => Box::pin(self.start_typing(room_id)).await,
            ClientFrame::TypingStop { room_id } => {
                self.require_member(&room_id)?;
                Box::pin(self.stop_typing(&room_id)).await;
                return Ok(());
            }
            ClientFrame::RoomEmit {
                room_id,
                event,
                data,
                ..
            } => Box::pin(self.emit_event(room_id, event, data)).await,
            ClientFrame::PresenceUpdate { status, .. } => {
                Box::pin(self.update_presence(status)).await
            }
            ClientFrame::NotificationsList { limit, before, .. } => {
                self.list_notifications(limit, before).await
            }
            ClientFrame::NotificationsRead { ids, .. } => self.read_notifications(ids).await,
            ClientFrame::FriendRequest { user_id, .. } => {
                Box::pin(self.request_friend(user_id)).await
            }
            ClientFrame::FriendAccept { user_id, .. } => {
                Box::pin(self.accept_friend(user_id)).await
            }
            ClientFrame::FriendRemove { user_id, .. } => {
                Box::pin(self.remove_friend(user_id)).await
            }
            ClientFrame::FriendsList { .. } => self.list_friends().await,
            ClientFrame::Rpc { method, data, .. } => Box::pin(self.call_rpc(method, data)).await,
        };
        self.answer(id, outcome).await
    }

    /// Answers the request `id` with its outcome: an `ack` with the result (none when the
    /// request had no id, or nothing to say), or its refusal.
    pub(super) async fn answer(
        &mut self,
        id: Option<u64>,
        outcome: Result<Option<AckResult>, SessionError>,
    ) -> Result<(), SessionError> {
        match outcome {
            Ok(Some(result)) => match id {
                Some(id) => self.wire.send(&ServerFrame::ok(id, result)).await,
                None => Ok(()),
            },
            Ok(None) => Ok(()),
            Err(error) => self.settle(id, error).await,
        }
    }
}

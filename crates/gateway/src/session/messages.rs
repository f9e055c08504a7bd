//! `message:send`, `dm:send` and `message:read`.

use std::sync::Arc;

use futures_util::FutureExt;
use switchboard_protocol::{
    AckResult, ClientFrame, ErrorCode, MessageKind, RoomId, ServerFrame, UserId,
};

use super::{Connection, Session, Step};
use crate::actions;
use crate::broker::{Envelope, Event, Topic};
use crate::error::SessionError;
use crate::metrics;
use crate::store::{Appended, NewMessage};

type Outcome = Result<Option<AckResult>, SessionError>;

/// Most `message:send` requests stored together. A burst is what the client had sent by the
/// time its first send was read: it shares one store write (one commit on PostgreSQL), and its
/// messages reach each member's queue before any member writes, so a member gets them in one
/// write. A client sending one message at a time sees no difference.
const MAX_BURST: usize = 64;

/// A checked `message:send`, waiting for its burst to be stored.
pub(super) struct Send {
    id: Option<u64>,
    message: NewMessage,
}

impl<C: Connection> Session<C> {
    /// Checks a `message:send` before [`Session::send_burst`] stores it.
    pub(super) fn check_send(
        &self,
        id: Option<u64>,
        room: RoomId,
        content: String,
        kind: MessageKind,
        client_msg_id: String,
    ) -> Result<Send, SessionError> {
        self.require_publisher(&room)?;
        let content = actions::check_message(&self.app.config, content, &client_msg_id)?;
        Ok(Send {
            id,
            message: NewMessage {
                room,
                sender: self.user.clone(),
                kind,
                content,
                client_msg_id,
            },
        })
    }

    /// Stores `first` together with the sends the client queued behind it (up to
    /// [`MAX_BURST`], never waiting for more), publishes and acks each in order, then handles
    /// whatever else ended the burst: requests are answered in the order they came.
    pub(super) async fn send_burst(&mut self, first: Send) -> Result<(), SessionError> {
        let mut burst = vec![first];
        let mut after = None;
        while burst.len() < MAX_BURST {
            let Some(incoming) = self.wire.incoming().now_or_never() else {
                break;
            };
            let step = match self.wire.inbound(incoming).await {
                Ok(inbound) => self.step(inbound),
                Err(ended) => Step::Refuse(None, ended),
            };
            match step {
                Step::Nothing => {}
                Step::Request(ClientFrame::MessageSend {
                    id,
                    room_id,
                    content,
                    kind,
                    client_msg_id,
                }) => match self.check_send(Some(id), room_id, content, kind, client_msg_id) {
                    Ok(send) => burst.push(send),
                    Err(refused) => {
                        after = Some(Step::Refuse(Some(id), refused));
                        break;
                    }
                },
                other => {
                    after = Some(other);
                    break;
                }
            }
        }
        let app = Arc::clone(&self.app);
        let (ids, messages): (Vec<_>, Vec<_>) =
            burst.into_iter().map(|s| (s.id, s.message)).unzip();
        let answers = app.store.append_many(messages).await;
        // Every message reaches the members' queues before the first ack is written: they write
        // the burst as one batch while this session writes its acks.
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            outcomes.push(match answer {
                Ok(appended) => Ok(Some(self.announce(appended).await)),
                Err(error) => Err(error.into()),
            });
        }
        for (id, outcome) in ids.into_iter().zip(outcomes) {
            self.answer(id, outcome).await?;
        }
        match after {
            Some(step) => self.take(step).await,
            None => Ok(()),
        }
    }

    pub(super) async fn send_direct(
        &mut self,
        recipient: UserId,
        content: String,
        kind: MessageKind,
        client_msg_id: String,
    ) -> Outcome {
        if recipient == self.user.id {
            return Err(SessionError::refused(
                ErrorCode::InvalidRecipient,
                "cannot send a direct message to yourself",
            ));
        }
        let content = actions::check_message(&self.app.config, content, &client_msg_id)?;
        let app = Arc::clone(&self.app);
        let room = app.store.direct_room(&self.user, &recipient).await?;
        let room_id = room.info.room_id.clone();
        if app.hub.live_position(&self.conn, &room_id).is_none() {
            // First direct message on this connection: make every session of both users follow
            // the room before the message is published, so none of them misses it.
            let floor = self.follow_room(&room_id, room.info.last_seq).await?;
            for user in [&recipient, &self.user.id] {
                app.membership_changed(user, &room_id, true).await;
                app.publish(Envelope {
                    topics: vec![Topic::User(user.clone())],
                    event: Event::MemberJoined {
                        user: user.clone(),
                        room: room_id.clone(),
                        since_seq: floor,
                        skip_conn: Some(self.conn.clone()),
                        feed: false,
                    },
                })
                .await;
            }
        }
        let appended = app
            .store
            .append(NewMessage {
                room: room_id,
                sender: self.user.clone(),
                kind,
                content,
                client_msg_id,
            })
            .await?;
        Ok(Some(self.announce(appended).await))
    }

    /// Publishes a stored message (a message is fanned out only once it is in the store) and
    /// returns its ack, which says where it is.
    async fn announce(&mut self, appended: Appended) -> AckResult {
        let message = appended.message;
        let room = message.room_id.clone();
        let ack = AckResult::Sent {
            room_id: room.clone(),
            message_id: message.message_id.clone(),
            seq: message.seq,
            created_at: message.created_at,
            duplicate: appended.duplicate,
        };
        if !appended.duplicate {
            metrics::message_stored();
            // The typing indicator ends with the message.
            self.typing.stop(&room);
        }
        // A duplicate is published again: its first attempt may have been stored without being
        // published (its commit outlived the timeout: OUTCOME_UNKNOWN), and this makes the
        // members get it now rather than with the room's next message. Where it was delivered,
        // the room's sequencer drops the repeat.
        actions::publish_message(&self.app, message, Some(self.conn.clone())).await;
        ack
    }

    pub(super) async fn mark_read(&mut self, room_id: RoomId, seq: u64) -> Outcome {
        self.require_member(&room_id)?;
        let app = Arc::clone(&self.app);
        if let Some(seq) = app.store.mark_read(&self.user.id, &room_id, seq).await? {
            let frame = ServerFrame::MessageRead {
                room_id: room_id.clone(),
                user_id: self.user.id.clone(),
                seq,
            };
            self.relay_to_room(room_id, frame).await;
        }
        Ok(Some(AckResult::Ok))
    }
}

//! `room:create`, `room:join`, `room:leave`, `room:mute` and `history:fetch`.

use std::sync::Arc;

use switchboard_protocol::{
    AckResult, ErrorCode, JOIN_HISTORY, Message, Role, RoomId, RoomInfo, RoomKind,
};

use super::{Connection, Session};
use crate::error::{BackendError, SessionError};
use crate::hooks::{Decision, JoinAction};
use crate::store::{NewRoom, RoomRecord};
use crate::{actions, passwords};

type Outcome = Result<Option<AckResult>, SessionError>;

impl<C: Connection> Session<C> {
    pub(super) async fn create_room(
        &mut self,
        room_id: RoomId,
        name: Option<String>,
        kind: RoomKind,
        password: Option<String>,
    ) -> Outcome {
        if room_id.is_direct() {
            return Err(SessionError::refused(
                ErrorCode::InvalidIdentifier,
                "room ids starting with \"dm:\" are reserved for direct messages",
            ));
        }
        let name = actions::room_name(&room_id, name.as_deref())?;
        let password_hash = match (kind, password) {
            (RoomKind::Direct, _) => {
                return Err(SessionError::refused(
                    ErrorCode::InvalidField,
                    "kind \"direct\" rooms are created by dm:send",
                ));
            }
            (RoomKind::Feed, _) => {
                return Err(SessionError::refused(
                    ErrorCode::InvalidField,
                    "kind \"feed\" rooms are created by the app's backend (server API)",
                ));
            }
            (RoomKind::Password, Some(password)) if !password.is_empty() => {
                Some(passwords::hash(password).await?)
            }
            (RoomKind::Password, _) => {
                return Err(SessionError::refused(
                    ErrorCode::InvalidField,
                    "a password room needs a non-empty password",
                ));
            }
            (_, Some(_)) => {
                return Err(SessionError::refused(
                    ErrorCode::InvalidField,
                    "password is only allowed with kind \"password\"",
                ));
            }
            (_, None) => None,
        };
        let role = self.ask_join_hook(&room_id, JoinAction::Create).await?;
        let creator_role = role.unwrap_or_else(Role::owner);
        let record = self
            .app
            .store
            .create_room(NewRoom {
                id: room_id.clone(),
                name,
                kind,
                password_hash,
                creator: self.user.clone(),
                creator_role: creator_role.clone(),
            })
            .await?;
        tracing::info!(room = %room_id, ?kind, user = %self.user.id, "room created");
        // The creator is a member from the start: no member_joined, but the room is occupied.
        self.app
            .membership_changed(&self.user.id, &room_id, true)
            .await;
        self.enter_room(record, creator_role, None, true)
            .await
            .map(Some)
    }

    pub(super) async fn join_room(
        &mut self,
        room_id: RoomId,
        password: Option<String>,
        since_seq: Option<u64>,
    ) -> Outcome {
        let app = Arc::clone(&self.app);
        let Some(record) = app.store.room(&room_id).await? else {
            return Err(SessionError::refused(
                ErrorCode::RoomNotFound,
                format!("room {room_id} does not exist"),
            ));
        };
        let mut joined = false;
        let known = app.store.member_role(&room_id, &self.user.id).await?;
        let role = if let Some(role) = known {
            role
        } else {
            match (record.info.kind, &record.password_hash) {
                (RoomKind::Public | RoomKind::Feed, _) => {}
                (RoomKind::Password, Some(hash)) => {
                    let given = password.unwrap_or_default();
                    if given.is_empty() || !passwords::verify(given, hash.clone()).await? {
                        return Err(SessionError::refused(
                            ErrorCode::WrongPassword,
                            "wrong password",
                        ));
                    }
                }
                (RoomKind::Private | RoomKind::Direct | RoomKind::Password, _) => {
                    return Err(SessionError::refused(
                        ErrorCode::Forbidden,
                        format!("room {room_id} is private"),
                    ));
                }
            }
            let given = self.ask_join_hook(&room_id, JoinAction::Join).await?;
            joined = app
                .store
                .add_member(&room_id, &self.user.id, given.as_ref())
                .await?;
            given.unwrap_or_default()
        };
        self.enter_room(record, role, since_seq, joined)
            .await
            .map(Some)
    }

    /// The join hook's word, when the user is about to become a member of a room it decides
    /// for: after the room's own rules passed, so the app is asked only about requests that
    /// could succeed. Allowed, with the role it gave if any.
    async fn ask_join_hook(
        &mut self,
        room: &RoomId,
        action: JoinAction,
    ) -> Result<Option<Role>, SessionError> {
        match self
            .app
            .hooks
            .join(&self.user, &self.conn, room, action)
            .await
            .map_err(|e| BackendError::Hook("join", e))?
        {
            Decision::Allow(role) => Ok(role),
            Decision::Deny(reason) => {
                tracing::debug!(%room, user = %self.user.id, %reason, "join refused by the app");
                Err(SessionError::refused(ErrorCode::Denied, reason))
            }
        }
    }

    /// Follows a room the user is now a member of and builds the join reply: the history the
    /// session must show, up to exactly where live delivery begins.
    ///
    /// A session that follows the room already (from its start, or an earlier join) answers
    /// from where live delivery stands now, not from where it began: what the hub had queued
    /// for it up to there is written first, and nothing queued later, so the reply comes after
    /// every `message:new` up to its `lastSeq` and before every newer one.
    async fn enter_room(
        &mut self,
        record: RoomRecord,
        role: Role,
        since_seq: Option<u64>,
        joined: bool,
    ) -> Result<AckResult, SessionError> {
        let app = Arc::clone(&self.app);
        let room_id = record.info.room_id.clone();
        let live_from = match app.hub.live_position(&self.conn, &room_id) {
            Some(position) => {
                self.write_queued(position.queued).await?;
                position.seq
            }
            None => self.follow_room(&room_id, record.info.last_seq).await?,
        };
        app.hub
            .set_feed(&room_id, record.info.kind == RoomKind::Feed);
        let (messages, recovered) = self.history_until(&room_id, live_from, since_seq).await?;
        let members = app.store.members(&room_id).await?;
        let online = actions::online_members(&app, &members).await?;
        if joined {
            // The user's other sessions follow the room too.
            actions::member_joined(
                &app,
                &room_id,
                record.info.kind,
                &self.user,
                live_from,
                Some(self.conn.clone()),
            )
            .await;
        }
        let info = RoomInfo {
            last_seq: live_from,
            member_count: members.len() as u64,
            ..record.info
        };
        Ok(AckResult::Room {
            room: info,
            role,
            online,
            messages,
            recovered,
        })
    }

    /// The messages to show before live delivery (which covers every seq above `live_from`):
    /// everything after `since`, or the latest page when there is no `since` or it is too far back.
    async fn history_until(
        &mut self,
        room: &RoomId,
        live_from: u64,
        since: Option<u64>,
    ) -> Result<(Vec<Message>, bool), SessionError> {
        let store = &self.app.store;
        match since {
            Some(since) if since >= live_from => Ok((Vec::new(), true)),
            Some(since) if (live_from - since) as usize <= self.app.config.max_replay => {
                let missing = (live_from - since) as usize;
                let messages = store.messages_after(room, since, missing).await?;
                // A store that no longer holds them all (bounded memory) cannot recover.
                let complete = messages.first().is_some_and(|m| m.seq == since + 1)
                    && messages.len() == missing;
                if complete {
                    Ok((messages, true))
                } else {
                    Ok((
                        store
                            .messages_before(room, live_from + 1, JOIN_HISTORY)
                            .await?,
                        false,
                    ))
                }
            }
            Some(_) => Ok((
                store
                    .messages_before(room, live_from + 1, JOIN_HISTORY)
                    .await?,
                false,
            )),
            None => Ok((
                store
                    .messages_before(room, live_from + 1, JOIN_HISTORY)
                    .await?,
                true,
            )),
        }
    }

    /// Starts following a room this session did not follow; returns the floor live delivery
    /// starts after. `known` is the room's position when the store no longer has it.
    pub(super) async fn follow_room(
        &mut self,
        room_id: &RoomId,
        known: u64,
    ) -> Result<u64, SessionError> {
        let app = Arc::clone(&self.app);
        let (_, floors) = app
            .hub
            .follow(
                &self.conn,
                std::slice::from_ref(room_id),
                app.store.room(room_id),
                |record, _| Some(record.as_ref().map_or(known, |r| r.info.last_seq)),
            )
            .await?;
        Ok(floors.first().copied().flatten().unwrap_or(known))
    }

    pub(super) async fn leave_room(&mut self, room_id: RoomId) -> Outcome {
        if room_id.is_direct() {
            // Its two members are fixed: left, it could be neither joined again nor written to.
            return Err(SessionError::refused(
                ErrorCode::Forbidden,
                "a direct-message room cannot be left; hide it in the client instead",
            ));
        }
        let app = Arc::clone(&self.app);
        if !app.store.remove_member(&room_id, &self.user.id).await? {
            return Err(SessionError::refused(
                ErrorCode::NotAMember,
                format!("not a member of room {room_id}"),
            ));
        }
        self.stop_typing(&room_id).await;
        app.hub.detach(&self.conn, &room_id).await;
        actions::member_left(&app, &room_id, &self.user.id, Some(self.conn.clone())).await;
        Ok(Some(AckResult::Ok))
    }

    pub(super) async fn mute_room(&mut self, room_id: RoomId, muted: bool) -> Outcome {
        if !self
            .app
            .store
            .set_muted(&room_id, &self.user.id, muted)
            .await?
        {
            return Err(SessionError::refused(
                ErrorCode::NotAMember,
                format!("not a member of room {room_id}"),
            ));
        }
        Ok(Some(AckResult::Ok))
    }

    pub(super) async fn fetch_history(
        &mut self,
        room_id: RoomId,
        before_seq: Option<u64>,
        after_seq: Option<u64>,
        limit: Option<u32>,
    ) -> Outcome {
        self.require_member(&room_id)?;
        let (messages, has_more) =
            actions::history_page(&self.app, &room_id, before_seq, after_seq, limit).await?;
        Ok(Some(AckResult::History {
            room_id,
            messages,
            has_more,
        }))
    }
}

//! What a client or the app's backend can make happen, with the rules that apply to it. A session
//! (`session/`) and the server API (`api/`) both act through here, so each rule is written once:
//! what a message or an event may hold, how a stored message reaches the room, how a member is
//! added or removed everywhere, how a notification is kept and delivered.

use switchboard_protocol::{
    EVENT_NAME_PATTERN, ErrorCode, JOIN_HISTORY, MAX_HISTORY_PAGE, Member, Message, Notification,
    RoomId, RoomKind, ServerFrame, UserId, UserRef, is_event_name,
};

use crate::app::App;
use crate::broker::{ConnId, Envelope, Event, Topic};
use crate::config::Config;
use crate::error::SessionError;
use crate::store::NewNotification;

/// Who the app's backend publishes as when it names no user: no token may carry this id.
pub const SYSTEM_USER_ID: &str = "system";

/// The sender of what the app's backend publishes without naming a user.
pub fn system_user() -> UserRef {
    UserRef {
        id: UserId::parse(SYSTEM_USER_ID).expect("a valid user id"),
        name: "System".to_owned(),
    }
}

/// Longest `clientMsgId` (and server API idempotency key), in bytes.
pub const MAX_CLIENT_MSG_ID: usize = 64;

/// Longest room name, in characters.
pub const MAX_ROOM_NAME_CHARS: usize = 100;

/// A room's name as given, or its id when none is: refused when it holds control characters or
/// is too long.
pub fn room_name(room_id: &RoomId, name: Option<&str>) -> Result<String, SessionError> {
    match name.map(str::trim) {
        None | Some("") => Ok(room_id.to_string()),
        Some(name) if name.chars().any(char::is_control) => Err(SessionError::refused(
            ErrorCode::InvalidField,
            "name contains control characters",
        )),
        Some(name) if name.chars().count() > MAX_ROOM_NAME_CHARS => Err(SessionError::refused(
            ErrorCode::InvalidField,
            format!("name is longer than {MAX_ROOM_NAME_CHARS} characters"),
        )),
        Some(name) => Ok(name.to_owned()),
    }
}

/// Checks a message's `clientMsgId` and content; returns the content to store.
pub fn check_message(
    config: &Config,
    content: String,
    client_msg_id: &str,
) -> Result<String, SessionError> {
    if client_msg_id.is_empty()
        || client_msg_id.len() > MAX_CLIENT_MSG_ID
        || !client_msg_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(SessionError::refused(
            ErrorCode::InvalidField,
            format!(
                "clientMsgId must be 1-{MAX_CLIENT_MSG_ID} printable ASCII characters without spaces"
            ),
        ));
    }
    if content.contains('\0') {
        // PostgreSQL text cannot hold NUL; refusing it here keeps stores interchangeable.
        return Err(SessionError::refused(
            ErrorCode::InvalidField,
            "content contains a NUL character",
        ));
    }
    if content.trim().is_empty() {
        return Err(SessionError::refused(
            ErrorCode::ContentEmpty,
            "content is empty",
        ));
    }
    let max = config.max_message_chars;
    if content.chars().count() > max {
        return Err(SessionError::refused(
            ErrorCode::ContentTooLong,
            format!("content is longer than {max} characters"),
        ));
    }
    Ok(content)
}

/// Checks a custom room event's name and size.
pub fn check_event(
    config: &Config,
    event: &str,
    data: &serde_json::Value,
) -> Result<(), SessionError> {
    if !is_event_name(event) {
        return Err(SessionError::refused(
            ErrorCode::InvalidField,
            format!("event must match {EVENT_NAME_PATTERN}"),
        ));
    }
    let max = config.max_event_bytes;
    let size = serde_json::to_vec(data).map_or(usize::MAX, |bytes| bytes.len());
    if size > max {
        return Err(SessionError::refused(
            ErrorCode::ContentTooLong,
            format!("data is {size} bytes as JSON; at most {max}"),
        ));
    }
    Ok(())
}

/// Refuses a client's publishing into a feed room: only the app's backend publishes there.
pub fn feed_refusal(room: &RoomId) -> SessionError {
    SessionError::refused(
        ErrorCode::Forbidden,
        format!("room {room} is a feed: only the app's backend publishes there"),
    )
}

/// A page of a room's history: the latest `limit` messages before `before_seq` (or the latest
/// of all), or the first `limit` after `after_seq`; ascending, with whether there are more.
pub async fn history_page(
    app: &App,
    room: &RoomId,
    before_seq: Option<u64>,
    after_seq: Option<u64>,
    limit: Option<u32>,
) -> Result<(Vec<Message>, bool), SessionError> {
    let limit = match limit.unwrap_or(JOIN_HISTORY as u32) {
        0 => {
            return Err(SessionError::refused(
                ErrorCode::InvalidField,
                "limit must be at least 1",
            ));
        }
        n if n > MAX_HISTORY_PAGE => {
            return Err(SessionError::refused(
                ErrorCode::InvalidField,
                format!("limit must be at most {MAX_HISTORY_PAGE}"),
            ));
        }
        n => n as usize,
    };
    let store = &app.store;
    let mut messages = match (before_seq, after_seq) {
        (Some(_), Some(_)) => {
            return Err(SessionError::refused(
                ErrorCode::InvalidField,
                "give beforeSeq or afterSeq, not both",
            ));
        }
        (None, Some(after)) => store.messages_after(room, after, limit + 1).await?,
        (before, None) => {
            store
                .messages_before(room, before.unwrap_or(u64::MAX), limit + 1)
                .await?
        }
    };
    let has_more = messages.len() > limit;
    if has_more {
        if after_seq.is_some() {
            messages.truncate(limit);
        } else {
            messages.remove(0);
        }
    }
    Ok((messages, has_more))
}

/// Those of `members` online (and visible) on any node, with their status.
pub async fn online_members(app: &App, members: &[UserId]) -> Result<Vec<Member>, SessionError> {
    Ok(app
        .presence
        .online(members)
        .await?
        .into_iter()
        .map(|(user, status)| Member { user, status })
        .collect())
}

/// Fans a stored message out to the room, on every node. A message is published only once it
/// is in the store; receivers repair any gap from there.
pub async fn publish_message(app: &App, message: Message, skip_conn: Option<ConnId>) {
    let room = message.room_id.clone();
    app.publish(Envelope {
        topics: vec![Topic::Room(room)],
        event: Event::Frame {
            frame: ServerFrame::MessageNew { message },
            skip_conn,
            skip_user: None,
        },
    })
    .await;
}

/// Publishes `frame` to every connection in the room, on every node, but `skip_conn`.
pub async fn relay_to_room(app: &App, room: RoomId, frame: ServerFrame, skip_conn: Option<ConnId>) {
    app.publish(Envelope {
        topics: vec![Topic::Room(room)],
        event: Event::Frame {
            frame,
            skip_conn,
            skip_user: None,
        },
    })
    .await;
}

/// Makes every connection of `user` (on every node, but `skip_conn`) follow the room after
/// `since_seq`, and tells the room's connections and the user's that they became a member.
pub async fn member_joined(
    app: &App,
    room: &RoomId,
    kind: RoomKind,
    user: &UserRef,
    since_seq: u64,
    skip_conn: Option<ConnId>,
) {
    app.membership_changed(&user.id, room, true).await;
    app.publish(Envelope {
        topics: vec![Topic::User(user.id.clone())],
        event: Event::MemberJoined {
            user: user.id.clone(),
            room: room.clone(),
            since_seq,
            skip_conn: skip_conn.clone(),
            feed: kind == RoomKind::Feed,
        },
    })
    .await;
    // Through the user's topic as well: that is how a user's connections learn that the app's
    // backend added them to a room, whether or not this node follows the room yet.
    app.publish(Envelope {
        topics: vec![Topic::Room(room.clone()), Topic::User(user.id.clone())],
        event: Event::Frame {
            frame: ServerFrame::UserJoinedRoom {
                room_id: room.clone(),
                user: user.clone(),
            },
            skip_conn,
            skip_user: None,
        },
    })
    .await;
}

/// Tells the room's connections and the user's (but `skip_conn`) that `user` left, then makes
/// every connection of the user stop following the room.
pub async fn member_left(app: &App, room: &RoomId, user: &UserId, skip_conn: Option<ConnId>) {
    app.membership_changed(user, room, false).await;
    app.publish(Envelope {
        topics: vec![Topic::Room(room.clone()), Topic::User(user.clone())],
        event: Event::Frame {
            frame: ServerFrame::UserLeftRoom {
                room_id: room.clone(),
                user_id: user.clone(),
            },
            skip_conn,
            skip_user: None,
        },
    })
    .await;
    app.publish(Envelope {
        topics: vec![Topic::User(user.clone())],
        event: Event::MemberLeft {
            user: user.clone(),
            room: room.clone(),
        },
    })
    .await;
}

/// Keeps a notification for its user and pushes it to every connection they have open.
pub async fn notify(
    app: &App,
    notification: NewNotification,
) -> Result<Notification, SessionError> {
    let user = notification.user.clone();
    let notification = app.store.add_notification(notification).await?;
    let frame = ServerFrame::NotificationNew {
        notification: notification.clone(),
    };
    app.publish(Envelope::frame(vec![Topic::User(user)], frame))
        .await;
    Ok(notification)
}

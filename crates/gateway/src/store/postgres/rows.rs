//! Rows to domain values and back: kinds as text, seqs as `bigint`, times as Unix milliseconds.
//!
//! Each `*_columns!` macro is the select list a converter below expects, in its order; a query
//! names the table `m` (messages), `r` (rooms) or `n` (notifications).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard_protocol::{
    Message, MessageKind, Notification, Role, RoomId, RoomInfo, RoomKind, UserId, UserRef,
};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use super::error::unavailable;
use crate::store::{RoomRecord, StoreError};

/// The columns [`message`] reads.
macro_rules! message_columns {
    () => {
        "m.room, m.seq, m.id, m.sender, m.sender_name, m.kind, m.content, m.client_msg_id, \
         m.created_at"
    };
}

/// The columns [`room_record`] reads.
macro_rules! room_columns {
    () => {
        "r.id, r.name, r.kind, r.password_hash, r.created_by, r.last_seq, \
         (SELECT count(*) FROM room_members c WHERE c.room = r.id)"
    };
}

/// The columns [`notification`] reads.
macro_rules! notification_columns {
    () => {
        "n.id, n.kind, n.title, n.body, n.data, n.created_at, n.read_at"
    };
}

pub(super) use {message_columns, notification_columns, room_columns};

/// Column `idx` of `row`; a type mismatch is a store failure, never a panic.
pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx).map_err(unavailable)
}

/// A stored value the gateway cannot read back (written by something else, or corrupted).
fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::unavailable(format!("stored {what} {value:?} is not valid"))
}

/// A `u64` position as a `bigint`, saturating (`u64::MAX` means "no upper bound").
pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `bigint` that is never negative in the schema, as a `u64`.
pub(super) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A `timestamptz` as Unix milliseconds (0 before 1970).
pub(super) fn millis(time: SystemTime) -> u64 {
    crate::wall_clock::unix_millis(time)
}

/// Now, cut to whole milliseconds: what is written reads back equal.
pub(super) fn now_to_the_milli() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis(SystemTime::now()))
}

pub(super) fn room_kind_text(kind: RoomKind) -> &'static str {
    match kind {
        RoomKind::Public => "public",
        RoomKind::Private => "private",
        RoomKind::Password => "password",
        RoomKind::Direct => "direct",
        RoomKind::Feed => "feed",
    }
}

pub(super) fn room_kind(text: &str) -> Result<RoomKind, StoreError> {
    Ok(match text {
        "public" => RoomKind::Public,
        "private" => RoomKind::Private,
        "password" => RoomKind::Password,
        "direct" => RoomKind::Direct,
        "feed" => RoomKind::Feed,
        other => return Err(corrupt("room kind", other)),
    })
}

pub(super) fn message_kind_text(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Text => "text",
        MessageKind::Image => "image",
        MessageKind::File => "file",
    }
}

fn message_kind(text: &str) -> Result<MessageKind, StoreError> {
    Ok(match text {
        "text" => MessageKind::Text,
        "image" => MessageKind::Image,
        "file" => MessageKind::File,
        other => return Err(corrupt("message kind", other)),
    })
}

pub(super) fn room_id(text: &str) -> Result<RoomId, StoreError> {
    RoomId::parse(text).map_err(|_| corrupt("room id", text))
}

pub(super) fn user_id(text: &str) -> Result<UserId, StoreError> {
    UserId::parse(text).map_err(|_| corrupt("user id", text))
}

pub(super) fn role(text: &str) -> Result<Role, StoreError> {
    Role::parse(text).map_err(|_| corrupt("role", text))
}

/// A row of [`message_columns!`], starting at column `at`.
pub(super) fn message_at(row: &Row, at: usize) -> Result<Message, StoreError> {
    let id: uuid::Uuid = get(row, at + 2)?;
    Ok(Message {
        room_id: room_id(get(row, at)?)?,
        seq: to_u64(get(row, at + 1)?),
        message_id: id.to_string(),
        sender: UserRef {
            id: user_id(get(row, at + 3)?)?,
            name: get(row, at + 4)?,
        },
        kind: message_kind(get(row, at + 5)?)?,
        content: get(row, at + 6)?,
        client_msg_id: get(row, at + 7)?,
        created_at: millis(get(row, at + 8)?),
    })
}

/// A row of [`message_columns!`].
pub(super) fn message(row: &Row) -> Result<Message, StoreError> {
    message_at(row, 0)
}

/// A row of [`room_columns!`].
pub(super) fn room_record(row: &Row) -> Result<RoomRecord, StoreError> {
    let member_count: i64 = get(row, 6)?;
    Ok(RoomRecord {
        info: RoomInfo {
            room_id: room_id(get(row, 0)?)?,
            name: get(row, 1)?,
            kind: room_kind(get(row, 2)?)?,
            created_by: user_id(get(row, 4)?)?,
            last_seq: to_u64(get(row, 5)?),
            member_count: to_u64(member_count),
        },
        password_hash: get(row, 3)?,
    })
}

/// A row of [`notification_columns!`].
pub(super) fn notification(row: &Row) -> Result<Notification, StoreError> {
    notification_at(row, 0)
}

/// A row of [`notification_columns!`], starting at column `at`.
pub(super) fn notification_at(row: &Row, at: usize) -> Result<Notification, StoreError> {
    let read_at: Option<SystemTime> = get(row, at + 6)?;
    Ok(Notification {
        id: to_u64(get(row, at)?),
        kind: get(row, at + 1)?,
        title: get(row, at + 2)?,
        body: get(row, at + 3)?,
        data: get(row, at + 4)?,
        created_at: millis(get(row, at + 5)?),
        read_at: read_at.map(millis),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_as_written() {
        for kind in [
            RoomKind::Public,
            RoomKind::Private,
            RoomKind::Password,
            RoomKind::Direct,
            RoomKind::Feed,
        ] {
            assert_eq!(room_kind(room_kind_text(kind)).unwrap(), kind);
        }
        for kind in [MessageKind::Text, MessageKind::Image, MessageKind::File] {
            assert_eq!(message_kind(message_kind_text(kind)).unwrap(), kind);
        }
        assert!(room_kind("secret").is_err());
    }

    #[test]
    fn positions_saturate_instead_of_wrapping() {
        assert_eq!(to_i64(u64::MAX), i64::MAX);
        assert_eq!(to_i64(42), 42);
        assert_eq!(to_u64(-1), 0);
    }

    #[test]
    fn times_are_whole_milliseconds() {
        let now = now_to_the_milli();
        let ms = millis(now);
        assert_eq!(UNIX_EPOCH + Duration::from_millis(ms), now);
        assert_eq!(millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}

//! Every [`Store`] method but `append` (see `batch.rs`): one cached statement each, or one short
//! transaction where two tables change together.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use switchboard_protocol::{
    Friend, FriendStatus, Message, Notification, Role, RoomId, RoomKind, RoomSummary, UserId,
    UserRef,
};
use tokio_postgres::types::ToSql;

use super::PgStore;
use super::error::unavailable;
use super::rows::{self, get, message_columns, notification_columns, room_columns, to_i64, to_u64};
use super::webhooks::event_columns;
use crate::store::{
    Appended, Ban, NewMessage, NewNotification, NewRoom, RoomRecord, RoomSettings, Store,
    StoreError,
};
use crate::webhooks::push::PushPass;
use crate::webhooks::{EventType, WebhookEvent};

/// Reads one room (and its member count) by id.
const ROOM_BY_ID: &str = concat!("SELECT ", room_columns!(), " FROM rooms r WHERE r.id = $1");

/// History pages: a row per message, or one all-NULL row for an existing empty page, and no
/// row at all when the room does not exist.
const MESSAGES_AFTER: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM rooms r LEFT JOIN LATERAL (SELECT * FROM messages WHERE room = r.id AND seq > $2",
    " ORDER BY seq LIMIT $3) m ON true WHERE r.id = $1 ORDER BY m.seq"
);
const MESSAGES_BEFORE: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM rooms r LEFT JOIN LATERAL (SELECT * FROM messages WHERE room = r.id AND seq < $2",
    " ORDER BY seq DESC LIMIT $3) m ON true WHERE r.id = $1 ORDER BY m.seq"
);

impl PgStore {
    /// A history page from [`MESSAGES_AFTER`] or [`MESSAGES_BEFORE`].
    async fn page(
        &self,
        sql: &str,
        room: &RoomId,
        bound: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(sql, &[&room.as_str(), &to_i64(bound), &limit])
            .await?;
        if rows.is_empty() {
            return Err(StoreError::RoomNotFound(room.clone()));
        }
        rows.iter()
            .filter(|row| matches!(row.try_get::<_, Option<i64>>(1), Ok(Some(_))))
            .map(rows::message)
            .collect()
    }

    /// Runs a friendship change in a transaction holding the pair's advisory lock, so two
    /// users asking each other at once end up friends rather than with two pending requests.
    async fn with_pair_lock<T>(
        &self,
        a: &UserId,
        b: &UserId,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        read: impl FnOnce(&[tokio_postgres::Row]) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let pair = format!("friends:{lo}:{hi}");
        self.bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(unavailable)?;
            let lock = tx
                .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .await
                .map_err(unavailable)?;
            let statement = tx.prepare_cached(sql).await.map_err(unavailable)?;
            let lock_params: [&(dyn ToSql + Sync); 1] = [&pair];
            let (_, rows) = tokio::try_join!(
                tx.execute(&lock, &lock_params),
                tx.query(&statement, params)
            )
            .map_err(unavailable)?;
            let answer = read(&rows)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(answer)
        })
        .await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn upsert_user(&self, user: &UserRef) -> Result<Option<Ban>, StoreError> {
        let rows = self
            .query(
                "INSERT INTO users (id, name, last_seen, status) VALUES ($1, $2, now(), 'online') \
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, last_seen = now(), \
                 status = 'online' \
                 RETURNING CASE WHEN banned_until > now() THEN banned_until END, ban_reason",
                &[&user.id.as_str(), &user.name],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let until: Option<SystemTime> = get(row, 0)?;
        Ok(until.map(|until| Ban {
            until: rows::millis(until),
            reason: row
                .try_get::<_, Option<String>>(1)
                .ok()
                .flatten()
                .unwrap_or_default(),
        }))
    }

    async fn ban(&self, user: &UserId, ban: &Ban) -> Result<(), StoreError> {
        let until = UNIX_EPOCH + Duration::from_millis(ban.until);
        self.execute(
            "INSERT INTO users (id, name, banned_until, ban_reason) VALUES ($1, $1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET banned_until = $2, ban_reason = $3",
            &[&user.as_str(), &until, &ban.reason],
        )
        .await
        .map(drop)
    }

    async fn unban(&self, user: &UserId) -> Result<bool, StoreError> {
        // An expired ban is cleared as well, without counting as lifted.
        let rows = self
            .query(
                "UPDATE users u SET banned_until = NULL, ban_reason = NULL \
                 FROM users old WHERE u.id = $1 AND old.id = u.id AND u.banned_until IS NOT NULL \
                 RETURNING old.banned_until > now()",
                &[&user.as_str()],
            )
            .await?;
        rows.first().map_or(Ok(false), |row| get(row, 0))
    }

    async fn create_room(&self, room: NewRoom) -> Result<RoomRecord, StoreError> {
        // One statement: the room and its creator as owner, or nothing when the id is taken.
        let rows = self
            .query(
                "WITH created AS (
                     INSERT INTO rooms (id, name, kind, password_hash, created_by)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING RETURNING id
                 ), owner AS (
                     INSERT INTO room_members (room, user_id, role)
                     SELECT id, $5, $6 FROM created
                 )
                 SELECT id FROM created",
                &[
                    &room.id.as_str(),
                    &room.name,
                    &rows::room_kind_text(room.kind),
                    &room.password_hash,
                    &room.creator.id.as_str(),
                    &room.creator_role.as_str(),
                ],
            )
            .await?;
        if rows.is_empty() {
            return Err(StoreError::RoomExists(room.id));
        }
        Ok(RoomRecord {
            info: switchboard_protocol::RoomInfo {
                room_id: room.id,
                name: room.name,
                kind: room.kind,
                created_by: room.creator.id,
                last_seq: 0,
                member_count: 1,
            },
            password_hash: room.password_hash,
        })
    }

    async fn put_room(&self, room: RoomSettings) -> Result<(RoomRecord, bool), StoreError> {
        // `xmax = 0` only on a row this statement inserted.
        let rows = self
            .query(
                "INSERT INTO rooms (id, name, kind, created_by) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE
                     SET name = EXCLUDED.name, kind = EXCLUDED.kind, password_hash = NULL
                 RETURNING xmax = 0",
                &[
                    &room.id.as_str(),
                    &room.name,
                    &rows::room_kind_text(room.kind),
                    &room.created_by.as_str(),
                ],
            )
            .await?;
        let created: bool = rows
            .first()
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(unavailable)?
            .unwrap_or(false);
        let record = self
            .room(&room.id)
            .await?
            .ok_or_else(|| StoreError::RoomNotFound(room.id.clone()))?;
        Ok((record, created))
    }

    async fn room(&self, id: &RoomId) -> Result<Option<RoomRecord>, StoreError> {
        let rows = self.query(ROOM_BY_ID, &[&id.as_str()]).await?;
        rows.first().map(rows::room_record).transpose()
    }

    async fn direct_room(&self, from: &UserRef, to: &UserId) -> Result<RoomRecord, StoreError> {
        let id = RoomId::direct(&from.id, to).ok_or(StoreError::SelfDirect)?;
        let members = [from.id.as_str(), to.as_str()];
        // Members are added only with a new room: someone who left an existing one stays out.
        self.execute(
            "WITH created AS (
                 INSERT INTO rooms (id, name, kind, created_by) VALUES ($1, $1, $2, $3)
                 ON CONFLICT (id) DO NOTHING RETURNING id
             )
             INSERT INTO room_members (room, user_id, role)
             SELECT created.id, member, 'member' FROM created, unnest($4::text[]) AS member
             ON CONFLICT DO NOTHING",
            &[
                &id.as_str(),
                &rows::room_kind_text(RoomKind::Direct),
                &from.id.as_str(),
                &members.as_slice(),
            ],
        )
        .await?;
        let row = self.query_one(ROOM_BY_ID, &[&id.as_str()]).await?;
        rows::room_record(&row)
    }

    async fn add_member(
        &self,
        room: &RoomId,
        user: &UserId,
        role: Option<&Role>,
    ) -> Result<bool, StoreError> {
        // The webhook row, if any, is inserted by the same statement, only when the member is.
        let joined_as = role.cloned().unwrap_or_default();
        let event = self.event_for(EventType::MemberJoined, Some(room), || {
            WebhookEvent::member_joined(room, user, &joined_as)
        });
        let role = role.map(Role::as_str);
        let (id, body) = event_columns(event.as_ref());
        let row = self
            .query_one(
                "WITH room AS (
                     SELECT id, last_seq FROM rooms WHERE id = $1
                 ), added AS (
                     -- What was said before they joined is never pushed to them. `xmax = 0`
                     -- only on a row this statement inserted: a member's role may change.
                     INSERT INTO room_members (room, user_id, pushed_seq, role)
                     SELECT id, $2, last_seq, coalesce($5::text, 'member') FROM room
                     ON CONFLICT (room, user_id) DO UPDATE SET role = EXCLUDED.role
                         WHERE $5::text IS NOT NULL
                     RETURNING xmax = 0 AS new
                 ), event AS (
                     INSERT INTO switchboard_webhooks (event_id, type, body)
                     SELECT $3::text, 'room.member_joined', $4::text FROM added
                     WHERE new AND $3::text IS NOT NULL
                 )
                 SELECT EXISTS (SELECT 1 FROM room), (SELECT count(*) FROM added WHERE new)",
                &[&room.as_str(), &user.as_str(), &id, &body, &role],
            )
            .await?;
        let (exists, added): (bool, i64) = (get(&row, 0)?, get(&row, 1)?);
        if !exists {
            return Err(StoreError::RoomNotFound(room.clone()));
        }
        self.events_committed(added > 0 && event.is_some());
        Ok(added > 0)
    }

    async fn remove_member(&self, room: &RoomId, user: &UserId) -> Result<bool, StoreError> {
        let event = self.event_for(EventType::MemberLeft, Some(room), || {
            WebhookEvent::member_left(room, user)
        });
        let (id, body) = event_columns(event.as_ref());
        let row = self
            .query_one(
                "WITH removed AS (
                     DELETE FROM room_members WHERE room = $1 AND user_id = $2 RETURNING 1
                 ), event AS (
                     INSERT INTO switchboard_webhooks (event_id, type, body)
                     SELECT $3::text, 'room.member_left', $4::text FROM removed WHERE $3::text IS NOT NULL
                 )
                 SELECT EXISTS (SELECT 1 FROM rooms WHERE id = $1), (SELECT count(*) FROM removed)",
                &[&room.as_str(), &user.as_str(), &id, &body],
            )
            .await?;
        let (exists, removed): (bool, i64) = (get(&row, 0)?, get(&row, 1)?);
        if !exists {
            return Err(StoreError::RoomNotFound(room.clone()));
        }
        self.events_committed(removed > 0 && event.is_some());
        Ok(removed > 0)
    }

    async fn member_role(&self, room: &RoomId, user: &UserId) -> Result<Option<Role>, StoreError> {
        let rows = self
            .query(
                "SELECT role FROM room_members WHERE room = $1 AND user_id = $2",
                &[&room.as_str(), &user.as_str()],
            )
            .await?;
        rows.first().map(|row| rows::role(get(row, 0)?)).transpose()
    }

    async fn set_muted(
        &self,
        room: &RoomId,
        user: &UserId,
        muted: bool,
    ) -> Result<bool, StoreError> {
        self.set_member_muted(room, user, muted).await
    }

    async fn write_due_pushes(&self, now: SystemTime) -> Result<PushPass, StoreError> {
        self.push_pass(now).await
    }

    async fn members(&self, room: &RoomId) -> Result<Vec<UserId>, StoreError> {
        let rows = self
            .query(
                "SELECT m.user_id FROM rooms r LEFT JOIN room_members m ON m.room = r.id \
                 WHERE r.id = $1 ORDER BY m.user_id",
                &[&room.as_str()],
            )
            .await?;
        if rows.is_empty() {
            return Err(StoreError::RoomNotFound(room.clone()));
        }
        let mut members = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(user) = get::<Option<&str>>(row, 0)? {
                members.push(rows::user_id(user)?);
            }
        }
        Ok(members)
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomSummary>, StoreError> {
        let rows = self
            .query(
                "SELECT r.id, r.name, r.kind, r.last_seq, coalesce(w.last_read_seq, 0), m.muted,
                        m.role
                 FROM room_members m
                 JOIN rooms r ON r.id = m.room
                 LEFT JOIN read_watermarks w ON w.user_id = m.user_id AND w.room = m.room
                 WHERE m.user_id = $1
                 ORDER BY r.id",
                &[&user.as_str()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let last_seq = to_u64(get(row, 3)?);
                let last_read_seq = to_u64(get(row, 4)?);
                Ok(RoomSummary {
                    room_id: rows::room_id(get(row, 0)?)?,
                    name: get(row, 1)?,
                    kind: rows::room_kind(get(row, 2)?)?,
                    last_seq,
                    last_read_seq,
                    unread: last_seq.saturating_sub(last_read_seq),
                    muted: get(row, 5)?,
                    role: rows::role(get(row, 6)?)?,
                })
            })
            .collect()
    }

    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        self.append_batched(message).await
    }

    async fn append_many(&self, messages: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>> {
        self.append_all_batched(messages).await
    }

    async fn messages_after(
        &self,
        room: &RoomId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.page(MESSAGES_AFTER, room, after, limit).await
    }

    async fn messages_before(
        &self,
        room: &RoomId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.page(MESSAGES_BEFORE, room, before, limit).await
    }

    async fn mark_read(
        &self,
        user: &UserId,
        room: &RoomId,
        seq: u64,
    ) -> Result<Option<u64>, StoreError> {
        // Capped at the room's last seq; moves forward only; NULL when nothing changed.
        let row = self
            .query_one(
                "WITH target AS (
                     SELECT least($3::bigint, last_seq) AS seq FROM rooms WHERE id = $2
                 ), moved AS (
                     INSERT INTO read_watermarks (user_id, room, last_read_seq)
                     SELECT $1, $2, seq FROM target WHERE seq > 0
                     ON CONFLICT (user_id, room) DO UPDATE
                         SET last_read_seq = EXCLUDED.last_read_seq
                         WHERE read_watermarks.last_read_seq < EXCLUDED.last_read_seq
                     RETURNING last_read_seq
                 )
                 SELECT EXISTS (SELECT 1 FROM target), (SELECT last_read_seq FROM moved)",
                &[&user.as_str(), &room.as_str(), &to_i64(seq)],
            )
            .await?;
        let (exists, moved): (bool, Option<i64>) = (get(&row, 0)?, get(&row, 1)?);
        if !exists {
            return Err(StoreError::RoomNotFound(room.clone()));
        }
        Ok(moved.map(to_u64))
    }

    async fn add_notification(
        &self,
        notification: NewNotification,
    ) -> Result<Notification, StoreError> {
        const INSERT: &str = concat!(
            "INSERT INTO notifications AS n (user_id, kind, title, body, data) ",
            "VALUES ($1, $2, $3, $4, $5) RETURNING ",
            notification_columns!()
        );
        let params: [&(dyn ToSql + Sync); 5] = [
            &notification.user.as_str(),
            &notification.kind,
            &notification.title,
            &notification.body,
            &notification.data,
        ];
        let wants_event = self.wants_event(EventType::NotificationCreated, None);
        let push = self.events.as_ref().and_then(|sink| sink.push_rule(None));
        if !wants_event && push.is_none() {
            return rows::notification(&self.query_one(INSERT, &params).await?);
        }
        // The event holds the notification as stored (its id, its time): written after it, in
        // its transaction, as is the mark that makes its user due for a push pass.
        let created = self
            .bounded(async {
                let mut client = self.client().await?;
                let tx = client.transaction().await.map_err(unavailable)?;
                let insert = tx.prepare_cached(INSERT).await.map_err(unavailable)?;
                let row = tx.query_one(&insert, &params).await.map_err(unavailable)?;
                let created = rows::notification(&row)?;
                if wants_event {
                    let event = WebhookEvent::notification_created(&notification.user, &created);
                    let (id, body) = event_columns(Some(&event));
                    tx.execute(
                        "INSERT INTO switchboard_webhooks (event_id, type, body) \
                         VALUES ($1, 'notification.created', $2)",
                        &[&id, &body],
                    )
                    .await
                    .map_err(unavailable)?;
                }
                if let Some(rule) = push {
                    let due = UNIX_EPOCH + Duration::from_millis(rule.due(created.created_at));
                    tx.execute(
                        "INSERT INTO switchboard_push_users AS u (user_id, due_at) VALUES ($1, $2)
                         ON CONFLICT (user_id) DO UPDATE SET due_at = coalesce(u.due_at, EXCLUDED.due_at)",
                        &[&notification.user.as_str(), &due],
                    )
                    .await
                    .map_err(unavailable)?;
                }
                tx.commit().await.map_err(unavailable)?;
                Ok(created)
            })
            .await?;
        self.events_committed(wants_event);
        Ok(created)
    }

    async fn notifications(
        &self,
        user: &UserId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let before = before.map_or(i64::MAX, to_i64);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    notification_columns!(),
                    " FROM notifications n WHERE n.user_id = $1 AND n.id < $2",
                    " ORDER BY n.id DESC LIMIT $3"
                ),
                &[&user.as_str(), &before, &limit],
            )
            .await?;
        rows.iter().map(rows::notification).collect()
    }

    async fn mark_notifications_read(&self, user: &UserId, ids: &[u64]) -> Result<u64, StoreError> {
        let ids: Vec<i64> = ids.iter().map(|&id| to_i64(id)).collect();
        self.execute(
            "UPDATE notifications SET read_at = now() \
             WHERE user_id = $1 AND id = ANY($2::bigint[]) AND read_at IS NULL",
            &[&user.as_str(), &ids],
        )
        .await
    }

    async fn unread_notifications(&self, user: &UserId) -> Result<u64, StoreError> {
        let row = self
            .query_one(
                "SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL",
                &[&user.as_str()],
            )
            .await?;
        Ok(to_u64(get(&row, 0)?))
    }

    async fn request_friend(&self, from: &UserId, to: &UserId) -> Result<FriendStatus, StoreError> {
        if from == to {
            return Err(StoreError::SelfDirect);
        }
        // Already friends, or `to` asked first: friends both ways. Else `from`'s request.
        self.with_pair_lock(
            from,
            to,
            "WITH asked_back AS (
                 SELECT 1 FROM friendships WHERE user_id = $2 AND friend_id = $1
             ), befriend AS (
                 INSERT INTO friendships (user_id, friend_id, status)
                 SELECT a, b, 'accepted' FROM asked_back, (VALUES ($1, $2), ($2, $1)) AS p (a, b)
                 ON CONFLICT (user_id, friend_id) DO UPDATE SET status = 'accepted'
             ), ask AS (
                 INSERT INTO friendships (user_id, friend_id, status)
                 SELECT $1, $2, 'pending' WHERE NOT EXISTS (SELECT 1 FROM asked_back)
                 ON CONFLICT (user_id, friend_id) DO NOTHING
             )
             SELECT EXISTS (SELECT 1 FROM asked_back)
                 OR EXISTS (SELECT 1 FROM friendships
                            WHERE user_id = $1 AND friend_id = $2 AND status = 'accepted')",
            &[&from.as_str(), &to.as_str()],
            |rows| {
                let accepted = rows.first().map_or(Ok(false), |row| get(row, 0))?;
                Ok(if accepted {
                    FriendStatus::Accepted
                } else {
                    FriendStatus::Outgoing
                })
            },
        )
        .await
    }

    async fn accept_friend(&self, user: &UserId, from: &UserId) -> Result<bool, StoreError> {
        self.with_pair_lock(
            user,
            from,
            "WITH accepted AS (
                 UPDATE friendships SET status = 'accepted'
                 WHERE user_id = $2 AND friend_id = $1 AND status = 'pending'
                 RETURNING 1
             ), back AS (
                 INSERT INTO friendships (user_id, friend_id, status)
                 SELECT $1, $2, 'accepted' FROM accepted
                 ON CONFLICT (user_id, friend_id) DO UPDATE SET status = 'accepted'
             )
             SELECT count(*) FROM accepted",
            &[&user.as_str(), &from.as_str()],
            |rows| Ok(count(rows)? > 0),
        )
        .await
    }

    async fn remove_friend(&self, user: &UserId, other: &UserId) -> Result<bool, StoreError> {
        self.with_pair_lock(
            user,
            other,
            "WITH removed AS (
                 DELETE FROM friendships
                 WHERE (user_id = $1 AND friend_id = $2) OR (user_id = $2 AND friend_id = $1)
                 RETURNING 1
             )
             SELECT count(*) FROM removed",
            &[&user.as_str(), &other.as_str()],
            |rows| Ok(count(rows)? > 0),
        )
        .await
    }

    async fn friends(&self, user: &UserId) -> Result<Vec<Friend>, StoreError> {
        let rows = self
            .query(
                "SELECT f.other, coalesce(u.name, f.other), f.status
                 FROM (
                     SELECT friend_id AS other,
                            CASE status WHEN 'accepted' THEN 'accepted' ELSE 'outgoing' END
                                AS status
                     FROM friendships WHERE user_id = $1
                     UNION ALL
                     SELECT user_id, 'incoming' FROM friendships
                     WHERE friend_id = $1 AND status = 'pending'
                 ) f
                 LEFT JOIN users u ON u.id = f.other
                 ORDER BY f.other",
                &[&user.as_str()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let status = match get::<&str>(row, 2)? {
                    "accepted" => FriendStatus::Accepted,
                    "outgoing" => FriendStatus::Outgoing,
                    _ => FriendStatus::Incoming,
                };
                Ok(Friend {
                    user: UserRef {
                        id: rows::user_id(get(row, 0)?)?,
                        name: get(row, 1)?,
                    },
                    status,
                })
            })
            .collect()
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.query_one("SELECT 1", &[]).await.map(drop)
    }

    fn epoch(&self) -> String {
        self.epoch.clone()
    }
}

/// The count in the first column of a one-row answer.
fn count(rows: &[tokio_postgres::Row]) -> Result<i64, StoreError> {
    rows.first().map_or(Ok(0), |row| get(row, 0))
}

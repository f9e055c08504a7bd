//! The push rule's passes on PostgreSQL (the rule: `webhooks/push.rs`; the columns: migration
//! 0006). A pass is one transaction, under an advisory lock so one node passes at a time: the
//! `push` webhooks it writes commit with the marks that say they were made (`pushed_seq`,
//! `pushed_id`) and the rooms' and users' next due times, or none of it does.
//!
//! Rooms are not locked while a pass looks at them, so messages keep committing: the pass ends
//! by rescheduling each room under its row lock, and a room whose `last_seq` moved meanwhile
//! stays due. Due users are locked (`FOR UPDATE`): a notification committing meanwhile waits,
//! then makes its user due again.

use std::collections::HashMap;
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use switchboard_protocol::{Message, Notification, RoomId, UserId};
use tokio_postgres::types::ToSql;

use super::PgStore;
use super::error::unavailable;
use super::rows::{self, get, message_columns, notification_columns, to_i64, to_u64};
use super::webhooks::{EventRows, INSERT_EVENTS};
use crate::store::StoreError;
use crate::wall_clock::{from_millis as time, unix_millis};
use crate::webhooks::push::{
    PASS_LIMIT, PushBatch, PushMessage, PushNotification, PushNotifications, PushPass, PushRoom,
    PushRule,
};

/// The advisory lock that lets one node pass at a time ("sbx" + "push" in ASCII).
const PUSH_LOCK: i64 = 0x0073_6278_7075_7368;

/// A due room as a pass found it.
struct DueRoom {
    id: String,
    name: String,
    /// Its `last_seq` when looked at.
    seen: i64,
    /// The newest message old enough to push, if any.
    cut: Option<i64>,
    /// When the message after `cut` was made, if visible.
    next_at: Option<SystemTime>,
}

impl PgStore {
    /// `set_muted`: unmuting moves `pushed_seq` to the room's end, so nothing that came while
    /// muted is owed.
    pub(super) async fn set_member_muted(
        &self,
        room: &RoomId,
        user: &UserId,
        muted: bool,
    ) -> Result<bool, StoreError> {
        let row = self
            .query_one(
                "WITH room AS (
                     SELECT id, last_seq FROM rooms WHERE id = $1
                 ), changed AS (
                     UPDATE room_members m SET muted = $3,
                         pushed_seq = CASE WHEN m.muted AND NOT $3
                             THEN greatest(m.pushed_seq, room.last_seq) ELSE m.pushed_seq END
                     FROM room WHERE m.room = room.id AND m.user_id = $2
                     RETURNING 1
                 )
                 SELECT EXISTS (SELECT 1 FROM room), (SELECT count(*) FROM changed)",
                &[&room.as_str(), &user.as_str(), &muted],
            )
            .await?;
        let (exists, changed): (bool, i64) = (get(&row, 0)?, get(&row, 1)?);
        if !exists {
            return Err(StoreError::RoomNotFound(room.clone()));
        }
        Ok(changed > 0)
    }

    /// `write_due_pushes`.
    pub(super) async fn push_pass(&self, now: SystemTime) -> Result<PushPass, StoreError> {
        let Some(rule) = self.events.as_ref().and_then(|sink| sink.push()) else {
            return Ok(PushPass::default());
        };
        let pass = self
            .bounded(async {
                let mut client = self.client().await?;
                let tx = client.transaction().await.map_err(unavailable)?;
                let locked: bool = tx
                    .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PUSH_LOCK])
                    .await
                    .and_then(|row| row.try_get(0))
                    .map_err(unavailable)?;
                if !locked {
                    return Ok(PushPass::default());
                }
                let now = unix_millis(now);
                let mut batch = PushBatch::default();
                let users_more = push_notifications(&tx, rule, now, &mut batch).await?;
                let rooms_more = push_rooms(&tx, rule, now, &mut batch).await?;
                let mut events = EventRows::default();
                for event in batch.into_events() {
                    events.push(event);
                }
                let written = events.ids.len();
                if written > 0 {
                    let params: [&(dyn ToSql + Sync); 3] =
                        [&events.ids, &events.kinds, &events.bodies];
                    tx.execute(INSERT_EVENTS, &params)
                        .await
                        .map_err(unavailable)?;
                }
                tx.commit().await.map_err(unavailable)?;
                Ok(PushPass {
                    written,
                    more: users_more || rooms_more,
                })
            })
            .await?;
        self.events_committed(pass.written > 0);
        Ok(pass)
    }
}

/// The due rooms' messages owed to their members; returns whether more rooms were due.
async fn push_rooms(
    tx: &Transaction<'_>,
    rule: PushRule,
    now: u64,
    batch: &mut PushBatch,
) -> Result<bool, StoreError> {
    let limit = to_i64(PASS_LIMIT as u64);
    let found = tx
        .query(
            "SELECT r.id, r.name, r.last_seq, c.seq, n.created_at
             FROM rooms r
             LEFT JOIN LATERAL (SELECT seq FROM messages
                                WHERE room = r.id AND created_at <= $2
                                ORDER BY seq DESC LIMIT 1) c ON true
             LEFT JOIN LATERAL (SELECT created_at FROM messages
                                WHERE room = r.id AND seq = coalesce(c.seq, 0) + 1) n ON true
             WHERE r.push_due_at <= $1
             ORDER BY r.push_due_at LIMIT $3",
            &[&time(now), &time(rule.cutoff(now)), &limit],
        )
        .await
        .map_err(unavailable)?;
    let mut due = Vec::with_capacity(found.len());
    for row in &found {
        due.push(DueRoom {
            id: get(row, 0)?,
            name: get(row, 1)?,
            seen: get(row, 2)?,
            cut: get(row, 3)?,
            next_at: get(row, 4)?,
        });
    }
    if due.is_empty() {
        return Ok(false);
    }
    let cut: Vec<&DueRoom> = due.iter().filter(|r| r.cut.is_some()).collect();
    let rooms: Vec<&str> = cut.iter().map(|r| r.id.as_str()).collect();
    let cuts: Vec<i64> = cut.iter().filter_map(|r| r.cut).collect();
    // Each member not muted who has not read up to the cut nor been pushed it, with the latest
    // message up to the cut someone else sent (none: only their own, which owe nothing).
    let owed = tx
        .query(
            concat!(
                "SELECT d.room, rm.user_id, coalesce(w.last_read_seq, 0), m.seq IS NOT NULL, ",
                message_columns!(),
                " FROM unnest($1::text[], $2::bigint[]) AS d(room, cut)",
                " JOIN room_members rm ON rm.room = d.room",
                " LEFT JOIN read_watermarks w ON w.user_id = rm.user_id AND w.room = rm.room",
                " LEFT JOIN LATERAL (SELECT * FROM messages",
                "     WHERE room = d.room AND seq <= d.cut",
                "       AND seq > greatest(coalesce(w.last_read_seq, 0), rm.pushed_seq)",
                "       AND sender <> rm.user_id",
                "     ORDER BY seq DESC LIMIT 1) m ON true",
                " WHERE NOT rm.muted",
                "   AND greatest(coalesce(w.last_read_seq, 0), rm.pushed_seq) < d.cut"
            ),
            &[&rooms, &cuts],
        )
        .await
        .map_err(unavailable)?;
    let by_id: HashMap<&str, &DueRoom> = due.iter().map(|r| (r.id.as_str(), r)).collect();
    let (mut marked_rooms, mut marked_users, mut marked_cuts) =
        (Vec::new(), Vec::new(), Vec::new());
    for row in &owed {
        let room: String = get(row, 0)?;
        let user: String = get(row, 1)?;
        let read = to_u64(get(row, 2)?);
        let Some(state) = by_id.get(room.as_str()) else {
            continue;
        };
        marked_cuts.push(state.cut.unwrap_or(0));
        if get::<bool>(row, 3)? {
            let message: Message = rows::message_at(row, 4)?;
            batch.room(
                rows::user_id(&user)?,
                PushRoom {
                    room_id: message.room_id.clone(),
                    name: state.name.clone(),
                    unread: to_u64(state.seen).saturating_sub(read),
                    message: PushMessage::of(&message),
                },
            );
        }
        marked_rooms.push(room);
        marked_users.push(user);
    }
    if !marked_rooms.is_empty() {
        tx.execute(
            "UPDATE room_members m SET pushed_seq = v.cut
             FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v(room, user_id, cut)
             WHERE m.room = v.room AND m.user_id = v.user_id AND m.pushed_seq < v.cut",
            &[&marked_rooms, &marked_users, &marked_cuts],
        )
        .await
        .map_err(unavailable)?;
    }
    // Due again for the oldest message not yet old enough; a room whose last_seq moved since
    // it was looked at has messages this pass did not see, due a window from now at the latest.
    let again = time(rule.due(now));
    let ids: Vec<&str> = due.iter().map(|r| r.id.as_str()).collect();
    let seen: Vec<i64> = due.iter().map(|r| r.seen).collect();
    let next: Vec<Option<SystemTime>> = due
        .iter()
        .map(|r| {
            (r.cut.unwrap_or(0) < r.seen).then(|| {
                r.next_at
                    .map_or(again, |at| time(rule.due(unix_millis(at))))
            })
        })
        .collect();
    tx.execute(
        "UPDATE rooms r SET push_due_at = CASE WHEN r.last_seq = v.seen THEN v.next
                                               ELSE coalesce(v.next, $4) END
         FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) AS v(id, seen, next)
         WHERE r.id = v.id",
        &[&ids, &seen, &next, &again],
    )
    .await
    .map_err(unavailable)?;
    Ok(due.len() == PASS_LIMIT)
}

/// The due users' notifications owed to them; returns whether more users were due.
async fn push_notifications(
    tx: &Transaction<'_>,
    rule: PushRule,
    now: u64,
    batch: &mut PushBatch,
) -> Result<bool, StoreError> {
    let limit = to_i64(PASS_LIMIT as u64);
    let due = tx
        .query(
            "SELECT user_id, pushed_id FROM switchboard_push_users
             WHERE due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE",
            &[&time(now), &limit],
        )
        .await
        .map_err(unavailable)?;
    if due.is_empty() {
        return Ok(false);
    }
    let mut users = Vec::with_capacity(due.len());
    let mut pushed_ids = Vec::with_capacity(due.len());
    for row in &due {
        users.push(get::<String>(row, 0)?);
        pushed_ids.push(get::<i64>(row, 1)?);
    }
    // Every unread notification a pass has not looked at yet, and each user's unread count.
    let fresh = tx
        .query(
            concat!(
                "SELECT d.user_id, (SELECT count(*) FROM notifications",
                "     WHERE user_id = d.user_id AND read_at IS NULL), ",
                notification_columns!(),
                " FROM unnest($1::text[], $2::bigint[]) AS d(user_id, pushed_id)",
                " JOIN notifications n ON n.user_id = d.user_id",
                " WHERE n.id > d.pushed_id AND n.read_at IS NULL"
            ),
            &[&users, &pushed_ids],
        )
        .await
        .map_err(unavailable)?;
    let cutoff = rule.cutoff(now);
    let mut owed: HashMap<String, (u64, Notification)> = HashMap::new();
    let mut next: HashMap<String, u64> = HashMap::new();
    for row in &fresh {
        let user: String = get(row, 0)?;
        let unread = to_u64(get(row, 1)?);
        let notification = rows::notification_at(row, 2)?;
        if notification.created_at <= cutoff {
            let latest = owed.entry(user).or_insert((unread, notification.clone()));
            if notification.id > latest.1.id {
                latest.1 = notification;
            }
        } else {
            let due = rule.due(notification.created_at);
            next.entry(user)
                .and_modify(|at| *at = (*at).min(due))
                .or_insert(due);
        }
    }
    let new_pushed: Vec<i64> = users
        .iter()
        .zip(&pushed_ids)
        .map(|(user, &pushed)| owed.get(user).map_or(pushed, |(_, n)| to_i64(n.id)))
        .collect();
    let next_due: Vec<Option<SystemTime>> = users
        .iter()
        .map(|user| next.get(user).map(|&at| time(at)))
        .collect();
    tx.execute(
        "UPDATE switchboard_push_users u SET pushed_id = v.pushed_id, due_at = v.due_at
         FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) AS v(user_id, pushed_id, due_at)
         WHERE u.user_id = v.user_id",
        &[&users, &new_pushed, &next_due],
    )
    .await
    .map_err(unavailable)?;
    for (user, (unread, latest)) in owed {
        batch.notifications(
            rows::user_id(&user)?,
            PushNotifications {
                unread,
                latest: PushNotification::of(&latest),
            },
        );
    }
    Ok(due.len() == PASS_LIMIT)
}

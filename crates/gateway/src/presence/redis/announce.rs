//! Announced presence in Redis, cluster-wide (the rules of `presence/announcements.rs`, kept in
//! scripts so every node sees one state).
//!
//! Subjects are named `u|<user>` and `r|<room>`. Keys:
//! - `sb:announce:<subject>` — hash: `gen` (announced online or occupied under it; absent: not),
//!   `offline` (Unix ms since it has been without a connection, or without an occupant), `owed`
//!   (`on|<gen>|<at>` or `off|<gen>|<at>`, waiting for the outbox) and `lease` (until when a node
//!   is writing it).
//! - `sb:announce-due` — sorted set subject → when to look at it next.
//! - `sb:announce-generation` — the counter generations come from.
//! - `sb:room-occupants:<room>` — the users counted toward the room's occupancy;
//!   `sb:occupied-by:<user>` the rooms a user is counted toward.
//!
//! **Invariant:** an announcement is decided once and kept (`owed`) until a node settles it, so
//! a node that dies between deciding and writing to the outbox leaves it to the next node, which
//! writes the same announcement; the outbox keeps one per id.

use std::sync::LazyLock;
use std::time::Duration;

use fred::types::scripts::Script;
use switchboard_protocol::{RoomId, UserId};

use super::{RedisPresence, script};
use crate::presence::announcements::{decode, encode, parse_subject, subject_name};
use crate::presence::{Announcement, PresenceError, Subject};

const DUE_KEY: &str = "sb:announce-due";
const GENERATION_KEY: &str = "sb:announce-generation";

fn announce_key(subject: &Subject) -> String {
    format!("sb:announce:{}", subject_name(subject))
}

fn occupied_by_key(user: &UserId) -> String {
    format!("sb:occupied-by:{user}")
}

/// KEYS: due, user's hash. ARGV: subject, offline since (Unix ms) or ''.
static WATCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local at
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], 'offline', ARGV[2])
  at = tonumber(ARGV[2])
else
  at = now_ms()
end
redis.call('ZADD', KEYS[1], at, ARGV[1])
return 1",
    )
});

/// KEYS: due, user's hash, user's rooms. ARGV: user, rooms. Only a user announced online counts.
static ENTER: LazyLock<Script> = LazyLock::new(|| {
    script(
        "if redis.call('HEXISTS', KEYS[2], 'gen') == 0 then return 0 end
local now = now_ms()
for i = 2, #ARGV do
  redis.call('SADD', 'sb:room-occupants:' .. ARGV[i], ARGV[1])
  redis.call('SADD', KEYS[3], ARGV[i])
  redis.call('ZADD', KEYS[1], now, 'r|' .. ARGV[i])
end
return 1",
    )
});

/// KEYS: due, user's rooms. ARGV: user, `all` or `some`, rooms.
static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local rooms = {}
if ARGV[2] == 'all' then
  rooms = redis.call('SMEMBERS', KEYS[2])
else
  for i = 3, #ARGV do rooms[#rooms + 1] = ARGV[i] end
end
local now = now_ms()
for _, room in ipairs(rooms) do
  redis.call('SREM', 'sb:room-occupants:' .. room, ARGV[1])
  redis.call('SREM', KEYS[2], room)
  redis.call('ZADD', KEYS[1], now, 'r|' .. room)
end
return 1",
    )
});

/// KEYS: due, generation. ARGV: max, grace ms, lease ms. Returns (subject, owed) pairs.
static DUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local now = now_ms()
local grace, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local subjects = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, subject in ipairs(subjects) do
  local key = 'sb:announce:' .. subject
  local state = redis.call('HMGET', key, 'gen', 'offline', 'owed', 'lease')
  local gen, since, owed, leased = state[1], tonumber(state[2]), state[3], tonumber(state[4])
  local next_at = nil
  if owed then
    if leased and leased > now then
      next_at = leased
      owed = nil
    end
  else
    local kind, id = string.match(subject, '^(%a)|(.*)$')
    local live, wait = false, grace
    if kind == 'u' then
      local fields = redis.call('HGETALL', 'sb:presence:' .. id)
      for i = 2, #fields, 2 do
        local node = node_of(fields[i])
        if node and is_alive(node) then
          live = true
          break
        end
      end
    else
      -- A room has no grace of its own: its occupants had theirs.
      live = redis.call('EXISTS', 'sb:room-occupants:' .. id) == 1
      wait = 0
    end
    if live then
      if since then redis.call('HDEL', key, 'offline') end
      if not gen then
        gen = redis.call('INCR', KEYS[2])
        redis.call('HSET', key, 'gen', gen)
        owed = 'on|' .. gen .. '|' .. now
      end
    elseif gen then
      if not since then
        since = now
        redis.call('HSET', key, 'offline', since)
      end
      if now >= since + wait then
        redis.call('HDEL', key, 'gen', 'offline')
        owed = 'off|' .. gen .. '|' .. since
      else
        next_at = since + wait
      end
    else
      redis.call('DEL', key)
    end
  end
  if owed then
    next_at = now + lease
    redis.call('HSET', key, 'owed', owed, 'lease', next_at)
    out[#out + 1] = subject
    out[#out + 1] = owed
  end
  if next_at then
    redis.call('ZADD', KEYS[1], next_at, subject)
  else
    redis.call('ZREM', KEYS[1], subject)
  end
end
return out",
    )
});

/// KEYS: due, subject's hash. ARGV: subject, owed. What changed while it was owed is looked at now.
static SETTLED: LazyLock<Script> = LazyLock::new(|| {
    script(
        "if redis.call('HGET', KEYS[2], 'owed') == ARGV[2] then
  redis.call('HDEL', KEYS[2], 'owed', 'lease')
  redis.call('ZADD', KEYS[1], 0, ARGV[1])
end
return 1",
    )
});

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

impl RedisPresence {
    pub(super) async fn watch_announced(
        &self,
        user: &UserId,
        offline_since: Option<u64>,
    ) -> Result<(), PresenceError> {
        let since = offline_since.map(|ms| ms.to_string()).unwrap_or_default();
        let subject = Subject::User(user.clone());
        self.eval::<i64>(
            &WATCH,
            vec![DUE_KEY.to_owned(), announce_key(&subject)],
            vec![subject_name(&subject), since],
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn enter_announced_rooms(
        &self,
        user: &UserId,
        rooms: &[RoomId],
    ) -> Result<(), PresenceError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let mut args = vec![user.to_string()];
        args.extend(rooms.iter().map(ToString::to_string));
        self.eval::<i64>(
            &ENTER,
            vec![
                DUE_KEY.to_owned(),
                announce_key(&Subject::User(user.clone())),
                occupied_by_key(user),
            ],
            args,
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn leave_announced_rooms(
        &self,
        user: &UserId,
        rooms: Option<&[RoomId]>,
    ) -> Result<(), PresenceError> {
        let mut args = vec![user.to_string()];
        match rooms {
            None => args.push("all".to_owned()),
            Some([]) => return Ok(()),
            Some(rooms) => {
                args.push("some".to_owned());
                args.extend(rooms.iter().map(ToString::to_string));
            }
        }
        self.eval::<i64>(
            &LEAVE,
            vec![DUE_KEY.to_owned(), occupied_by_key(user)],
            args,
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn due_announced(
        &self,
        max: usize,
        grace: Duration,
        lease: Duration,
    ) -> Result<Vec<Announcement>, PresenceError> {
        let out: Vec<String> = self
            .eval(
                &DUE,
                vec![DUE_KEY.to_owned(), GENERATION_KEY.to_owned()],
                vec![max.to_string(), millis(grace), millis(lease)],
            )
            .await?;
        Ok(out
            .chunks_exact(2)
            .filter_map(|pair| decode(parse_subject(&pair[0])?, &pair[1]))
            .collect())
    }

    pub(super) async fn settle_announced(
        &self,
        announcement: &Announcement,
    ) -> Result<(), PresenceError> {
        let owed = encode(
            announcement.online,
            announcement.generation,
            announcement.at,
        );
        let subject = &announcement.subject;
        self.eval::<i64>(
            &SETTLED,
            vec![DUE_KEY.to_owned(), announce_key(subject)],
            vec![subject_name(subject), owed],
        )
        .await
        .map(|_| ())
    }
}

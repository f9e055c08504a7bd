//! Announced presence in Redis, cluster-wide (the rules of `presence/announcements.rs`, kept in
//! scripts so every node sees one state).
//!
//! Keys:
//! - `sb:announce:<user>` — hash: `gen` (announced online under it; absent: offline), `offline`
//!   (Unix ms since the user has had no connection), `owed` (`on|<gen>|<at>` or
//!   `off|<gen>|<at>`, waiting for the outbox) and `lease` (until when a node is writing it).
//! - `sb:announce-due` — sorted set user → when to look at them next.
//! - `sb:announce-generation` — the counter generations come from.
//!
//! **Invariant:** an announcement is decided once and kept (`owed`) until a node settles it, so
//! a node that dies between deciding and writing to the outbox leaves it to the next node, which
//! writes the same announcement; the outbox keeps one per id.

use std::sync::LazyLock;
use std::time::Duration;

use fred::types::scripts::Script;
use switchboard_protocol::UserId;

use super::{RedisPresence, script};
use crate::presence::announcements::{decode, encode};
use crate::presence::{Announcement, PresenceError};

const DUE_KEY: &str = "sb:announce-due";
const GENERATION_KEY: &str = "sb:announce-generation";

fn announce_key(user: &UserId) -> String {
    format!("sb:announce:{user}")
}

/// KEYS: due, user's hash. ARGV: user, offline since (Unix ms) or ''.
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

/// KEYS: due, generation. ARGV: max, grace ms, lease ms. Returns (user, owed) pairs.
static DUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local now = now_ms()
local grace, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local users = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, user in ipairs(users) do
  local key = 'sb:announce:' .. user
  local state = redis.call('HMGET', key, 'gen', 'offline', 'owed', 'lease')
  local gen, since, owed, leased = state[1], tonumber(state[2]), state[3], tonumber(state[4])
  local next_at = nil
  if owed then
    if leased and leased > now then
      next_at = leased
      owed = nil
    end
  else
    local live = false
    local fields = redis.call('HGETALL', 'sb:presence:' .. user)
    for i = 2, #fields, 2 do
      local node = node_of(fields[i])
      if node and is_alive(node) then
        live = true
        break
      end
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
      if now >= since + grace then
        redis.call('HDEL', key, 'gen', 'offline')
        owed = 'off|' .. gen .. '|' .. since
      else
        next_at = since + grace
      end
    else
      redis.call('DEL', key)
    end
  end
  if owed then
    next_at = now + lease
    redis.call('HSET', key, 'owed', owed, 'lease', next_at)
    out[#out + 1] = user
    out[#out + 1] = owed
  end
  if next_at then
    redis.call('ZADD', KEYS[1], next_at, user)
  else
    redis.call('ZREM', KEYS[1], user)
  end
end
return out",
    )
});

/// KEYS: due, user's hash. ARGV: user, owed. What changed while it was owed is looked at now.
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
        self.eval::<i64>(
            &WATCH,
            vec![DUE_KEY.to_owned(), announce_key(user)],
            vec![user.to_string(), since],
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
            .filter_map(|pair| decode(UserId::parse(pair[0].clone()).ok()?, &pair[1]))
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
        self.eval::<i64>(
            &SETTLED,
            vec![DUE_KEY.to_owned(), announce_key(&announcement.user)],
            vec![announcement.user.to_string(), owed],
        )
        .await
        .map(|_| ())
    }
}

//! Cluster-wide presence in Redis: a user is online while a live node holds a connection of
//! theirs.
//!
//! Keys (one Redis, not Redis Cluster: the scripts touch keys they compute):
//! - `sb:node:<node>` — the node's lease: its last refresh (Unix ms), expiring after the TTL.
//! - `sb:nodes` — hash node → last refresh (Unix ms): every node that may hold connections.
//! - `sb:presence:<user>` — hash conn → `<node>|<connected_at_ms>|<order>`.
//! - `sb:node-users:<node>` — set of the users with a connection on the node.
//! - `sb:status:<user>`, `sb:name:<user>` — status (absent: online) and display name, kept
//!   while the user is online.
//! - `sb:presence-order` — a counter that orders connections made in the same millisecond.
//! - `sb:reaper:<node>` — short lock: one node clears a dead node's connections.
//! - `sb:node-stats` — hash node → its last counts (`GET /api/v1/stats`), dropped with the node.
//!
//! Every change is one Lua script, atomic across nodes; times come from Redis (`TIME`), so
//! node clocks do not matter.
//!
//! Announced presence (`user.online` / `user.offline` webhooks) has its own keys:
//! `redis/announce.rs`.
//!
//! **Invariant:** a connection counts only while its node's lease is alive. A node killed
//! without warning stops refreshing; within its TTL its connections stop counting, and the next
//! `maintain` of another node reports its users who are left with no live connection — once
//! cluster-wide, as a user is taken off a dead node's set atomically by the node that reports it.
//!
//! **Invariant:** Redis may forget (restart, or this node's lease expired while it stalled):
//! `maintain` notices the lost lease and writes this node's connections back.

mod announce;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{
    Client, ClientLike, Expiration, HashesInterface, KeysInterface, SetOptions, Value,
};
use fred::types::scripts::Script;
use metrics::counter;
use switchboard_protocol::{PresenceStatus, RoomId, UserId, UserRef};

use super::{Announcement, ClusterStats, Connected, Departed, NodeStats, Presence, PresenceError};
use crate::broker::ConnId;

/// Nodes found dead and cleared by this node.
pub const REAPED_NODES: &str = "switchboard_presence_reaped_nodes_total";
/// Users reported offline because their node died.
pub const DEPARTED: &str = "switchboard_presence_departed_total";

/// Users taken off a dead node per script call, so no call blocks Redis for long.
const REAP_BATCH: usize = 200;
/// Connections written back per script call after Redis forgot them.
const RESTORE_BATCH: usize = 250;
/// Disconnects kept for a retry while Redis is unreachable; past this they are dropped (their
/// entries then stay until this node dies or Redis restarts).
const MAX_PENDING: usize = 65_536;

/// Reads a connection entry's node: `<node>|<connected_at_ms>|<order>`.
const LUA_NODE_OF: &str = "local function node_of(v) return string.match(v, '^(.*)|%d+|%d+$') end
local alive = {}
local function is_alive(node)
  if alive[node] == nil then alive[node] = redis.call('EXISTS', 'sb:node:' .. node) == 1 end
  return alive[node]
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

fn script(body: &str) -> Script {
    Script::from_lua(format!("{LUA_NODE_OF}{body}"))
}

/// KEYS: presence, name, status, node-users, order. ARGV: conn, node, user, name.
/// Returns the new entry, then every live connection of the user, oldest first.
static CONNECT: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local now = now_ms()
local order = redis.call('INCR', KEYS[5])
local entry = ARGV[2] .. '|' .. now .. '|' .. order
alive[ARGV[2]] = true
local live = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local node, at, ord = string.match(fields[i + 1], '^(.*)|(%d+)|(%d+)$')
  if node and fields[i] ~= ARGV[1] and is_alive(node) then
    live[#live + 1] = { tonumber(at), tonumber(ord), fields[i] }
  end
end
if #live == 0 then redis.call('DEL', KEYS[3]) end
redis.call('HSET', KEYS[1], ARGV[1], entry)
redis.call('SET', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[3])
live[#live + 1] = { now, order, ARGV[1] }
table.sort(live, function(x, y)
  if x[1] ~= y[1] then return x[1] < y[1] end
  return x[2] < y[2]
end)
local out = { entry }
for _, c in ipairs(live) do out[#out + 1] = c[3] end
return out",
    )
});

/// KEYS: presence, node-users, status, name. ARGV: conn, node, user.
/// Returns the time (Unix ms) when it was the user's last live connection, else -1.
static DISCONNECT: LazyLock<Script> = LazyLock::new(|| {
    script(
        "if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return -1 end
alive[ARGV[2]] = true
local ours, live, dead = 0, 0, {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local node = node_of(fields[i + 1])
  if node == ARGV[2] then ours = ours + 1 end
  if node and is_alive(node) then live = live + 1 else dead[#dead + 1] = fields[i] end
end
if ours == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end
if live > 0 then return -1 end
-- Offline now: what dead nodes still hold must not announce it a second time.
for _, f in ipairs(dead) do redis.call('HDEL', KEYS[1], f) end
redis.call('DEL', KEYS[3], KEYS[4])
return now_ms()",
    )
});

/// KEYS: presence, status. ARGV: status.
static SET_STATUS: LazyLock<Script> = LazyLock::new(|| {
    script(
        "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('SET', KEYS[2], ARGV[1]) end
return 1",
    )
});

/// KEYS: lease, nodes. ARGV: node, ttl ms. Returns 1 when the lease was still there.
/// KEYS: node-stats. Returns (node, report) for every live node that reported, then the number
/// of users online on any live node. Reports of dead nodes are dropped.
static STATS: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local out = {}
local sets = {}
for _, node in ipairs(redis.call('HKEYS', 'sb:nodes')) do
  if is_alive(node) then
    table.insert(sets, 'sb:node-users:' .. node)
    local report = redis.call('HGET', KEYS[1], node)
    if report then
      table.insert(out, node)
      table.insert(out, report)
    end
  else
    redis.call('HDEL', KEYS[1], node)
  end
end
local users = 0
if #sets > 0 then
  -- Counted in Redis, not copied into Lua: one pass over the sets.
  local union = KEYS[1] .. ':union'
  users = redis.call('SUNIONSTORE', union, unpack(sets))
  redis.call('DEL', union)
end
table.insert(out, tostring(users))
return out",
    )
});

static LEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local had = redis.call('EXISTS', KEYS[1])
local now = now_ms()
redis.call('SET', KEYS[1], now, 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], now)
return had",
    )
});

/// KEYS: node-users, order. ARGV: node, then (user, conn, connected_at_ms, name) per
/// connection, oldest first: each gets a new order number (it only breaks ties within a
/// millisecond), so this node's connections keep their order.
static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    script(
        "for i = 2, #ARGV, 4 do
  local entry = ARGV[1] .. '|' .. ARGV[i + 2] .. '|' .. redis.call('INCR', KEYS[2])
  redis.call('HSETNX', 'sb:presence:' .. ARGV[i], ARGV[i + 1], entry)
  redis.call('SETNX', 'sb:name:' .. ARGV[i], ARGV[i + 3])
  redis.call('SADD', KEYS[1], ARGV[i])
end
return 1",
    )
});

/// KEYS: nodes. ARGV: this node. Returns the nodes whose lease is gone.
static DEAD_NODES: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local nodes = redis.call('HKEYS', KEYS[1])
local out = {}
for _, node in ipairs(nodes) do
  if node ~= ARGV[1] and not is_alive(node) then out[#out + 1] = node end
end
return out",
    )
});

/// KEYS: dead node's users, dead node's lease, nodes. ARGV: dead node, batch size, and
/// `force` to clear the node even though its lease is alive (this node's previous life).
/// Returns {'alive'}, {'done'}, or {'more', last_seen, departed users...}.
static REAP: LazyLock<Script> = LazyLock::new(|| {
    script(
        "if ARGV[3] ~= 'force' and redis.call('EXISTS', KEYS[2]) == 1 then return { 'alive' } end
local users = redis.call('SPOP', KEYS[1], tonumber(ARGV[2]))
if #users == 0 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  return { 'done' }
end
local out = { 'more', redis.call('HGET', KEYS[3], ARGV[1]) or '0' }
alive[ARGV[1]] = false
for _, user in ipairs(users) do
  local key = 'sb:presence:' .. user
  local fields = redis.call('HGETALL', key)
  local removed, live, others = 0, 0, {}
  for i = 1, #fields, 2 do
    local node = node_of(fields[i + 1])
    if node == ARGV[1] then
      redis.call('HDEL', key, fields[i])
      removed = removed + 1
    elseif node and is_alive(node) then
      live = live + 1
    else
      others[#others + 1] = fields[i]
    end
  end
  if removed > 0 and live == 0 then
    for _, f in ipairs(others) do redis.call('HDEL', key, f) end
    redis.call('DEL', 'sb:status:' .. user, 'sb:name:' .. user)
    out[#out + 1] = user
  end
end
return out",
    )
});

/// ARGV: users. Returns (user, name, status) for each one online and visible.
///
/// A user is online when a live node's user set holds them: one `SMISMEMBER` per live node
/// for all the users at once, rather than reading every user's connections (a room's `online`
/// list is asked for on every join, so in a room of 1,000 this is what a join costs Redis).
static ONLINE: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local online = {}
for _, node in ipairs(redis.call('HKEYS', 'sb:nodes')) do
  if is_alive(node) then
    local key = 'sb:node-users:' .. node
    -- In chunks: Lua's unpack is limited to a few thousand values.
    for first = 1, #ARGV, 1000 do
      local last = math.min(first + 999, #ARGV)
      local flags = redis.call('SMISMEMBER', key, unpack(ARGV, first, last))
      for i, flag in ipairs(flags) do
        if flag == 1 then online[first + i - 1] = true end
      end
    end
  end
end
local out = {}
for i, user in ipairs(ARGV) do
  if online[i] then
    local status = redis.call('GET', 'sb:status:' .. user) or 'online'
    if status ~= 'offline' then
      out[#out + 1] = user
      out[#out + 1] = redis.call('GET', 'sb:name:' .. user) or user
      out[#out + 1] = status
    end
  end
end
return out",
    )
});

fn presence_key(user: &UserId) -> String {
    format!("sb:presence:{user}")
}
fn status_key(user: &UserId) -> String {
    format!("sb:status:{user}")
}
fn name_key(user: &UserId) -> String {
    format!("sb:name:{user}")
}
fn lease_key(node: &str) -> String {
    format!("sb:node:{node}")
}
fn node_users_key(node: &str) -> String {
    format!("sb:node-users:{node}")
}
const NODES_KEY: &str = "sb:nodes";
/// Hash node → `<connections>|<users>|<rooms>`, each node's last report.
const NODE_STATS_KEY: &str = "sb:node-stats";
const ORDER_KEY: &str = "sb:presence-order";

fn status_name(status: PresenceStatus) -> &'static str {
    match status {
        PresenceStatus::Online => "online",
        PresenceStatus::Away => "away",
        PresenceStatus::Busy => "busy",
        PresenceStatus::Offline => "offline",
    }
}

fn parse_status(s: &str) -> PresenceStatus {
    match s {
        "away" => PresenceStatus::Away,
        "busy" => PresenceStatus::Busy,
        "offline" => PresenceStatus::Offline,
        _ => PresenceStatus::Online,
    }
}

fn unavailable(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> PresenceError {
    PresenceError::Unavailable(error.into())
}

/// A connection id as stored, read back through its own serde shape.
fn conn_id(s: String) -> Option<ConnId> {
    serde_json::from_value(serde_json::Value::String(s)).ok()
}

/// A [`Presence`] shared by every node through Redis.
pub struct RedisPresence {
    client: Client,
    node_id: String,
    ttl: Duration,
    /// This node's connections and their entries, to write back when Redis forgot them.
    local: Mutex<HashMap<ConnId, Local>>,
    /// Disconnects Redis did not take (it was unreachable), retried by `maintain`.
    pending: Mutex<Vec<(UserId, ConnId)>>,
    /// The lease was found lost and the connections are not written back yet.
    restore_needed: AtomicBool,
    /// Users found at start-up on this node id's previous life, reported by the first
    /// `maintain`.
    carried: Mutex<Vec<Departed>>,
}

/// One connection of this node, as it would be written back. Held per connection, so kept
/// small: the user's id and name in one allocation (`|` is not allowed in an id), and the time
/// it connected; the entry's node is this node, and its order number is given anew.
#[derive(Debug)]
struct Local {
    user: Box<str>,
    connected_at_ms: u64,
}

impl Local {
    fn new(user: &UserRef, connected_at_ms: u64) -> Self {
        Self {
            user: format!("{}|{}", user.id, user.name).into(),
            connected_at_ms,
        }
    }

    /// The user's id and name.
    fn user(&self) -> (&str, &str) {
        self.user.split_once('|').unwrap_or((&self.user, ""))
    }
}

/// Connections in the order they were made: by time, then, within a millisecond, by their
/// number on this node (ids with one prefix: a shorter number is a smaller one).
fn connection_order(conn: &ConnId, local: &Local) -> (u64, usize, String) {
    (local.connected_at_ms, conn.as_str().len(), conn.to_string())
}

/// When an entry's connection was made: `<node>|<connected_at_ms>|<order>`.
fn connected_at_ms(entry: &str) -> Option<u64> {
    let mut parts = entry.rsplitn(3, '|');
    parts.next()?.parse::<u64>().ok()?;
    let connected_at_ms = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(connected_at_ms)
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("node_id", &self.node_id)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RedisPresence {
    /// Connects (failing if Redis does not answer now) and takes this node's lease. Call
    /// [`Presence::maintain`] well within `ttl` (the config asks for under half of it).
    pub async fn connect(url: &str, node_id: &str, ttl: Duration) -> Result<Self, PresenceError> {
        let client = crate::broker::redis::client(url, 16).map_err(unavailable)?;
        if let Err(error) = crate::broker::redis::init(&client).await {
            let _ = client.quit().await;
            return Err(unavailable(error));
        }
        let presence = Self {
            client,
            node_id: node_id.to_owned(),
            ttl,
            local: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            restore_needed: AtomicBool::new(false),
            carried: Mutex::new(Vec::new()),
        };
        // From here on, an error drops `presence`, which quits the client.
        // A node restarted under the same id: what its previous life held is gone with it.
        let mut carried = Vec::new();
        presence.clear(node_id, true, &mut carried).await?;
        *lock(&presence.carried) = carried;
        presence.refresh_lease().await?;
        Ok(presence)
    }

    fn connected(&self) -> Result<(), PresenceError> {
        if self.client.is_connected() {
            Ok(())
        } else {
            Err(unavailable("redis is not connected"))
        }
    }

    async fn eval<R: fred::types::FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, PresenceError> {
        self.connected()?;
        script
            .evalsha_with_reload(&self.client, keys, args)
            .await
            .map_err(unavailable)
    }

    /// Refreshes the lease; returns whether it had expired (or Redis lost it).
    async fn refresh_lease(&self) -> Result<bool, PresenceError> {
        let ttl_ms = self.ttl.as_millis().max(1).to_string();
        let had: i64 = self
            .eval(
                &LEASE,
                vec![lease_key(&self.node_id), NODES_KEY.to_owned()],
                vec![self.node_id.clone(), ttl_ms],
            )
            .await?;
        Ok(had == 0)
    }

    /// Writes this node's connections back (entries Redis still has are kept as they are).
    async fn restore(&self) -> Result<(), PresenceError> {
        let rows: Vec<[String; 4]> = {
            let local = lock(&self.local);
            let mut conns: Vec<_> = local.iter().collect();
            conns.sort_by_cached_key(|(conn, local)| connection_order(conn, local));
            conns
                .into_iter()
                .map(|(conn, local)| {
                    let (id, name) = local.user();
                    [
                        id.to_owned(),
                        conn.to_string(),
                        local.connected_at_ms.to_string(),
                        name.to_owned(),
                    ]
                })
                .collect()
        };
        if rows.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            connections = rows.len(),
            "presence lease was lost: writing this node's connections back"
        );
        for chunk in rows.chunks(RESTORE_BATCH) {
            let mut args = vec![self.node_id.clone()];
            args.extend(chunk.iter().flatten().cloned());
            self.eval::<Value>(
                &RESTORE,
                vec![node_users_key(&self.node_id), ORDER_KEY.to_owned()],
                args,
            )
            .await?;
        }
        Ok(())
    }

    /// Retries the disconnects Redis missed; the users they left offline are departed.
    async fn retry_pending(&self) -> Vec<Departed> {
        let pending = std::mem::take(&mut *lock(&self.pending));
        let mut departed = Vec::new();
        let mut failed = Vec::new();
        for (user, conn) in pending {
            match self.forget(&user, &conn).await {
                Ok(Some(last_seen)) => departed.push(Departed { user, last_seen }),
                Ok(None) => {}
                Err(_) => failed.push((user, conn)),
            }
        }
        if !failed.is_empty() {
            lock(&self.pending).extend(failed);
        }
        departed
    }

    async fn forget(&self, user: &UserId, conn: &ConnId) -> Result<Option<u64>, PresenceError> {
        let last_seen: i64 = self
            .eval(
                &DISCONNECT,
                vec![
                    presence_key(user),
                    node_users_key(&self.node_id),
                    status_key(user),
                    name_key(user),
                ],
                vec![conn.to_string(), self.node_id.clone(), user.to_string()],
            )
            .await?;
        Ok(u64::try_from(last_seen).ok())
    }

    /// Clears one dead node if this node wins its reaper lock; returns its departed users.
    async fn reap(&self, node: &str, departed: &mut Vec<Departed>) -> Result<(), PresenceError> {
        let ttl_ms = i64::try_from(self.ttl.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let locked: Option<String> = self
            .client
            .set(
                format!("sb:reaper:{node}"),
                self.node_id.as_str(),
                Some(Expiration::PX(ttl_ms)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        if locked.is_none() {
            return Ok(());
        }
        tracing::info!(%node, "presence: node lease expired, clearing its connections");
        counter!(REAPED_NODES).increment(1);
        self.clear(node, false, departed).await
    }

    /// Takes a node's users off it, a batch at a time, until none is left or it turns out
    /// alive (unless `force`).
    async fn clear(
        &self,
        node: &str,
        force: bool,
        departed: &mut Vec<Departed>,
    ) -> Result<(), PresenceError> {
        let mode = if force { "force" } else { "dead" };
        loop {
            let out: Vec<String> = self
                .eval(
                    &REAP,
                    vec![node_users_key(node), lease_key(node), NODES_KEY.to_owned()],
                    vec![node.to_owned(), REAP_BATCH.to_string(), mode.to_owned()],
                )
                .await?;
            let mut out = out.into_iter();
            if out.next().as_deref() != Some("more") {
                return Ok(());
            }
            let last_seen = out.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            for user in out {
                if let Ok(user) = UserId::parse(user) {
                    counter!(DEPARTED).increment(1);
                    departed.push(Departed { user, last_seen });
                }
            }
        }
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn connect(&self, user: &UserRef, conn: &ConnId) -> Result<Connected, PresenceError> {
        let out: Vec<String> = self
            .eval(
                &CONNECT,
                vec![
                    presence_key(&user.id),
                    name_key(&user.id),
                    status_key(&user.id),
                    node_users_key(&self.node_id),
                    ORDER_KEY.to_owned(),
                ],
                vec![
                    conn.to_string(),
                    self.node_id.clone(),
                    user.id.to_string(),
                    user.name.clone(),
                ],
            )
            .await?;
        let mut out = out.into_iter();
        let connected_at_ms = out
            .next()
            .as_deref()
            .and_then(connected_at_ms)
            .ok_or_else(|| unavailable("unexpected reply from the connect script"))?;
        let connections: Vec<ConnId> = out.filter_map(conn_id).collect();
        lock(&self.local).insert(conn.clone(), Local::new(user, connected_at_ms));
        Ok(Connected {
            first: connections.len() == 1,
            connections,
        })
    }

    async fn disconnect(&self, user: &UserId, conn: &ConnId) -> Result<Option<u64>, PresenceError> {
        let ours = lock(&self.local).remove(conn).is_some();
        match self.forget(user, conn).await {
            Ok(last) => Ok(last),
            Err(error) => {
                let mut pending = lock(&self.pending);
                if ours && pending.len() < MAX_PENDING {
                    pending.push((user.clone(), conn.clone()));
                }
                Err(error)
            }
        }
    }

    async fn set_status(&self, user: &UserId, status: PresenceStatus) -> Result<(), PresenceError> {
        self.eval::<Value>(
            &SET_STATUS,
            vec![presence_key(user), status_key(user)],
            vec![status_name(status).to_owned()],
        )
        .await
        .map(|_| ())
    }

    async fn report(&self, stats: NodeStats) -> Result<(), PresenceError> {
        self.connected()?;
        let report = format!("{}|{}|{}", stats.connections, stats.users, stats.rooms);
        self.client
            .hset::<(), _, _>(NODE_STATS_KEY, (self.node_id.as_str(), report))
            .await
            .map_err(unavailable)
    }

    async fn cluster_stats(&self) -> Result<ClusterStats, PresenceError> {
        let out: Vec<String> = self
            .eval(&STATS, vec![NODE_STATS_KEY.to_owned()], Vec::new())
            .await?;
        let (users, reports) = out.split_last().ok_or_else(|| {
            PresenceError::Unavailable("the stats script returned nothing".into())
        })?;
        let nodes = reports
            .chunks_exact(2)
            .filter_map(|pair| {
                let mut numbers = pair[1].split('|').map(str::parse::<u64>);
                let stats = NodeStats {
                    connections: numbers.next()?.ok()?,
                    users: numbers.next()?.ok()?,
                    rooms: numbers.next()?.ok()?,
                };
                Some((pair[0].clone(), stats))
            })
            .collect();
        Ok(ClusterStats {
            nodes,
            users: users.parse().unwrap_or(0),
        })
    }

    async fn maintain(&self) -> Result<Vec<Departed>, PresenceError> {
        if self.refresh_lease().await? {
            self.restore_needed.store(true, Ordering::Release);
        }
        if self.restore_needed.load(Ordering::Acquire) {
            self.restore().await?;
            self.restore_needed.store(false, Ordering::Release);
        }
        let mut departed = std::mem::take(&mut *lock(&self.carried));
        departed.extend(self.retry_pending().await);
        let dead: Vec<String> = self
            .eval(
                &DEAD_NODES,
                vec![NODES_KEY.to_owned()],
                vec![self.node_id.clone()],
            )
            .await?;
        for node in dead {
            if let Err(error) = self.reap(&node, &mut departed).await {
                // The lock expires; this node or another finishes the job later.
                tracing::warn!(%node, %error, "presence: clearing a dead node failed");
                break;
            }
        }
        Ok(departed)
    }

    async fn online(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserRef, PresenceStatus)>, PresenceError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let out: Vec<String> = self
            .eval(
                &ONLINE,
                Vec::new(),
                users.iter().map(ToString::to_string).collect(),
            )
            .await?;
        Ok(out
            .chunks_exact(3)
            .filter_map(|row| {
                let id = UserId::parse(row[0].clone()).ok()?;
                Some((
                    UserRef {
                        id,
                        name: row[1].clone(),
                    },
                    parse_status(&row[2]),
                ))
            })
            .collect())
    }

    async fn watch(&self, user: &UserId, offline_since: Option<u64>) -> Result<(), PresenceError> {
        self.watch_announced(user, offline_since).await
    }

    async fn enter_rooms(&self, user: &UserId, rooms: &[RoomId]) -> Result<(), PresenceError> {
        self.enter_announced_rooms(user, rooms).await
    }

    async fn leave_rooms(
        &self,
        user: &UserId,
        rooms: Option<&[RoomId]>,
    ) -> Result<(), PresenceError> {
        self.leave_announced_rooms(user, rooms).await
    }

    async fn due_announcements(
        &self,
        max: usize,
        grace: Duration,
        lease: Duration,
    ) -> Result<Vec<Announcement>, PresenceError> {
        self.due_announced(max, grace, lease).await
    }

    async fn settled(&self, announcement: &Announcement) -> Result<(), PresenceError> {
        self.settle_announced(announcement).await
    }
}

impl Drop for RedisPresence {
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            runtime.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_stored_by_their_wire_names() {
        for status in [
            PresenceStatus::Online,
            PresenceStatus::Away,
            PresenceStatus::Busy,
            PresenceStatus::Offline,
        ] {
            let wire = serde_json::to_value(status).unwrap();
            assert_eq!(wire, status_name(status));
            assert_eq!(parse_status(status_name(status)), status);
        }
    }

    #[test]
    fn entries_read_back_as_written() {
        let alice = UserRef {
            id: UserId::parse("alice").unwrap(),
            name: "Alice | the first".into(),
        };
        let local = Local::new(&alice, 1_795_782_708_123);
        assert_eq!(local.user(), ("alice", "Alice | the first"));
        assert_eq!(
            connected_at_ms("node|with-bar|1795782708123|42"),
            Some(1_795_782_708_123)
        );
        assert_eq!(connected_at_ms("n1|x|42"), None);
        assert_eq!(connected_at_ms("42"), None);
    }

    #[test]
    fn connections_are_written_back_in_the_order_they_were_made() {
        let alice = UserRef {
            id: UserId::parse("alice").unwrap(),
            name: "Alice".into(),
        };
        let mut conns = [
            (ConnId::new("n", 10), Local::new(&alice, 5)),
            (ConnId::new("n", 9), Local::new(&alice, 5)),
            (ConnId::new("n", 11), Local::new(&alice, 4)),
        ];
        conns.sort_by_cached_key(|(conn, local)| connection_order(conn, local));
        let order: Vec<String> = conns.iter().map(|(conn, _)| conn.to_string()).collect();
        assert_eq!(order, ["n-11", "n-9", "n-10"]);
    }

    #[test]
    fn connection_ids_read_back_as_written() {
        let conn = ConnId::new("n-1", 42);
        assert_eq!(conn_id(conn.to_string()), Some(conn));
    }
}

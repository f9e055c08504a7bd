#!/usr/bin/env bash
# How many messages per second PostgreSQL alone can persist on one core, with no gateway: the
# group committer's transaction, replayed by pgbench (on CPU 1) against a private PostgreSQL on
# CPU 0 (default durability: fsync and synchronous_commit on), with the gateway's own schema.
# Each transaction writes 256 messages, each to its own room (the `persist` scenario of
# scripts/bench.sh), in three shapes:
#
#   full        what the gateway runs: lock the rooms, look up the idempotency keys, move each
#               room's last_seq, insert the rows
#   no-lookup   the same without the idempotency lookup
#   insert-only just the multi-row insert (both of the table's indexes, and the commit)
#
# Prints messages/s (transactions/s x 256) per shape and pgbench client count. Not a test: a
# measurement for docs/benchmarks.md. Takes about a minute.
#
#   scripts/pg-ceiling.sh                 # every shape, 2 pgbench clients
#   PG_CEILING_CLIENTS="1 2 4" PG_CEILING_SECS=20 scripts/pg-ceiling.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PORT=${PG_CEILING_PORT:-18350}
SECS=${PG_CEILING_SECS:-10}
CLIENTS=${PG_CEILING_CLIENTS:-2}
BATCH=256
ROOMS=2000

DIR=$(mktemp -d)
PG_PID=
cleanup() {
    if [ -n "$PG_PID" ]; then
        kill -INT "$PG_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT

# PostgreSQL refuses to run as root, so as root its server runs as nobody.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
    else
        "$@"
    fi
}
[ "$(id -u)" -eq 0 ] && chown nobody:nogroup "$DIR"
as_pg "$PG_BIN/initdb" -D "$DIR/data" -U switchboard --auth=trust -E UTF8 --locale=C.UTF-8 \
    --no-instructions >"$DIR/initdb.log"
as_pg taskset -c 0 "$PG_BIN/postgres" -D "$DIR/data" -p "$PORT" -k "$DIR" \
    -c listen_addresses=127.0.0.1 >"$DIR/postgres.log" 2>&1 &
for _ in $(seq 100); do
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" && break
    sleep 0.1
done
PG_PID=$(head -n 1 "$DIR/data/postmaster.pid")
psql_() { PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U switchboard "$@"; }

# The batch: BATCH consecutive rooms from a random start, one message each, as the gateway's
# arrays would carry them.
last=$((BATCH - 1))
rooms="ARRAY(SELECT 'room-' || g FROM generate_series(:base, :base + $last) g)"
lock="SELECT id, last_seq FROM rooms WHERE id = ANY($rooms) ORDER BY id FOR NO KEY UPDATE;"
lookup="SELECT m.seq FROM unnest($rooms, \
ARRAY(SELECT 'user-' || g FROM generate_series(:base, :base + $last) g), \
ARRAY(SELECT md5(random()::text) FROM generate_series(1, $BATCH))) AS k(room, sender, client_msg_id) \
CROSS JOIN LATERAL (SELECT * FROM messages WHERE room = k.room AND sender = k.sender \
AND client_msg_id = k.client_msg_id LIMIT 1) m;"
update="UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ANY($rooms);"
insert="INSERT INTO messages (room, seq, id, sender, sender_name, kind, content, client_msg_id, \
created_at) SELECT 'room-' || g, nextval('seqs'), gen_random_uuid(), 'user-' || g, 'User ' || g, \
'text', '1764168000000 a chat message of about fifty bytes', md5(random()::text), now() \
FROM generate_series(:base, :base + $last) g;"
header="\\set base random(0, $((ROOMS - BATCH)))"
printf '%s\nBEGIN;\n%s\n%s\n%s\n%s\nCOMMIT;\n' "$header" "$lock" "$lookup" "$update" "$insert" \
    >"$DIR/full.sql"
printf '%s\nBEGIN;\n%s\n%s\n%s\nCOMMIT;\n' "$header" "$lock" "$update" "$insert" >"$DIR/no-lookup.sql"
printf '%s\nBEGIN;\n%s\nCOMMIT;\n' "$header" "$insert" >"$DIR/insert-only.sql"

echo "| shape | pgbench clients | transactions/s | messages/s |"
echo "|---|---|---|---|"
for shape in full no-lookup insert-only; do
    for clients in $CLIENTS; do
        # A fresh database per run, so every run starts from the same table sizes.
        psql_ -d postgres -c "DROP DATABASE IF EXISTS ceiling" -c "CREATE DATABASE ceiling"
        psql_ -d ceiling -f "$ROOT/crates/gateway/migrations/0001_init.sql" >/dev/null
        psql_ -d ceiling -c "CREATE SEQUENCE seqs" -c "INSERT INTO rooms (id, name, kind, created_by) \
            SELECT 'room-' || g, 'room', 'public', 'bench' FROM generate_series(0, $((ROOMS - 1))) g"
        tps=$(taskset -c 1 "$PG_BIN/pgbench" -n -M prepared -h 127.0.0.1 -p "$PORT" -U switchboard \
            -c "$clients" -j 1 -T "$SECS" -f "$DIR/$shape.sql" ceiling 2>&1 |
            sed -n 's/^tps = \([0-9.]*\).*/\1/p')
        [ -n "$tps" ] || { echo "pgbench failed for $shape" >&2; exit 1; }
        awk -v s="$shape" -v c="$clients" -v t="$tps" -v b="$BATCH" \
            'BEGIN { printf "| %s | %d | %.0f | %.0f |\n", s, c, t, t * b }'
    done
done

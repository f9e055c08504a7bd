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
# With PG_CEILING_RATE set, pgbench offers that many transactions per second instead of as many
# as it can, and the table gains each shape's commit latency (p50/p99, from pgbench's
# per-transaction log): the floor that a durable commit puts under a persisted message's
# latency, with no gateway at all.
#
#   scripts/pg-ceiling.sh                 # every shape, 2 pgbench clients
#   PG_CEILING_CLIENTS="1 2 4" PG_CEILING_SECS=20 scripts/pg-ceiling.sh
#   PG_CEILING_BATCH=1 PG_CEILING_RATE=200 scripts/pg-ceiling.sh   # 100 rooms at 2 msgs/s each
set -euo pipefail

cd "$(dirname "$0")/.."
PG_PORT=${PG_CEILING_PORT:-18350}
SECS=${PG_CEILING_SECS:-10}
CLIENTS=${PG_CEILING_CLIENTS:-2}
BATCH=${PG_CEILING_BATCH:-256}
RATE=${PG_CEILING_RATE:-}
ROOMS=2000

WORK=$(mktemp -d)
PG_LOG=$WORK/postgres.log
# shellcheck source=lib/postgres.sh
source scripts/lib/postgres.sh
trap 'stop_postgres; rm -rf "$WORK"' EXIT
start_postgres

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
    >"$WORK/full.sql"
printf '%s\nBEGIN;\n%s\n%s\n%s\nCOMMIT;\n' "$header" "$lock" "$update" "$insert" >"$WORK/no-lookup.sql"
printf '%s\nBEGIN;\n%s\nCOMMIT;\n' "$header" "$insert" >"$WORK/insert-only.sql"

if [ -n "$RATE" ]; then
    echo "| shape ($BATCH per transaction, $RATE offered/s) | pgbench clients | transactions/s | messages/s | commit p50 ms | commit p99 ms |"
    echo "|---|---|---|---|---|---|"
else
    echo "| shape ($BATCH per transaction) | pgbench clients | transactions/s | messages/s |"
    echo "|---|---|---|---|"
fi
for shape in full no-lookup insert-only; do
    for clients in $CLIENTS; do
        # A fresh database per run, so every run starts from the same table sizes.
        psql_pg -d postgres -c "DROP DATABASE IF EXISTS ceiling" -c "CREATE DATABASE ceiling"
        psql_pg -d ceiling -f crates/gateway/migrations/0001_init.sql >/dev/null
        psql_pg -d ceiling -c "CREATE SEQUENCE seqs" -c "INSERT INTO rooms (id, name, kind, created_by) \
            SELECT 'room-' || g, 'room', 'public', 'bench' FROM generate_series(0, $((ROOMS - 1))) g"
        rate_args=()
        [ -n "$RATE" ] && rate_args=(-R "$RATE" -l --log-prefix="$WORK/log")
        rm -f "$WORK"/log.*
        tps=$(cd "$WORK" && taskset -c 1 "$PG_BIN/pgbench" -n -M prepared -h 127.0.0.1 \
            -p "$PG_PORT" -U switchboard -c "$clients" -j 1 -T "$SECS" "${rate_args[@]}" \
            -f "$WORK/$shape.sql" ceiling 2>&1 |
            sed -n 's/^tps = \([0-9.]*\).*/\1/p')
        [ -n "$tps" ] || { echo "pgbench failed for $shape" >&2; exit 1; }
        if [ -n "$RATE" ]; then
            # The log's third field is the transaction's latency in microseconds (with -R it
            # counts from the scheduled start, so a late start is part of it).
            read -r p50 p99 < <(cat "$WORK"/log.* | awk '{ print $3 }' | sort -n | awk \
                '{ v[NR] = $1 } END { printf "%.2f %.2f\n", v[int(NR * 0.5) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000 }')
            awk -v s="$shape" -v c="$clients" -v t="$tps" -v b="$BATCH" -v p50="$p50" -v p99="$p99" \
                'BEGIN { printf "| %s | %d | %.0f | %.0f | %s | %s |\n", s, c, t, t * b, p50, p99 }'
        else
            awk -v s="$shape" -v c="$clients" -v t="$tps" -v b="$BATCH" \
                'BEGIN { printf "| %s | %d | %.0f | %.0f |\n", s, c, t, t * b }'
        fi
    done
done

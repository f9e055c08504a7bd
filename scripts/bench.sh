#!/usr/bin/env bash
# Benchmarks the gateway with loadgen; results go to docs/benchmarks.md by hand.
#
# Every scenario runs BENCH_RUNS times (default 3) against a fresh gateway pinned to CPU 0, with
# loadgen pinned to CPU 1, and the medians are printed. Loopback only; every run is bounded in
# connections and time; the whole script takes about 10 minutes on 2 cores.
#
#   scripts/bench.sh                 # everything
#   BENCH_ONLY=idle scripts/bench.sh # one scenario: idle, room, rooms, persist
#
# Knobs (environment): BENCH_PORT (18080), BENCH_RUNS (3), BENCH_SECS (seconds of sending, 8),
# BENCH_ROOM_RATES (messages/s tried with 1,000 receivers in one room, "25 50 100 200 300 400 600"),
# BENCH_ROOMS_RATES (messages/s, all rooms together, for 10,000 receivers in 100 rooms,
# "500 1000 2000"), BENCH_PERSIST_CONNS (closed-loop senders in the persist scenario, "2000"),
# BENCH_QUIET_WAIT (120 s), BENCH_RETRIES (1), BENCH_GATEWAY (a gateway
# binary to measure instead of building this tree's).
set -euo pipefail

cd "$(dirname "$0")/.."
PORT=${BENCH_PORT:-18080}
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_SECS:-8}
ROOM_RATES=${BENCH_ROOM_RATES:-"25 50 100 200 300 400 600"}
ROOMS_RATES=${BENCH_ROOMS_RATES:-"500 1000 2000"}
PERSIST_CONNS=${BENCH_PERSIST_CONNS:-2000}
ONLY=${BENCH_ONLY:-}
OUT=target/bench/$(date +%Y%m%d-%H%M%S)
GATEWAY=${BENCH_GATEWAY:-target/release/gateway}
LOADGEN=target/release/loadgen
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export RUST_BACKTRACE=0

for tool in taskset curl; do
    command -v "$tool" >/dev/null || { echo "bench.sh needs $tool" >&2; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "bench.sh pins the gateway and loadgen to CPUs 0 and 1: it needs 2 CPUs" >&2
    exit 1
fi
# One descriptor per connection on each side, plus some.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt 12000 ]; then
    echo "open-files limit $(ulimit -n) is below the 12,000 that 10,000 connections need" >&2
    exit 1
fi
if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
    echo "port $PORT is in use; set BENCH_PORT" >&2
    exit 1
fi

if [ -n "${BENCH_GATEWAY:-}" ]; then
    cargo build --release -p switchboard-loadgen
else
    cargo build --release -p switchboard-gateway -p switchboard-loadgen
fi
mkdir -p "$OUT"
echo "results in $OUT"

GW_PID=
stop_gateway() {
    if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
        kill -TERM "$GW_PID"
        # Draining 10,000 sessions takes a moment; the gateway's drain bound is 10 s.
        for _ in $(seq 150); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$GW_PID" 2>/dev/null || true
        wait "$GW_PID" 2>/dev/null || true
    fi
    GW_PID=
}
trap 'stop_gateway; stop_postgres' EXIT

# start_gateway [VAR=value...]: a fresh gateway on CPU 0, ready to serve.
start_gateway() {
    env SWITCHBOARD_LISTEN="127.0.0.1:$PORT" \
        SWITCHBOARD_JWT_SECRET="$SECRET" \
        SWITCHBOARD_RATE_PER_SEC=100000 \
        SWITCHBOARD_RATE_BURST=100000 \
        SWITCHBOARD_MAX_CONNECTIONS=20000 \
        SWITCHBOARD_LOG=warn \
        "$@" \
        taskset -c 0 "$GATEWAY" >>"$OUT/gateway.log" 2>&1 &
    GW_PID=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return 0
        kill -0 "$GW_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "gateway did not become ready; see $OUT/gateway.log" >&2
    exit 1
}

# The machine is shared: before a run, wait (up to BENCH_QUIET_WAIT seconds, default 120) until
# both CPUs are at least 90% idle over a second, so other work does not share the measurement.
cpu_busy_percent() {
    local a b
    a=$(grep -E '^cpu[01] ' /proc/stat)
    sleep 1
    b=$(grep -E '^cpu[01] ' /proc/stat)
    paste <(echo "$a") <(echo "$b") | awk '{
        busy = ($13-$2) + ($14-$3) + ($15-$4) + ($18-$7) + ($19-$8) + ($20-$9)
        total = busy + ($16-$5) + ($17-$6)
        pct = total > 0 ? 100 * busy / total : 0
        if (pct > max) max = pct
    } END { printf "%d", max }'
}
wait_quiet() {
    local deadline=$((SECONDS + ${BENCH_QUIET_WAIT:-120})) busy
    while busy=$(cpu_busy_percent) && [ "$busy" -gt 10 ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "  (machine still ${busy}% busy; measuring anyway)"
            return
        fi
    done
}

# PostgreSQL for the persist scenario: a private server in a temp dir, pinned to CPU 0 with the
# gateway, with the durability settings of a default install (fsync and synchronous commit on).
PG_BIN=/usr/lib/postgresql/15/bin
PG_PID= PG_DIR= PG_PORT=$((PORT + 1))
stop_postgres() {
    if [ -n "$PG_PID" ] && kill -0 "$PG_PID" 2>/dev/null; then
        kill -INT "$PG_PID" # fast shutdown
        for _ in $(seq 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
        kill -QUIT "$PG_PID" 2>/dev/null || true
        wait "$PG_PID" 2>/dev/null || true
    fi
    PG_PID=
    [ -n "$PG_DIR" ] && rm -rf "$PG_DIR"
    PG_DIR=
}
# as_pg CMD...: PostgreSQL refuses to run as root, so as root its tools run as nobody.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
    else
        "$@"
    fi
}
start_postgres() {
    PG_DIR=$(mktemp -d)
    [ "$(id -u)" -eq 0 ] && chown nobody:nogroup "$PG_DIR"
    as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U switchboard --auth=trust -E UTF8 \
        --locale=C.UTF-8 --no-instructions >"$OUT/postgres.log" 2>&1
    as_pg taskset -c 0 "$PG_BIN/postgres" -D "$PG_DIR/data" -p "$PG_PORT" -k "$PG_DIR" \
        -c listen_addresses=127.0.0.1 -c max_connections=200 >>"$OUT/postgres.log" 2>&1 &
    PG_PID=$!
    for _ in $(seq 100); do
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && return 0
        sleep 0.1
    done
    echo "PostgreSQL did not start; see $OUT/postgres.log" >&2
    exit 1
}
psql_bench() {
    PGOPTIONS='-c client_min_messages=warning' "$PG_BIN/psql" -X -q -t -A -h 127.0.0.1 -p "$PG_PORT" -U switchboard "$@"
}
# An empty database per run, so every run starts from the same table sizes.
fresh_database() {
    psql_bench -d postgres -c 'DROP DATABASE IF EXISTS bench' -c 'CREATE DATABASE bench'
}
# Every acknowledged message must be a row: compare the table with what loadgen counted.
check_rows() {
    local out=$1 rows acked
    rows=$(psql_bench -d bench -c 'SELECT count(*) FROM messages')
    acked=$(head -n 1 "$out" | grep -o '"acked_ok":[0-9]*' | cut -d: -f2)
    echo "rows in messages: $rows, acked: $acked" >>"$out"
    if [ "$rows" -lt "$acked" ]; then
        echo "  LOST: $acked messages acknowledged but only $rows rows stored" >&2
        exit 1
    fi
}

# run NAME "GATEWAY_ENV..." LOADGEN_ARGS...: RUNS runs, one JSON line each in $OUT/NAME.jsonl.
# A fan-out run that loadgen flags as noisy (other processes used the CPUs) is repeated, up to
# BENCH_RETRIES times (default 1); the repeat counts whether or not it is clean.
run() {
    local name=$1 gateway_env=$2 attempt out
    shift 2
    for i in $(seq "$RUNS"); do
        for attempt in $(seq 0 "${BENCH_RETRIES:-1}"); do
            wait_quiet
            ${RUN_BEFORE:-}
            # shellcheck disable=SC2086 # gateway_env is a list of VAR=value words
            start_gateway $gateway_env
            out=$OUT/$name.$i.txt
            taskset -c 1 "$LOADGEN" "$@" --url "ws://127.0.0.1:$PORT/ws" --secret "$SECRET" \
                --gateway-pid "$GW_PID" >"$out"
            stop_gateway
            ${RUN_AFTER:+$RUN_AFTER "$out"}
            echo "  $name run $i: $(sed -n 2,99p "$out" | tr '\n' ' ')"
            if ! head -n 1 "$out" | grep -q '"noisy":true' || [ "$attempt" -ge "${BENCH_RETRIES:-1}" ]; then
                break
            fi
            mv "$out" "$OUT/$name.$i.noisy$attempt.txt"
            echo "  $name run $i was noisy: once more"
        done
        head -n 1 "$out" >>"$OUT/$name.jsonl"
    done
}

# median NAME FIELD...: the medians of FIELDs over NAME's runs, space-separated.
median() {
    local name=$1
    shift
    "$LOADGEN" median "$OUT/$name.jsonl" "${@/#/--field=}"
}

percent() { awk -v x="$1" 'BEGIN { printf "%.0f%%", 100 * x }'; }

SUMMARY=$OUT/summary.md
{
    echo "# Benchmark medians of $RUNS runs"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); Linux $(uname -r); gateway $GATEWAY"
    echo
} >"$SUMMARY"

if [ -z "$ONLY" ] || [ "$ONLY" = idle ]; then
    echo "== 10,000 idle connections"
    {
        echo "| idle: 10,000 connections | gateway KiB/conn | handshakes/s | failed |"
        echo "|---|---|---|---|"
    } >>"$SUMMARY"
    for buffer in 4096 1024 512; do
        name=idle-rb$buffer
        run "$name" "SWITCHBOARD_READ_BUFFER_BYTES=$buffer" \
            idle --conns 10000 --hold-secs 5 --source-ips 4
        read -r kib hs failed < <(median "$name" gateway_kib_per_conn handshakes_per_sec failed)
        printf '| SWITCHBOARD_READ_BUFFER_BYTES=%s | %.2f | %.0f | %s |\n' \
            "$buffer" "$kib" "$hs" "$failed" >>"$SUMMARY"
    done
    echo >>"$SUMMARY"
fi

FANOUT_FIELDS=(deliveries_per_sec latency_ms.p50 latency_ms.p99 latency_ms.p999 latency_ms.max
    loss gateway_cpu_util gateway_us_per_delivery loadgen_cpu_util others_cpu_secs)
fanout_header() {
    {
        echo "| $1 | msgs/s | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | loss | gateway CPU | gateway µs/delivery | loadgen CPU | other CPU s |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    } >>"$SUMMARY"
}
fanout_row() {
    local label=$1 name=$2 rate=$3
    read -r dps p50 p99 p999 max loss gcpu us lcpu others < <(median "$name" "${FANOUT_FIELDS[@]}")
    printf '| %s | %s | %.0f | %.1f | %.1f | %.1f | %.1f | %.0f | %s | %.2f | %s | %.2f |\n' \
        "$label" "$rate" "$dps" "$p50" "$p99" "$p999" "$max" "$loss" \
        "$(percent "$gcpu")" "$us" "$(percent "$lcpu")" "$others" >>"$SUMMARY"
}

if [ -z "$ONLY" ] || [ "$ONLY" = room ]; then
    echo "== 1,000 receivers in one room"
    fanout_header "1 room, 1,000 receivers"
    for rate in $ROOM_RATES; do
        name=room-r$rate
        run "$name" "" fanout --conns 1000 --rooms 1 --rate "$rate" --secs "$SECS"
        fanout_row "1 room" "$name" "$rate"
    done
    echo >>"$SUMMARY"
fi

if [ -z "$ONLY" ] || [ "$ONLY" = rooms ]; then
    echo "== 10,000 receivers in 100 rooms"
    fanout_header "100 rooms, 10,000 receivers"
    for rate in $ROOMS_RATES; do
        name=rooms-r$rate
        run "$name" "" fanout --conns 10000 --rooms 100 --rate "$rate" --secs "$SECS" \
            --source-ips 4
        fanout_row "100 rooms" "$name" "$rate"
    done
    echo >>"$SUMMARY"
fi

if [ -z "$ONLY" ] || [ "$ONLY" = persist ]; then
    echo "== persisted messages: group commit vs one transaction per message"
    start_postgres
    {
        echo "| persist: $PERSIST_CONNS closed-loop senders, one room each | persisted msgs/s | ack p50 ms | ack p99 ms | ack p99.9 ms | ack errors | gateway CPU | gateway µs/msg | CPU 0 busy |"
        echo "|---|---|---|---|---|---|---|---|---|"
    } >>"$SUMMARY"
    RUN_BEFORE=fresh_database RUN_AFTER=check_rows
    for batch in 256 1; do
        name=persist-b$batch
        run "$name" "DATABASE_URL=postgres://switchboard@127.0.0.1:$PG_PORT/bench SWITCHBOARD_BATCH_MAX_MESSAGES=$batch" \
            persist --conns "$PERSIST_CONNS" --secs "$SECS"
        read -r mps p50 p99 p999 errors gcpu us cpu0 < <(median "$name" persisted_per_sec \
            ack_latency_ms.p50 ack_latency_ms.p99 ack_latency_ms.p999 ack_errors_total \
            gateway_cpu_util gateway_us_per_message cpu0_busy)
        printf '| SWITCHBOARD_BATCH_MAX_MESSAGES=%s | %.0f | %.2f | %.2f | %.2f | %.0f | %s | %.1f | %s |\n' \
            "$batch" "$mps" "$p50" "$p99" "$p999" "$errors" "$(percent "$gcpu")" "$us" \
            "$(percent "$cpu0")" >>"$SUMMARY"
    done
    RUN_BEFORE= RUN_AFTER=
    stop_postgres
    echo >>"$SUMMARY"
fi

echo
cat "$SUMMARY"

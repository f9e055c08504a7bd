#!/usr/bin/env bash
# Benchmarks the gateway with loadgen, next to Socket.IO doing the same work; results go to
# docs/benchmarks.md by hand.
#
# Every scenario runs BENCH_RUNS times (default 3) against fresh servers pinned to CPU 0 (every
# node of a cluster, and redis-server, share it), with loadgen pinned to CPU 1, and the medians
# are printed. Loopback only; every run is bounded in connections and time.
#
#   scripts/bench.sh                            # everything but scale and storm
#   BENCH_ONLY=idle scripts/bench.sh            # one scenario, or several: BENCH_ONLY="room peer-room"
#
# Scenarios: idle, room, rooms (the gateway alone: 10,000 idle connections; 1,000 receivers in
# one room; 10,000 receivers in 100 rooms), peer-idle, peer-room, peer-rooms (the same with the
# Socket.IO server of bench/peers/socketio; rows land in the same tables as the gateway's),
# cross (publisher on node A, receivers on node B, over Redis: two gateways vs two Socket.IO
# processes with the redis adapter), nodes (fan-out with receivers split over two nodes vs all
# on one, publisher on the first; both cluster modes, over Redis), persist (closed-loop senders
# against a gateway on PostgreSQL: group commit vs one transaction per message; PostgreSQL shares
# CPU 0 with the gateway), production (one room of 1,000 and then 100 rooms of 100: an embedded
# gateway, then one with REDIS_URL and DATABASE_URL, then two such with the receivers split,
# redis-server and PostgreSQL on CPU 0 with them; every acknowledged message must be a row),
# scale (BENCH_SCALE_CONNS connections, 100,000 by default, over a local
# cluster of BENCH_SCALE_NODES gateways and redis-server on CPU 0, from several loadgen processes
# on CPU 1: memory per connection and CPU at idle, then under a steady chat load; not part of
# "everything", run it with BENCH_ONLY=scale), storm (a reconnect storm: BENCH_STORM_CONNS users,
# each a member of a room with history, reconnect at once to one gateway with REDIS_URL and
# DATABASE_URL, redis-server and PostgreSQL on CPU 0 with it, and resume their room from the seq
# they hold, having missed a few messages; once per SWITCHBOARD_LISTEN_BACKLOG in
# BENCH_STORM_BACKLOGS, with the kernel's listen-queue overflow counter read around each run;
# ~10 min, not part of "everything" either: BENCH_ONLY=storm), api (one room of BENCH_ROOM_CONNS
# WebSocket receivers, the messages published through the server API from BENCH_API_PUBLISHERS
# keep-alive HTTP connections, next to the same rates sent with message:send on a WebSocket),
# sse (idle /sse streams next to idle WebSockets, then one room of BENCH_ROOM_CONNS receivers
# listening on /sse next to the same on WebSockets), webhooks (the persist load against a gateway
# on PostgreSQL with webhooks off, then on: message.created for every message to loadgen's
# webhook-sink on CPU 1; at full load, BENCH_PERSIST_CONNS senders, for the cost per message and
# the delivery rate, and at a light load, BENCH_WEBHOOK_LIGHT_CONNS senders, for the time from
# storing a message to its webhook's arrival; every stored message must arrive, the outbox must
# drain).
#
# Knobs (environment): BENCH_PORT (18080; a second node uses BENCH_PORT+1), BENCH_RUNS (3),
# BENCH_SECS (seconds of sending, 8), BENCH_ROOM_RATES (messages/s tried with 1,000 receivers in
# one room, "25 50 100 200 300 400 600"), BENCH_ROOMS_RATES (messages/s, all rooms together, for
# 10,000 receivers in 100 rooms, "500 1000 2000"), BENCH_CROSS_RATES ("50 200"),
# BENCH_NODES_RATES ("100 300"), connection counts BENCH_IDLE_CONNS (10000), BENCH_ROOM_CONNS
# (1000), BENCH_ROOMS_CONNS (10000), BENCH_CROSS_CONNS (100), BENCH_NODES_CONNS (1000),
# BENCH_PERSIST_CONNS (2000), BENCH_PRODUCTION_CONNS (1000), BENCH_PRODUCTION_RATES
# (messages/s, "100 400 1000 1280"), BENCH_PRODUCTION_ROOMS_CONNS (10000),
# BENCH_PRODUCTION_ROOMS_RATES ("200 500"), BENCH_PRODUCTION_MODES (the rows to run, "embedded
# 1node 2nodes rooms": rooms is the 100-room table), scale knobs BENCH_SCALE_CONNS (100000),
# BENCH_SCALE_NODES (6), BENCH_SCALE_CHAT_CONNS (10000 of the connections take part in the chat
# load), BENCH_SCALE_CHAT_RATE (messages/s over 100 rooms, 200), BENCH_SCALE_IDLE_SECS (20),
# BENCH_STORM_CONNS (10000), BENCH_STORM_BACKLOGS ("4096 128"), BENCH_STORM_ENV (more gateway
# settings for every storm run, e.g. "SWITCHBOARD_DB_TIMEOUT_MS=30000"; none by default),
# BENCH_QUIET_WAIT (120 s), BENCH_RETRIES (1), BENCH_GATEWAY (a gateway binary to measure
# instead of building this tree's), BENCH_API_RATES (messages/s, "200 500 1000 1280"),
# BENCH_API_PUBLISHERS (4), BENCH_SSE_RATES (messages/s into the room, "100 400 1000 1280"),
# BENCH_WEBHOOK_LIGHT_CONNS (20).
set -euo pipefail

cd "$(dirname "$0")/.."
PORT=${BENCH_PORT:-18080}
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_SECS:-8}
ROOM_RATES=${BENCH_ROOM_RATES:-"25 50 100 200 300 400 600"}
ROOMS_RATES=${BENCH_ROOMS_RATES:-"500 1000 2000"}
CROSS_RATES=${BENCH_CROSS_RATES:-"50 200"}
NODES_RATES=${BENCH_NODES_RATES:-"100 300"}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
ROOM_CONNS=${BENCH_ROOM_CONNS:-1000}
ROOMS_CONNS=${BENCH_ROOMS_CONNS:-10000}
CROSS_CONNS=${BENCH_CROSS_CONNS:-100}
NODES_CONNS=${BENCH_NODES_CONNS:-1000}
PERSIST_CONNS=${BENCH_PERSIST_CONNS:-2000}
SCALE_CONNS=${BENCH_SCALE_CONNS:-100000}
SCALE_NODES=${BENCH_SCALE_NODES:-6}
SCALE_CHAT_CONNS=${BENCH_SCALE_CHAT_CONNS:-10000}
SCALE_CHAT_RATE=${BENCH_SCALE_CHAT_RATE:-200}
SCALE_IDLE_SECS=${BENCH_SCALE_IDLE_SECS:-20}
STORM_CONNS=${BENCH_STORM_CONNS:-10000}
PRODUCTION_CONNS=${BENCH_PRODUCTION_CONNS:-1000}
PRODUCTION_RATES=${BENCH_PRODUCTION_RATES:-"100 400 1000 1280"}
PRODUCTION_ROOMS_CONNS=${BENCH_PRODUCTION_ROOMS_CONNS:-10000}
PRODUCTION_ROOMS_RATES=${BENCH_PRODUCTION_ROOMS_RATES:-"200 500"}
PRODUCTION_MODES=${BENCH_PRODUCTION_MODES:-"embedded 1node 2nodes rooms"}
STORM_BACKLOGS=${BENCH_STORM_BACKLOGS:-"4096 128"}
STORM_ENV=${BENCH_STORM_ENV:-}
API_RATES=${BENCH_API_RATES:-"200 500 1000 1280"}
API_PUBLISHERS=${BENCH_API_PUBLISHERS:-4}
SSE_RATES=${BENCH_SSE_RATES:-"100 400 1000 1280"}
WEBHOOK_LIGHT_CONNS=${BENCH_WEBHOOK_LIGHT_CONNS:-20}
ONLY=${BENCH_ONLY:-}
PEER_DIR=bench/peers/socketio
OUT=target/bench/$(date +%Y%m%d-%H%M%S)
GATEWAY=${BENCH_GATEWAY:-target/release/gateway}
LOADGEN=target/release/loadgen
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Every gateway serves the server API with this key (the api scenario publishes through it).
export SWITCHBOARD_API_KEY
SWITCHBOARD_API_KEY=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export RUST_BACKTRACE=0

# selected SCENARIO: whether BENCH_ONLY (space- or comma-separated) names it; all but scale and
# storm do when unset.
selected() {
    [ -z "$ONLY" ] && [ "$1" != scale ] && [ "$1" != storm ] && return 0
    case " ${ONLY//,/ } " in *" $1 "*) return 0 ;; esac
    return 1
}
for scenario in ${ONLY//,/ }; do
    case $scenario in
        idle | room | rooms | peer-idle | peer-room | peer-rooms | cross | nodes | persist | production | scale | storm | api | sse | webhooks) ;;
        *) echo "unknown scenario $scenario in BENCH_ONLY" >&2; exit 1 ;;
    esac
done
NEEDS_PEER=false NEEDS_REDIS=false
for scenario in peer-idle peer-room peer-rooms cross nodes; do
    selected "$scenario" && NEEDS_PEER=true
done
for scenario in cross nodes production scale storm; do
    selected "$scenario" && NEEDS_REDIS=true
done

tools=(taskset curl)
$NEEDS_PEER && tools+=(node npm)
$NEEDS_REDIS && tools+=(redis-server redis-cli)
selected storm && tools+=(nstat)
for tool in "${tools[@]}"; do
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
for port in "$PORT" "$((PORT + 1))"; do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
        echo "port $port is in use; set BENCH_PORT" >&2
        exit 1
    fi
done

if [ -n "${BENCH_GATEWAY:-}" ]; then
    cargo build --release -p switchboard-loadgen
else
    cargo build --release -p switchboard-gateway -p switchboard-loadgen
fi
if $NEEDS_PEER; then
    # Installed from npm at bench time (node_modules is git-ignored), exactly as locked.
    if [ ! -f "$PEER_DIR/node_modules/.package-lock.json" ] ||
        [ "$PEER_DIR/package-lock.json" -nt "$PEER_DIR/node_modules/.package-lock.json" ]; then
        (cd "$PEER_DIR" && npm ci --no-audit --no-fund)
    fi
    SOCKETIO_VERSION=$(node -p "require('./$PEER_DIR/node_modules/socket.io/package.json').version")
    SOCKETIO_LABEL="socket.io $SOCKETIO_VERSION"
fi
mkdir -p "$OUT"
echo "results in $OUT"

# Every process a run started (servers, redis-server), stopped in reverse order after the run
# and, whatever happens, when the script exits.
PIDS=()
stop_all() {
    local i pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            # Draining 10,000 sessions takes a moment; the gateway's drain bound is 10 s.
            for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap 'stop_all; stop_postgres' EXIT
trap 'exit 130' INT TERM

# wait_ready PID URL LOG: until URL answers, or fail if PID dies or 10 s pass.
wait_ready() {
    local pid=$1 url=$2 log=$3
    for _ in $(seq 100); do
        curl -sf "$url" >/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$url did not become ready; see $log" >&2
    exit 1
}

# start_gateway PORT [VAR=value...]: a fresh gateway on CPU 0, ready to serve; its pid is
# appended to PIDS.
start_gateway() {
    local port=$1
    shift
    env SWITCHBOARD_LISTEN="127.0.0.1:$port" \
        SWITCHBOARD_JWT_SECRET="$SECRET" \
        SWITCHBOARD_RATE_PER_SEC=100000 \
        SWITCHBOARD_RATE_BURST=100000 \
        SWITCHBOARD_MAX_CONNECTIONS=20000 \
        SWITCHBOARD_API_KEYS="$SWITCHBOARD_API_KEY" \
        SWITCHBOARD_API_RATE_PER_SEC=100000 \
        SWITCHBOARD_API_RATE_BURST=100000 \
        SWITCHBOARD_LOG=warn \
        "$@" \
        taskset -c 0 "$GATEWAY" >>"$OUT/gateway.log" 2>&1 &
    PIDS+=("$!")
    wait_ready "$!" "http://127.0.0.1:$port/readyz" "$OUT/gateway.log"
}

# start_socketio PORT [VAR=value...]: a fresh Socket.IO server (one node process) on CPU 0.
start_socketio() {
    local port=$1
    shift
    env PORT="$port" HOST=127.0.0.1 JWT_SECRET="$SECRET" NODE_ENV=production "$@" \
        taskset -c 0 node "$PEER_DIR/server.js" >>"$OUT/socketio.log" 2>&1 &
    PIDS+=("$!")
    wait_ready "$!" "http://127.0.0.1:$port/readyz" "$OUT/socketio.log"
}

# start_redis: a fresh, non-persistent redis-server on CPU 0 and a free port; sets REDIS_PORT
# and REDIS_PID.
start_redis() {
    REDIS_PORT=$((PORT + 100))
    while (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; do
        REDIS_PORT=$((REDIS_PORT + 1))
    done
    taskset -c 0 redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
        --appendonly no --daemonize no >>"$OUT/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for _ in $(seq 100); do
        [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && return 0
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "redis-server did not start; see $OUT/redis.log" >&2
    exit 1
}

# url_of SERVER PORT: the WebSocket URL loadgen connects to.
url_of() {
    case $1 in
        switchboard) echo "ws://127.0.0.1:$2/ws" ;;
        socketio) echo "ws://127.0.0.1:$2/socket.io/?EIO=4&transport=websocket" ;;
    esac
}

# start_node SERVER PORT [VAR=value...]: one node of either kind.
start_node() {
    local server=$1
    shift
    case $server in
        switchboard) start_gateway "$@" ;;
        socketio) start_socketio "$@" ;;
    esac
}

# start_servers SERVER TOPOLOGY "ENV...": starts what a run needs and sets TARGET, loadgen's
# arguments for it. Topologies:
#   single  one node on PORT, as in the gateway's own scenarios (embedded mode)
#   cluster one node on PORT with REDIS_URL (the 1-node baseline of `nodes`)
#   cross   nodes A (PORT) and B (PORT+1) over Redis; publishers on A, receivers on B
#   split   nodes A and B over Redis; publishers on A, receivers alternately on A and B
start_servers() {
    local server=$1 topology=$2 env=$3 a b
    TARGET=()
    [ "$server" = socketio ] && TARGET+=(--dialect socketio)
    a=$(url_of "$server" "$PORT")
    b=$(url_of "$server" "$((PORT + 1))")
    if [ "$topology" = single ]; then
        # shellcheck disable=SC2086 # env is a list of VAR=value words
        start_node "$server" "$PORT" $env
        TARGET+=(--url "$a" --gateway-pid "${PIDS[-1]}")
        return
    fi
    start_redis
    TARGET+=(--backend-pid "$REDIS_PID")
    # PostgreSQL too, when the nodes use it: its backends are the postmaster's children.
    if [[ "$env" == *DATABASE_URL=* ]]; then TARGET+=(--backend-pid "$PG_PID"); fi
    # shellcheck disable=SC2086
    start_node "$server" "$PORT" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
        SWITCHBOARD_NODE_ID=bench-a $env
    TARGET+=(--gateway-pid "${PIDS[-1]}")
    case $topology in
        cluster)
            TARGET+=(--url "$a")
            return
            ;;
        cross) TARGET+=(--publisher-url "$a" --url "$b") ;;
        split) TARGET+=(--publisher-url "$a" --url "$a" --url "$b") ;;
    esac
    # shellcheck disable=SC2086
    start_node "$server" "$((PORT + 1))" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
        SWITCHBOARD_NODE_ID=bench-b $env
    TARGET+=(--gateway-pid "${PIDS[-1]}")
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

# PostgreSQL for the persist scenario, on CPU 0 with the gateway: see scripts/lib/postgres.sh.
PG_PORT=$((PORT + 50)) PG_LOG=$OUT/postgres.log
# shellcheck source=lib/postgres.sh
source scripts/lib/postgres.sh
psql_bench() { psql_pg -t -A "$@"; }
# An empty database per run, so every run starts from the same table sizes.
fresh_database() {
    psql_bench -d postgres -c 'DROP DATABASE IF EXISTS bench' -c 'CREATE DATABASE bench'
}
# Every acknowledged message must be a row: compare the table with what loadgen counted (the
# report's FIELD, acked_ok by default: persist's name for it; fanout's is acks_ok).
check_rows() {
    local out=$1 field=${2:-acked_ok} rows acked
    rows=$(psql_bench -d bench -c 'SELECT count(*) FROM messages')
    acked=$(head -n 1 "$out" | grep -o "\"$field\":[0-9]*" | cut -d: -f2)
    echo "rows in messages: $rows, acked: $acked" >>"$out"
    if [ "$rows" -lt "$acked" ]; then
        echo "  LOST: $acked messages acknowledged but only $rows rows stored" >&2
        exit 1
    fi
}

# run NAME SERVER TOPOLOGY "SERVER_ENV..." LOADGEN_ARGS...: RUNS runs against fresh servers
# (see start_servers), one JSON line each in $OUT/NAME.jsonl. A fan-out run that loadgen flags
# as noisy (other processes used the CPUs) is repeated, up to BENCH_RETRIES times (default 1);
# the repeat counts whether or not it is clean.
run() {
    local name=$1 server=$2 topology=$3 server_env=$4 attempt out
    shift 4
    for i in $(seq "$RUNS"); do
        for attempt in $(seq 0 "${BENCH_RETRIES:-1}"); do
            wait_quiet
            ${RUN_BEFORE:-}
            start_servers "$server" "$topology" "$server_env"
            out=$OUT/$name.$i.txt
            taskset -c 1 "$LOADGEN" "$@" "${TARGET[@]}" --secret "$SECRET" >"$out"
            stop_all
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
    if $NEEDS_PEER; then
        echo
        echo "Peer: $SOCKETIO_LABEL on node $(node --version) ($PEER_DIR)"
    fi
    if $NEEDS_REDIS; then
        echo "Redis: $(redis-server --version | cut -d' ' -f3)"
    fi
    echo
} >"$SUMMARY"

# fmt N: N with thousands separators (10000 -> 10,000), as in the table headers.
fmt() { echo "$1" | sed -e ':a' -e 's/\B[0-9]\{3\}\>/,&/' -e 'ta'; }

# idle_row SERVER LABEL NAME: a row of an idle table.
idle_row() {
    local server=$1 label=$2 name=$3 kib hs failed
    read -r kib hs failed < <(median "$name" gateway_kib_per_conn handshakes_per_sec failed)
    printf '| %s | %s | %.2f | %.0f | %s |\n' "$server" "$label" "$kib" "$hs" "$failed" \
        >>"$SUMMARY"
}

if selected idle || selected peer-idle; then
    echo "== $(fmt "$IDLE_CONNS") idle connections"
    {
        echo "| server | idle: $(fmt "$IDLE_CONNS") connections | server KiB/conn | handshakes/s | failed |"
        echo "|---|---|---|---|---|"
    } >>"$SUMMARY"
    if selected idle; then
        for buffer in 4096 1024 512; do
            name=idle-rb$buffer
            run "$name" switchboard single "SWITCHBOARD_READ_BUFFER_BYTES=$buffer" \
                idle --conns "$IDLE_CONNS" --hold-secs 5 --source-ips 16
            idle_row switchboard "SWITCHBOARD_READ_BUFFER_BYTES=$buffer" "$name"
        done
    fi
    if selected peer-idle; then
        name=peer-idle
        run "$name" socketio single "" \
            idle --conns "$IDLE_CONNS" --hold-secs 5 --source-ips 16
        idle_row "$SOCKETIO_LABEL" "node $(node --version)" "$name"
    fi
    echo >>"$SUMMARY"
fi

FANOUT_FIELDS=(deliveries_per_sec latency_ms.p50 latency_ms.p99 latency_ms.p999 latency_ms.max
    loss gateway_cpu_util gateway_us_per_delivery loadgen_cpu_util others_cpu_secs)
# fanout_header TITLE [redis|backends]: a table of fan-out rows; with "redis", a column for its
# CPU, with "backends" one for redis-server's and PostgreSQL's together.
fanout_header() {
    local extra="" line=""
    case ${2:-} in
        redis) extra=" redis CPU |" line="---|" ;;
        backends) extra=" Redis + PostgreSQL CPU |" line="---|" ;;
    esac
    {
        echo "| server | $1 | msgs/s | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | loss | server CPU | server µs/delivery |$extra loadgen CPU | other CPU s |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|$line---|---|"
    } >>"$SUMMARY"
}
# fanout_row SERVER LABEL NAME RATE [redis|backends|-]: "-" for a row without backends in a
# table with a backend column.
fanout_row() {
    local server=$1 label=$2 name=$3 rate=$4 extra="" dps p50 p99 p999 max loss gcpu us lcpu others
    read -r dps p50 p99 p999 max loss gcpu us lcpu others < <(median "$name" "${FANOUT_FIELDS[@]}")
    if [ "${5:-}" = - ]; then
        extra=" – |"
    elif [ -n "${5:-}" ]; then
        # Fraction of a core: median CPU seconds over the median window.
        extra=" $(percent "$(awk -v c="$(median "$name" backend_cpu_secs)" \
            -v w="$(median "$name" window_secs)" 'BEGIN { print c / w }')") |"
    fi
    printf '| %s | %s | %s | %.0f | %.1f | %.1f | %.1f | %.1f | %.0f | %s | %.2f |%s %s | %.2f |\n' \
        "$server" "$label" "$rate" "$dps" "$p50" "$p99" "$p999" "$max" "$loss" \
        "$(percent "$gcpu")" "$us" "$extra" "$(percent "$lcpu")" "$others" >>"$SUMMARY"
}
server_label() {
    case $1 in
        switchboard) echo switchboard ;;
        socketio) echo "$SOCKETIO_LABEL" ;;
    esac
}

# Rows of the gateway and of Socket.IO at the same rate sit next to each other.
if selected room || selected peer-room; then
    echo "== $(fmt "$ROOM_CONNS") receivers in one room"
    fanout_header "1 room, $(fmt "$ROOM_CONNS") receivers"
    for rate in $ROOM_RATES; do
        if selected room; then
            name=room-r$rate
            run "$name" switchboard single "" \
                fanout --conns "$ROOM_CONNS" --rooms 1 --rate "$rate" --secs "$SECS"
            fanout_row switchboard "1 room" "$name" "$rate"
        fi
        if selected peer-room; then
            name=peer-room-r$rate
            run "$name" socketio single "" \
                fanout --conns "$ROOM_CONNS" --rooms 1 --rate "$rate" --secs "$SECS"
            fanout_row "$SOCKETIO_LABEL" "1 room" "$name" "$rate"
        fi
    done
    echo >>"$SUMMARY"
fi

if selected rooms || selected peer-rooms; then
    echo "== $(fmt "$ROOMS_CONNS") receivers in 100 rooms"
    fanout_header "100 rooms, $(fmt "$ROOMS_CONNS") receivers"
    for rate in $ROOMS_RATES; do
        if selected rooms; then
            name=rooms-r$rate
            run "$name" switchboard single "" fanout --conns "$ROOMS_CONNS" --rooms 100 \
                --rate "$rate" --secs "$SECS" --source-ips 4
            fanout_row switchboard "100 rooms" "$name" "$rate"
        fi
        if selected peer-rooms; then
            name=peer-rooms-r$rate
            run "$name" socketio single "" fanout --conns "$ROOMS_CONNS" --rooms 100 \
                --rate "$rate" --secs "$SECS" --source-ips 4
            fanout_row "$SOCKETIO_LABEL" "100 rooms" "$name" "$rate"
        fi
    done
    echo >>"$SUMMARY"
fi

# The server API as the way in: one room of ROOM_CONNS WebSocket receivers, the same rates
# published through POST /api/v1/rooms/{room}/messages (API_PUBLISHERS keep-alive connections,
# one request in flight on each, as a backend's pool sends) and with message:send on one
# WebSocket; embedded gateway.
if selected api; then
    echo "== server API: $(fmt "$ROOM_CONNS") receivers in one room, published through the API vs a WebSocket"
    fanout_header "1 room, $(fmt "$ROOM_CONNS") receivers"
    for rate in $API_RATES; do
        name=api-ws-r$rate
        run "$name" switchboard single "" \
            fanout --conns "$ROOM_CONNS" --rooms 1 --rate "$rate" --secs "$SECS"
        fanout_row switchboard "message:send on 1 WebSocket" "$name" "$rate"
        name=api-http-r$rate
        run "$name" switchboard single "" \
            fanout --conns "$ROOM_CONNS" --rooms 1 --rate "$rate" --secs "$SECS" \
            --publish api --publishers "$API_PUBLISHERS"
        fanout_row switchboard "POST /api/v1 on $API_PUBLISHERS HTTP connections" "$name" "$rate"
        read -r ack50 ack99 < <(median "$name" ack_latency_ms.p50 ack_latency_ms.p99)
        echo "  api at $rate msgs/s: publish answer p50 $ack50 ms, p99 $ack99 ms"
        printf '| ↳ API answer (201, stored) | | | | %.2f | %.2f | | | | | | | |\n' "$ack50" "$ack99" \
            >>"$SUMMARY"
    done
    echo >>"$SUMMARY"
fi

# Server-Sent Events next to WebSockets, embedded gateway: memory of idle streams (no room,
# the user's own events) and of idle WebSocket sessions; then one room of ROOM_CONNS receivers
# on /sse and on /ws at the same rates (publisher on a WebSocket).
if selected sse; then
    echo "== SSE vs WebSocket: $(fmt "$IDLE_CONNS") idle, then $(fmt "$ROOM_CONNS") receivers in one room"
    {
        echo "| transport | idle: $(fmt "$IDLE_CONNS") connections | server KiB/conn | connects/s | failed |"
        echo "|---|---|---|---|---|"
    } >>"$SUMMARY"
    for transport in ws sse; do
        name=sse-idle-$transport
        run "$name" switchboard single "" \
            idle --conns "$IDLE_CONNS" --hold-secs 5 --source-ips 16 --transport "$transport"
        idle_row "$transport" "/$transport" "$name"
    done
    echo >>"$SUMMARY"
    fanout_header "1 room, $(fmt "$ROOM_CONNS") receivers"
    for rate in $SSE_RATES; do
        for transport in ws sse; do
            name=sse-room-$transport-r$rate
            run "$name" switchboard single "" \
                fanout --conns "$ROOM_CONNS" --rooms 1 --rate "$rate" --secs "$SECS" \
                --receive "$transport"
            fanout_row switchboard "receivers on /$transport" "$name" "$rate"
        done
    done
    echo >>"$SUMMARY"
fi

# Cross-node latency: one room, the publisher on node A, every receiver on node B, the two
# nodes (and redis-server) on CPU 0. Server CPU is both nodes together.
if selected cross; then
    echo "== cross-node: $(fmt "$CROSS_CONNS") receivers on node B, publisher on node A"
    fanout_header "cross-node, $(fmt "$CROSS_CONNS") receivers on B, publisher on A" redis
    for rate in $CROSS_RATES; do
        for server in switchboard socketio; do
            name=cross-$server-r$rate
            run "$name" "$server" cross "" \
                fanout --conns "$CROSS_CONNS" --rooms 1 --rate "$rate" --secs "$SECS"
            fanout_row "$(server_label "$server")" "2 nodes over Redis" "$name" "$rate" redis
        done
    done
    echo >>"$SUMMARY"
fi

# Fan-out with the receivers split over two nodes vs all on one node, both over Redis and in
# the same run; the publisher is on the first node. Both nodes share CPU 0 on a 2-CPU machine,
# so this is the cost of the cluster path, not scale-out.
if selected nodes; then
    echo "== nodes: $(fmt "$NODES_CONNS") receivers on 1 node vs split over 2"
    fanout_header "1 room, $(fmt "$NODES_CONNS") receivers" redis
    for rate in $NODES_RATES; do
        for server in switchboard socketio; do
            name=nodes1-$server-r$rate
            run "$name" "$server" cluster "" \
                fanout --conns "$NODES_CONNS" --rooms 1 --rate "$rate" --secs "$SECS"
            fanout_row "$(server_label "$server")" "1 node (Redis)" "$name" "$rate" redis
            name=nodes2-$server-r$rate
            run "$name" "$server" split "" \
                fanout --conns "$NODES_CONNS" --rooms 1 --rate "$rate" --secs "$SECS"
            fanout_row "$(server_label "$server")" "2 nodes, receivers split" "$name" "$rate" redis
        done
    done
    echo >>"$SUMMARY"
fi

if selected persist; then
    echo "== persisted messages: group commit vs one transaction per message"
    start_postgres
    {
        echo "| persist: $PERSIST_CONNS closed-loop senders, one room each | persisted msgs/s | ack p50 ms | ack p99 ms | ack p99.9 ms | ack errors | gateway CPU | gateway µs/msg | CPU 0 busy |"
        echo "|---|---|---|---|---|---|---|---|---|"
    } >>"$SUMMARY"
    RUN_BEFORE=fresh_database RUN_AFTER=check_rows
    for batch in 256 1; do
        name=persist-b$batch
        run "$name" switchboard single "DATABASE_URL=postgres://switchboard@127.0.0.1:$PG_PORT/bench SWITCHBOARD_BATCH_MAX_MESSAGES=$batch" \
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

# Production mode: one room of PRODUCTION_CONNS receivers at the same rates on an embedded
# gateway, on one gateway with REDIS_URL and DATABASE_URL, and on two such gateways with the
# receivers split (publisher on the first); redis-server and PostgreSQL share CPU 0 with the
# gateways. Every acknowledged message of a production run must be a row.
check_fanout_rows() { check_rows "$1" acks_ok; }
if selected production; then
    echo "== production mode: $(fmt "$PRODUCTION_CONNS") receivers in one room, embedded vs Redis + PostgreSQL"
    start_postgres
    fanout_header "1 room, $(fmt "$PRODUCTION_CONNS") receivers" backends
    database="DATABASE_URL=postgres://switchboard@127.0.0.1:$PG_PORT/bench"
    mode() { case " $PRODUCTION_MODES " in *" $1 "*) return 0 ;; esac; return 1; }
    for rate in $PRODUCTION_RATES; do
        if mode embedded; then
            name=production-embedded-r$rate
            run "$name" switchboard single "" \
                fanout --conns "$PRODUCTION_CONNS" --rooms 1 --rate "$rate" --secs "$SECS"
            fanout_row switchboard "embedded" "$name" "$rate" -
        fi
        RUN_BEFORE=fresh_database RUN_AFTER=check_fanout_rows
        if mode 1node; then
            name=production-1node-r$rate
            run "$name" switchboard cluster "$database" \
                fanout --conns "$PRODUCTION_CONNS" --rooms 1 --rate "$rate" --secs "$SECS"
            fanout_row switchboard "1 node, Redis + PostgreSQL" "$name" "$rate" backends
        fi
        if mode 2nodes; then
            name=production-2nodes-r$rate
            run "$name" switchboard split "$database" \
                fanout --conns "$PRODUCTION_CONNS" --rooms 1 --rate "$rate" --secs "$SECS"
            fanout_row switchboard "2 nodes, receivers split" "$name" "$rate" backends
        fi
        RUN_BEFORE= RUN_AFTER=
    done
    echo >>"$SUMMARY"
    if mode rooms; then
        fanout_header "100 rooms, $(fmt "$PRODUCTION_ROOMS_CONNS") receivers" backends
        for rate in $PRODUCTION_ROOMS_RATES; do
            name=production-rooms-embedded-r$rate
            run "$name" switchboard single "" fanout --conns "$PRODUCTION_ROOMS_CONNS" \
                --rooms 100 --rate "$rate" --secs "$SECS" --source-ips 4
            fanout_row switchboard "embedded" "$name" "$rate" -
            RUN_BEFORE=fresh_database RUN_AFTER=check_fanout_rows
            name=production-rooms-1node-r$rate
            run "$name" switchboard cluster "$database" fanout --conns "$PRODUCTION_ROOMS_CONNS" \
                --rooms 100 --rate "$rate" --secs "$SECS" --source-ips 4
            fanout_row switchboard "1 node, Redis + PostgreSQL" "$name" "$rate" backends
            RUN_BEFORE= RUN_AFTER=
        done
    fi
    stop_postgres
    echo >>"$SUMMARY"
fi

# A reconnect storm: STORM_CONNS users (distinct, so the per-user limit of 8 never applies), ten
# to a room, join their rooms and the first of each room sends 20 messages; all disconnect, then
# reconnect at once and resume with room:join sinceSeq, having missed the last 5 (loadgen storm,
# see crates/loadgen/src/storm.rs). One gateway with REDIS_URL and DATABASE_URL (a fresh database
# per run), redis-server and PostgreSQL on CPU 0; SWITCHBOARD_MAX_CONNECTIONS is 20,000
# (start_gateway), above the 10,000 default. loadgen reads the kernel's ListenOverflows around
# the storm itself; nstat's view of the whole run (setup included) goes into each run's .txt.
nstat_listen() {
    nstat -asz TcpExtListenOverflows TcpExtListenDrops |
        awk '$1 == "TcpExtListenOverflows" { o = $2 } $1 == "TcpExtListenDrops" { d = $2 }
            END { print o + 0, d + 0 }'
}
storm_before() {
    fresh_database
    read -r STORM_OVERFLOWS STORM_DROPS < <(nstat_listen)
}
storm_after() {
    local overflows drops
    read -r overflows drops < <(nstat_listen)
    echo "nstat over the whole run, setup included: TcpExtListenOverflows +$((overflows - STORM_OVERFLOWS)), TcpExtListenDrops +$((drops - STORM_DROPS))" >>"$1"
}
if selected storm; then
    echo "== reconnect storm: $(fmt "$STORM_CONNS") users resuming at once"
    start_postgres
    {
        echo "| storm: $(fmt "$STORM_CONNS") users resume at once (Redis + PostgreSQL) | resumed | failed (all runs) | first connect to last resume, s | handshakes/s | resumes/s | time to resumed p50 ms | p99 ms | TCP connect p99 ms | listen-queue overflows | CPU 0 busy |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|"
    } >>"$SUMMARY"
    RUN_BEFORE=storm_before RUN_AFTER=storm_after
    for backlog in $STORM_BACKLOGS; do
        name=storm-b$backlog
        run "$name" switchboard cluster \
            "DATABASE_URL=postgres://switchboard@127.0.0.1:$PG_PORT/bench SWITCHBOARD_LISTEN_BACKLOG=$backlog $STORM_ENV" \
            storm --conns "$STORM_CONNS" --source-ips 16
        read -r resumed secs hs rs p50 p99 connect overflows cpu0 < <(median "$name" resumed \
            all_resumed_secs handshakes_per_sec resumes_per_sec resumed_ms.p50 resumed_ms.p99 \
            connect_ms.p99 listen_overflows cpu0_busy)
        failed=$(grep -o '"failed":[0-9]*' "$OUT/$name.jsonl" | awk -F: '{ s += $2 } END { print s + 0 }')
        printf '| SWITCHBOARD_LISTEN_BACKLOG=%s | %.0f | %s | %.2f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %s |\n' \
            "$backlog${STORM_ENV:+ $STORM_ENV}" "$resumed" "$failed" "$secs" "$hs" "$rs" "$p50" \
            "$p99" "$connect" "$overflows" "$(percent "$cpu0")" >>"$SUMMARY"
    done
    RUN_BEFORE= RUN_AFTER=
    stop_postgres
    echo >>"$SUMMARY"
fi

# 100,000 connections on this box: one process may hold at most ~20,000 open files, so the
# connections are spread over SCALE_NODES gateways (ports PORT.. on CPU 0, with redis-server, so
# presence and fan-out are cluster-wide) and over loadgen processes of at most 15,000 connections
# each (CPU 1), from 127.0.0.1-16 so no source address runs out of ephemeral ports. Idle
# connections never read, so they cannot answer pings: the heartbeat timeout is raised for this
# scenario only. Memory is the gateways' summed RSS before the first connection and with all of
# them open; idle CPU is their summed CPU time over SCALE_IDLE_SECS; then SCALE_CHAT_CONNS of
# the connections are a chat load (loadgen fanout over 100 rooms, publishers on the first node,
# receivers on every node) while the idle ones stay open.
SCALE_PER_LOADGEN=15000
# proc_sum FIELD PID...: the sum over PIDs of a /proc/PID/status FIELD (kB), or of CPU ticks ("cpu").
proc_sum() {
    local field=$1 pid total=0 value
    shift
    for pid in "$@"; do
        if [ "$field" = cpu ]; then
            value=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
        else
            value=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status")
        fi
        total=$((total + value))
    done
    echo "$total"
}
# metric_sum NAME PORT...: the sum of an unlabelled metric over the nodes' /metrics.
metric_sum() {
    local name=$1 port total=0 value
    shift
    for port in "$@"; do
        value=$(curl -sf "http://127.0.0.1:$port/metrics" | awk -v n="$name" '$1 == n { print int($2) }')
        total=$((total + ${value:-0}))
    done
    echo "$total"
}
scale_run() {
    local i=$1 n ports=() gw_pids=() urls=() pid_args=() idle=$((SCALE_CONNS - SCALE_CHAT_CONNS))
    local procs k count loaders=() rss_before ticks_before ticks_after rss_idle open deadline
    local out=$OUT/scale.$i.txt hz pid
    hz=$(getconf CLK_TCK)
    wait_quiet
    start_redis
    for ((n = 0; n < SCALE_NODES; n++)); do
        start_gateway "$((PORT + n))" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
            SWITCHBOARD_NODE_ID="scale-$n" SWITCHBOARD_MAX_CONNECTIONS=19000 \
            SWITCHBOARD_HEARTBEAT_TIMEOUT_MS=600000
        ports+=("$((PORT + n))")
        gw_pids+=("${PIDS[-1]}")
        urls+=(--url "ws://127.0.0.1:$((PORT + n))/ws")
        pid_args+=(--gateway-pid "${PIDS[-1]}")
    done
    rss_before=$(proc_sum VmRSS "${gw_pids[@]}")
    procs=$(((idle + SCALE_PER_LOADGEN - 1) / SCALE_PER_LOADGEN))
    for ((k = 0; k < procs; k++)); do
        count=$((idle / procs + (k < idle % procs ? 1 : 0)))
        taskset -c 1 "$LOADGEN" idle --conns "$count" --user-prefix "scale$k-" --hold-secs 3600 \
            --connect-timeout-secs 300 --source-ips 16 --concurrency 100 "${urls[@]}" \
            --secret "$SECRET" >"$OUT/scale.$i.idle$k.txt" 2>&1 &
        loaders+=("$!")
        PIDS+=("$!")
    done
    deadline=$((SECONDS + 300))
    while open=$(metric_sum switchboard_connections "${ports[@]}") && [ "$open" -lt "$idle" ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "  scale: only $open of $idle idle connections opened; see $OUT/scale.$i.idle*.txt" >&2
            break
        fi
        for pid in "${loaders[@]}"; do
            kill -0 "$pid" 2>/dev/null || { echo "  scale: a loadgen ended early: $(cat "$OUT"/scale.$i.idle*.txt)" >&2; exit 1; }
        done
        sleep 1
    done
    sleep 5 # let the last handshakes' transient allocations settle
    ticks_before=$(proc_sum cpu "${gw_pids[@]}")
    sleep "$SCALE_IDLE_SECS"
    ticks_after=$(proc_sum cpu "${gw_pids[@]}")
    rss_idle=$(proc_sum VmRSS "${gw_pids[@]}")
    {
        printf '{"scenario":"scale-idle","nodes":%d,"open":%d,"gateway_rss_before_kib":%d,"gateway_rss_idle_kib":%d,"gateway_kib_per_conn":%s,"redis_rss_kib":%d,"idle_cpu_util":%s,"idle_secs":%d}\n' \
            "$SCALE_NODES" "$open" "$rss_before" "$rss_idle" \
            "$(awk -v a="$rss_idle" -v b="$rss_before" -v n="$open" 'BEGIN { printf "%.3f", (a - b) / n }')" \
            "$(proc_sum VmRSS "$REDIS_PID")" \
            "$(awk -v t=$((ticks_after - ticks_before)) -v hz="$hz" -v s="$SCALE_IDLE_SECS" 'BEGIN { printf "%.4f", t / hz / s }')" \
            "$SCALE_IDLE_SECS"
    } >>"$OUT/scale-idle.jsonl"
    echo "  scale run $i idle: $(tail -n 1 "$OUT/scale-idle.jsonl")"
    taskset -c 1 "$LOADGEN" fanout --conns "$SCALE_CHAT_CONNS" --rooms 100 \
        --rate "$SCALE_CHAT_RATE" --secs "$SECS" --source-ips 16 --concurrency 100 \
        --publisher-url "ws://127.0.0.1:$PORT/ws" "${urls[@]}" "${pid_args[@]}" \
        --backend-pid "$REDIS_PID" --secret "$SECRET" >"$out"
    head -n 1 "$out" >>"$OUT/scale-chat.jsonl"
    echo "  scale run $i chat: $(sed -n 2,99p "$out" | tr '\n' ' ')"
    stop_all
}
if selected scale; then
    echo "== scale: $(fmt "$SCALE_CONNS") connections over $SCALE_NODES gateways"
    if [ $((SCALE_CONNS / SCALE_NODES)) -gt 19000 ] || [ $((SCALE_CONNS / SCALE_NODES)) -gt $(($(ulimit -n) - 500)) ]; then
        echo "scale: $((SCALE_CONNS / SCALE_NODES)) connections per gateway is above the open-files limit; add nodes" >&2
        exit 1
    fi
    for i in $(seq "$RUNS"); do scale_run "$i"; done
    read -r open kib idle_cpu redis_kib < <("$LOADGEN" median "$OUT/scale-idle.jsonl" \
        --field=open --field=gateway_kib_per_conn --field=idle_cpu_util --field=redis_rss_kib)
    read -r dps p50 p99 loss gcpu bcpu win < <(median scale-chat deliveries_per_sec latency_ms.p50 \
        latency_ms.p99 loss gateway_cpu_util backend_cpu_secs window_secs)
    {
        echo "| scale: $SCALE_NODES gateways, redis | idle connections | gateway KiB/conn | redis RSS MiB | gateways' CPU idle | chat: receivers + 100 publishers, msgs/s | deliveries/s | p50 ms | p99 ms | loss | gateways' CPU | redis CPU |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
        printf '| median of %s | %s | %.2f | %.0f | %s | %s, %s | %.0f | %.1f | %.1f | %.0f | %s | %s |\n' \
            "$RUNS" "$(fmt "${open%.*}")" "$kib" "$(awk -v k="$redis_kib" 'BEGIN { print k / 1024 }')" \
            "$(percent "$idle_cpu")" "$(fmt "$SCALE_CHAT_CONNS")" "$SCALE_CHAT_RATE" "$dps" "$p50" \
            "$p99" "$loss" "$(percent "$gcpu")" "$(percent "$(awk -v c="$bcpu" -v w="$win" 'BEGIN { print c / w }')")"
        echo
    } >>"$SUMMARY"
fi

# Webhooks on or off under the persist load (see the header). Cost is CPU 0's busy time (gateway
# and PostgreSQL) from the gateway's start until the last webhook arrived, per stored message.
cpu0_ticks() { awk '/^cpu0 / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
webhook_run() {
    local name=$1 conns=$2 mode=$3 i=$4 env out sink_out sink_pid="" t0 t1 rows left
    env="DATABASE_URL=postgres://switchboard@127.0.0.1:$PG_PORT/bench"
    if [ "$mode" = on ]; then
        env+=" SWITCHBOARD_WEBHOOK_URL=http://127.0.0.1:$SINK_PORT/hooks"
        env+=" SWITCHBOARD_SIGNING_SECRETS=$WEBHOOK_SECRET SWITCHBOARD_WEBHOOK_EVENTS=message.created"
    fi
    wait_quiet
    fresh_database
    sink_out=$OUT/$name.sink.$i.txt
    if [ "$mode" = on ]; then
        taskset -c 1 "$LOADGEN" webhook-sink --listen "127.0.0.1:$SINK_PORT" --idle-secs 5 \
            --max-secs 600 >"$sink_out" &
        sink_pid=$!
    fi
    t0=$(cpu0_ticks)
    start_servers switchboard single "$env"
    out=$OUT/$name.$i.txt
    taskset -c 1 "$LOADGEN" persist --conns "$conns" --secs "$SECS" "${TARGET[@]}" \
        --secret "$SECRET" >"$out"
    [ -n "$sink_pid" ] && wait "$sink_pid"
    t1=$(cpu0_ticks)
    rows=$(psql_bench -d bench -c 'SELECT count(*) FROM messages')
    stop_all
    check_rows "$out"
    if [ "$mode" = on ]; then
        left=$(psql_bench -d bench -c 'SELECT count(*) FROM switchboard_webhooks')
        if ! grep -q "\"distinct\":$rows," "$sink_out" || [ "$left" != 0 ]; then
            echo "  LOST: $rows messages stored, sink: $(head -n 1 "$sink_out"), $left webhooks left" >&2
            exit 1
        fi
        head -n 1 "$sink_out" >>"$OUT/$name.sink.jsonl"
    fi
    # CPU 0 µs per stored message, into the run's JSON line for the medians.
    head -n 1 "$out" | sed "s/}\$/,\"cpu0_us_per_stored\":$(awk -v t=$((t1 - t0)) -v r="$rows" \
        -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz * 1e6 / r }')}/" >>"$OUT/$name.jsonl"
    echo "  $name run $i: $(sed -n 2,99p "$out" | tr '\n' ' ') $(sed -n 2,99p "$sink_out" 2>/dev/null | tr '\n' ' ')"
}
if selected webhooks; then
    echo "== webhooks: message.created for every persisted message, off vs on"
    start_postgres
    SINK_PORT=$((PORT + 60))
    WEBHOOK_SECRET=whsec_$(head -c 32 /dev/urandom | base64)
    {
        echo "| webhooks: closed-loop senders, one room each, PostgreSQL | webhooks | persisted msgs/s | ack p99 ms | CPU 0 µs per stored message | webhooks/s | stored → received p50 ms | p99 ms | max ms |"
        echo "|---|---|---|---|---|---|---|---|---|"
    } >>"$SUMMARY"
    for load in "$PERSIST_CONNS" "$WEBHOOK_LIGHT_CONNS"; do
        for mode in off on; do
            name=webhooks-c$load-$mode
            for i in $(seq "$RUNS"); do webhook_run "$name" "$load" "$mode" "$i"; done
            read -r mps p99 us < <(median "$name" persisted_per_sec ack_latency_ms.p99 cpu0_us_per_stored)
            if [ "$mode" = on ]; then
                read -r wps l50 l99 lmax < <("$LOADGEN" median "$OUT/$name.sink.jsonl" \
                    --field=deliveries_per_sec --field=latency_ms.p50 --field=latency_ms.p99 \
                    --field=latency_ms.max)
                wps=$(printf '%.0f' "$wps") l50=$(printf '%.0f' "$l50") l99=$(printf '%.0f' "$l99") lmax=$(printf '%.0f' "$lmax")
            else
                wps=— l50=— l99=— lmax=—
            fi
            printf '| %s senders | %s | %.0f | %.2f | %.1f | %s | %s | %s | %s |\n' "$load" "$mode" \
                "$mps" "$p99" "$us" "$wps" "$l50" "$l99" "$lmax" >>"$SUMMARY"
        done
    done
    stop_postgres
    echo >>"$SUMMARY"
fi

# Latency against offered load, one line per server, next to the summary.
python3 scripts/plot.py "$OUT"
echo
cat "$SUMMARY"

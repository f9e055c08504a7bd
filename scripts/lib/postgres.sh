# A private PostgreSQL for the benchmarks (sourced by scripts/bench.sh and scripts/pg-ceiling.sh):
# initdb into a temp dir, the server pinned to CPU 0 (the gateway's core), with the durability
# settings of a default install (fsync and synchronous commit on).
#
# The caller sets PG_PORT and PG_LOG, calls start_postgres, and stop_postgres on exit; then
# psql_pg runs psql against it as the `switchboard` superuser.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_PID= PG_WRAPPER= PG_DIR=

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
    if [ "$(id -u)" -eq 0 ]; then chown nobody:nogroup "$PG_DIR"; fi
    as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U switchboard --auth=trust -E UTF8 \
        --locale=C.UTF-8 --no-instructions >"$PG_LOG" 2>&1
    as_pg taskset -c 0 "$PG_BIN/postgres" -D "$PG_DIR/data" -p "$PG_PORT" -k "$PG_DIR" \
        -c listen_addresses=127.0.0.1 -c max_connections=200 >>"$PG_LOG" 2>&1 &
    # $! is the shell running as_pg, which would not pass a signal on: stop the postmaster itself,
    # whose pid heads postmaster.pid.
    PG_WRAPPER=$!
    for _ in $(seq 100); do
        if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
            PG_PID=$(head -n 1 "$PG_DIR/data/postmaster.pid")
            return 0
        fi
        sleep 0.1
    done
    echo "PostgreSQL did not start; see $PG_LOG" >&2
    exit 1
}

stop_postgres() {
    if [ -n "$PG_PID" ] && kill -0 "$PG_PID" 2>/dev/null; then
        kill -INT "$PG_PID" # fast shutdown
        for _ in $(seq 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
        kill -QUIT "$PG_PID" 2>/dev/null || true
    fi
    if [ -n "$PG_WRAPPER" ]; then wait "$PG_WRAPPER" 2>/dev/null || true; fi
    PG_PID= PG_WRAPPER=
    if [ -n "$PG_DIR" ]; then rm -rf "$PG_DIR"; fi
    PG_DIR=
}

psql_pg() {
    PGOPTIONS='-c client_min_messages=warning' "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$PG_PORT" -U switchboard "$@"
}

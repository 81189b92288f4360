#!/usr/bin/env bash
# PgBouncer in front of the dev PostgreSQL of scripts/dev-services.sh, for the pooler tests:
#   scripts/pgbouncer.sh start   # safe to run again: rewrites the configuration and reloads it
#   scripts/pgbouncer.sh stop
# Listens on 127.0.0.1:${ADWORKER_PGBOUNCER_PORT:-6432} and runs as the postgres user. Every database is pooled
# in transaction mode (pool_mode = transaction), except the alias <DATABASE_NAME>_session, the
# same database in session mode (for adworker migrate, which refuses a transaction pool).
# DATABASE_NAME (default adworker_pgbouncer) is created if missing, with synchronous_commit = off
# as its default, so that the tests through the pooler show the worker's own setting holds.
# Configuration, log and pid file under /var/tmp/adworker-dev/pgbouncer.
set -euo pipefail

PORT=${ADWORKER_PGBOUNCER_PORT:-6432}
HOST=127.0.0.1
DATABASE_HOST=${DATABASE_HOST:-127.0.0.1}
DATABASE_PORT=${DATABASE_PORT:-5432}
DATABASE_NAME=${DATABASE_NAME:-adworker_pgbouncer}
DATABASE_USER=${DATABASE_USER:-adworker}
DATABASE_PASSWORD=${DATABASE_PASSWORD:-adworker}
DATA_DIR=${ADWORKER_DEV_DATA_DIR:-/var/tmp/adworker-dev}/pgbouncer
RUN_AS=postgres
PIDFILE=$DATA_DIR/pgbouncer.pid

log() { printf '[pgbouncer] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install() {
    if ! command -v pgbouncer >/dev/null; then
        log "installing pgbouncer"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq pgbouncer >/dev/null
    fi
    # Debian's packaged service listens on 6432 too; this script's instance replaces it.
    if command -v systemctl >/dev/null && systemctl is-active --quiet pgbouncer 2>/dev/null; then
        log "stopping and disabling Debian's pgbouncer service"
        as_root systemctl disable --now pgbouncer
    elif [ -f /var/run/postgresql/pgbouncer.pid ] && kill -0 "$(cat /var/run/postgresql/pgbouncer.pid)" 2>/dev/null; then
        log "stopping Debian's pgbouncer service"
        as_root /etc/init.d/pgbouncer stop >/dev/null
    fi
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

write_configuration() {
    as_root mkdir -p "$DATA_DIR"
    # The plain password, not the server's SCRAM secret: dev-services.sh sets the password again on
    # every run, which gives the secret a new salt, and a copied secret would then stop logging in.
    printf '"%s" "%s"\n' "$DATABASE_USER" "$DATABASE_PASSWORD" | as_root tee "$DATA_DIR/userlist.txt" >/dev/null
    as_root tee "$DATA_DIR/pgbouncer.ini" >/dev/null <<INI
[databases]
${DATABASE_NAME}_session = host=$DATABASE_HOST port=$DATABASE_PORT dbname=$DATABASE_NAME pool_mode=session
* = host=$DATABASE_HOST port=$DATABASE_PORT

[pgbouncer]
listen_addr = $HOST
listen_port = $PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $DATA_DIR/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 200
server_reset_query = DISCARD ALL
logfile = $DATA_DIR/pgbouncer.log
pidfile = $PIDFILE
INI
    as_root chown -R "$RUN_AS" "$DATA_DIR"
    as_root chmod 600 "$DATA_DIR/userlist.txt"
}

database() {
    DATABASE_NAME=$DATABASE_NAME "$(dirname "$0")/dev-services.sh"
    as_root su postgres -c "psql -q -p $DATABASE_PORT -v ON_ERROR_STOP=1 -v db=$DATABASE_NAME" <<'SQL'
SELECT format('ALTER DATABASE %I SET synchronous_commit = off', :'db') \gexec
SQL
}

start() {
    install
    database
    write_configuration
    if running; then
        as_root kill -HUP "$(cat "$PIDFILE")"
    else
        # -u: PgBouncer refuses to run as root; it drops to $RUN_AS after opening its files.
        as_root pgbouncer -d -u "$RUN_AS" "$DATA_DIR/pgbouncer.ini"
    fi
    for _ in $(seq 100); do
        pg_isready -q -h "$HOST" -p "$PORT" -d "$DATABASE_NAME" && break
        sleep 0.1
    done
    pg_isready -q -h "$HOST" -p "$PORT" -d "$DATABASE_NAME" || { log "pgbouncer is not ready; see $DATA_DIR/pgbouncer.log"; exit 1; }
    log "ready on $HOST:$PORT: database $DATABASE_NAME in transaction mode, ${DATABASE_NAME}_session in session mode"
}

stop() {
    if running; then
        as_root kill "$(cat "$PIDFILE")"
        for _ in $(seq 100); do running || break; sleep 0.1; done
    fi
    log "stopped"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac

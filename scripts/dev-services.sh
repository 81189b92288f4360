#!/usr/bin/env bash
# Installs what adworker needs on Debian and starts a local Redis and PostgreSQL on loopback.
# Safe to run again: every step checks before it acts. PostgreSQL runs through Debian's
# pg_ctlcluster, which drops to the postgres user, because the server refuses to run as root.
set -euo pipefail

REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
# The same Redis over TLS too, with the certificates of scripts/tls-certs.sh (the TLS tests and
# fault scenarios reach it there; plaintext clients are unaffected).
REDIS_TLS_PORT=${ADWORKER_DEV_REDIS_TLS_PORT:-6380}
DATABASE_HOST=${DATABASE_HOST:-127.0.0.1}
DATABASE_PORT=${DATABASE_PORT:-5432}
DATABASE_NAME=${DATABASE_NAME:-adworker}
DATABASE_USER=${DATABASE_USER:-adworker}
DATABASE_PASSWORD=${DATABASE_PASSWORD:-adworker}
DATA_DIR=${ADWORKER_DEV_DATA_DIR:-/var/tmp/adworker-dev}

log() { printf '[dev-services] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_packages() {
    # libnss-wrapper: the tests give a name several addresses without touching /etc/hosts.
    local wanted=(redis-server redis-tools libhiredis-dev libpq-dev libssl-dev openssl postgresql postgresql-client libnss-wrapper)
    local missing=()
    for package in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

redis_answers() { REDISCLI_AUTH=${REDIS_PASSWORD:-} redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null; }

# A restarted Redis answers PING with "LOADING" while it replays its append-only file, and refuses
# every command meanwhile: ready means PONG (or NOAUTH from a Redis that wants a password this
# script was not given: it is up, and adworker brings its own). redis-cli exits 0 on error
# replies, so compare the text.
wait_for_redis() {
    for _ in $(seq 600); do
        case "$(redis_answers)" in PONG | NOAUTH*) return 0 ;; esac
        sleep 0.1
    done
    log "redis did not become ready on $REDIS_HOST:$REDIS_PORT within 60 s; see $DATA_DIR/redis/redis.log"
    exit 1
}

start_redis() {
    if [ -n "$(redis_answers)" ]; then
        wait_for_redis
        log "redis already answers on $REDIS_HOST:$REDIS_PORT"
        return
    fi
    mkdir -p "$DATA_DIR/redis"
    local certificates
    certificates=$("$(dirname "$0")/tls-certs.sh")
    # Streams are the queue: never evict them, and keep an append-only file so a restart loses nothing.
    # No RDB snapshots on top: here they would only fork a second copy of Redis every minute under
    # load, on a two-core machine where the benchmarks run.
    redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" \
        --dir "$DATA_DIR/redis" --appendonly yes --save "" --maxmemory-policy noeviction \
        --logfile "$DATA_DIR/redis/redis.log" --pidfile "$DATA_DIR/redis/redis.pid" \
        --tls-port "$REDIS_TLS_PORT" --tls-cert-file "$certificates/server.crt" --tls-key-file "$certificates/server.key" \
        --tls-ca-cert-file "$certificates/ca.crt" --tls-auth-clients optional
    wait_for_redis
    log "redis started on $REDIS_HOST:$REDIS_PORT, and over TLS on $REDIS_TLS_PORT (CA: $certificates/ca.crt)"
}

start_postgres() {
    local version
    version=$(pg_lsclusters -h | awk '$2 == "main" { print $1; exit }')
    if [ -z "$version" ]; then
        version=$(ls /usr/lib/postgresql | sort -n | tail -1)
        log "creating PostgreSQL $version cluster 'main'"
        as_root pg_createcluster "$version" main --port "$DATABASE_PORT" >/dev/null
    fi
    if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $4 }' | grep -q online; then
        log "starting PostgreSQL $version/main"
        as_root pg_ctlcluster "$version" main start
    fi
    for _ in $(seq 100); do
        pg_isready -q -h "$DATABASE_HOST" -p "$DATABASE_PORT" && break
        sleep 0.1
    done
    pg_isready -q -h "$DATABASE_HOST" -p "$DATABASE_PORT" || { log "PostgreSQL is not ready"; exit 1; }
    # Role and database for the worker; the password goes over the SQL protocol, never on a command line.
    as_root su postgres -c "psql -q -p $DATABASE_PORT -v ON_ERROR_STOP=1 -v user=$DATABASE_USER -v password=$DATABASE_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'user', :'password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'user', :'password') \gexec
SQL
    as_root su postgres -c "psql -q -p $DATABASE_PORT -v ON_ERROR_STOP=1 -v db=$DATABASE_NAME -v user=$DATABASE_USER" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
    log "PostgreSQL ready on $DATABASE_HOST:$DATABASE_PORT, database $DATABASE_NAME, user $DATABASE_USER"
}

install_packages
start_redis
start_postgres

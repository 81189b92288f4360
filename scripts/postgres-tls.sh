#!/usr/bin/env bash
# A second PostgreSQL cluster, "tls" on 127.0.0.1:5433, that speaks only TLS, with the
# certificates of scripts/tls-certs.sh: database adworker_tls for a password over TLS, and
# adworker_mtls where the client certificate (CN adworker) is the login. Safe to run again.
# Usage: scripts/postgres-tls.sh [start|stop]
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${ADWORKER_POSTGRES_TLS_PORT:-5433}
DATABASE_USER=${DATABASE_USER:-adworker}
DATABASE_PASSWORD=${DATABASE_PASSWORD:-adworker}
log() { printf '[postgres-tls] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { as_root su postgres -c "$*"; }

version=$(ls /usr/lib/postgresql | sort -n | tail -1)
config=/etc/postgresql/$version/tls

if [ "${1:-start}" = stop ]; then
    pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "tls" { print $4 }' | grep -q online && as_root pg_ctlcluster "$version" tls stop
    exit 0
fi

certificates=$(scripts/tls-certs.sh)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "tls"' | grep -q .; then
    log "creating PostgreSQL $version cluster 'tls' on port $PORT"
    as_root pg_createcluster "$version" tls --port "$PORT" >/dev/null
fi
# The server reads its key only if the postgres user owns it and no one else may read it.
data=/var/lib/postgresql/$version/tls
as_root install -o postgres -g postgres -m 600 "$certificates/server.key" "$data/server.key"
as_root install -o postgres -g postgres -m 644 "$certificates/server.crt" "$data/server.crt"
as_root install -o postgres -g postgres -m 644 "$certificates/ca.crt" "$data/ca.crt"
as_root tee "$config/conf.d/adworker-tls.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
ssl = on
ssl_cert_file = '$data/server.crt'
ssl_key_file = '$data/server.key'
ssl_ca_file = '$data/ca.crt'
fsync = off
CONF
# TLS only: no host line without ssl, so a plaintext client is refused by pg_hba.
as_root tee "$config/pg_hba.conf" >/dev/null <<HBA
local   all             postgres                                peer
hostssl adworker_mtls   all             127.0.0.1/32            cert
hostssl all             all             127.0.0.1/32            scram-sha-256
HBA
if pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "tls" { print $4 }' | grep -q online; then
    as_root pg_ctlcluster "$version" tls reload
else
    as_root pg_ctlcluster "$version" tls start
fi
for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$PORT" && break; sleep 0.1; done
as_postgres "psql -q -p $PORT -v ON_ERROR_STOP=1 -v user=$DATABASE_USER -v password=$DATABASE_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'user', :'password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'user', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', d, :'user') FROM unnest(ARRAY['adworker_tls', 'adworker_mtls']) d
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d) \gexec
SQL
log "PostgreSQL over TLS only on 127.0.0.1:$PORT: adworker_tls (password), adworker_mtls (client certificate CN=$DATABASE_USER)"

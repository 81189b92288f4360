#!/usr/bin/env bash
# A Redis primary with one replica and three sentinels on loopback, for Sentinel mode:
#   scripts/redis-sentinel.sh start   # safe to run again; brings back a node that was killed
#   scripts/redis-sentinel.sh stop
#   scripts/redis-sentinel.sh nodes   # prints REDIS_SENTINELS for these ports
# Data nodes on ${REDIS_SENTINEL_DATA_PORT:-6400} and the next port (AOF on), sentinels on
# ${REDIS_SENTINEL_PORT:-26400} and the next two; the master is named adworker. A primary that
# does not answer for 1 s is down (quorum 2) and its replica is promoted; a node that comes back
# is made a replica of the current primary by the sentinels.
set -euo pipefail

DATA_PORT=${REDIS_SENTINEL_DATA_PORT:-6400}
SENTINEL_PORT=${REDIS_SENTINEL_PORT:-26400}
MASTER=adworker
HOST=127.0.0.1
DATA_DIR=${ADWORKER_DEV_DATA_DIR:-/var/tmp/adworker-dev}/redis-sentinel
DATA_PORTS="$DATA_PORT $((DATA_PORT + 1))"
SENTINEL_PORTS="$SENTINEL_PORT $((SENTINEL_PORT + 1)) $((SENTINEL_PORT + 2))"

log() { printf '[redis-sentinel] %s\n' "$*" >&2; }

answers() { redis-cli -h "$HOST" -p "$1" ping 2>/dev/null | grep -q PONG; }

wait_until() {
    local what=$1; shift
    for _ in $(seq 300); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    log "$what did not happen within 30 s; logs in $DATA_DIR"
    exit 1
}

start_data_node() {
    local port=$1 dir="$DATA_DIR/$1" replica_of=()
    mkdir -p "$dir"
    if answers "$port"; then return; fi
    # Only a first start wires the replica by hand; later the sentinels say who replicates whom.
    [ "$port" != "$DATA_PORT" ] && [ ! -f "$DATA_DIR/sentinel-$SENTINEL_PORT.conf" ] && replica_of=(--replicaof "$HOST" "$DATA_PORT")
    redis-server --daemonize yes --bind "$HOST" --port "$port" --dir "$dir" --appendonly yes --save "" \
        --maxmemory-policy noeviction --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" ${replica_of[@]+"${replica_of[@]}"}
}

start_sentinel() {
    local port=$1 config="$DATA_DIR/sentinel-$1.conf"
    if answers "$port"; then return; fi
    if [ ! -f "$config" ]; then
        # The sentinel rewrites this file as it learns (replicas, other sentinels, failovers).
        cat >"$config" <<CONF
port $port
bind $HOST
dir $DATA_DIR
sentinel monitor $MASTER $HOST $DATA_PORT 2
sentinel down-after-milliseconds $MASTER 1000
sentinel failover-timeout $MASTER 5000
sentinel parallel-syncs $MASTER 1
CONF
    fi
    redis-server "$config" --sentinel --daemonize yes --logfile "$DATA_DIR/sentinel-$port.log" --pidfile "$DATA_DIR/sentinel-$port.pid"
}

primary() { redis-cli -h "$HOST" -p "$SENTINEL_PORT" sentinel get-master-addr-by-name "$MASTER" 2>/dev/null | sed -n 2p; }

# Every data node up, the sentinels' primary answering as one, with a replica linked to it.
settled() {
    local port
    port=$(primary)
    [ -n "$port" ] || return 1
    redis-cli -h "$HOST" -p "$port" info replication 2>/dev/null | grep -q '^role:master' || return 1
    redis-cli -h "$HOST" -p "$port" info replication 2>/dev/null | grep -q '^slave0:.*state=online' || return 1
    for port in $SENTINEL_PORTS; do
        [ "$(redis-cli -h "$HOST" -p "$port" sentinel master "$MASTER" 2>/dev/null | grep -A1 -x 'num-other-sentinels' | tail -1)" = 2 ] || return 1
    done
}

nodes() { for port in $SENTINEL_PORTS; do printf '%s:%s\n' "$HOST" "$port"; done | paste -sd, -; }

start() {
    mkdir -p "$DATA_DIR"
    for port in $DATA_PORTS; do start_data_node "$port"; done
    for port in $DATA_PORTS; do wait_until "redis on $port answering" answers "$port"; done
    for port in $SENTINEL_PORTS; do start_sentinel "$port"; done
    wait_until "the sentinels to agree on a primary with a linked replica" settled
    log "ready: REDIS_SENTINELS=$(nodes) REDIS_SENTINEL_MASTER=$MASTER (primary on port $(primary))"
}

stop() {
    local pidfile
    for pidfile in "$DATA_DIR"/sentinel-*.pid "$DATA_DIR"/*/redis.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    for port in $DATA_PORTS $SENTINEL_PORTS; do
        for _ in $(seq 100); do answers "$port" || break; sleep 0.1; done
    done
    log "stopped"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
nodes) nodes ;;
*)
    echo "usage: $0 start|stop|nodes" >&2
    exit 2
    ;;
esac

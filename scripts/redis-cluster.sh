#!/usr/bin/env bash
# A Redis Cluster on loopback for tests and trials: three primaries and three replicas.
#   scripts/redis-cluster.sh start   # six redis-server --cluster-enabled yes, then --cluster create
#   scripts/redis-cluster.sh stop
#   scripts/redis-cluster.sh status
#   scripts/redis-cluster.sh nodes   # prints REDIS_CLUSTER_NODES for these ports
# Ports ${REDIS_CLUSTER_BASE_PORT:-30001} and the next five; each node's cluster bus is its port +
# 10000. A short node timeout (2 s) makes a replica take over a killed primary within seconds.
# REDIS_CLUSTER_REPLICAS=0 makes three primaries alone (three ports), e.g. to measure what the
# replicas cost on a shared machine: REDIS_CLUSTER_BASE_PORT=30011 REDIS_CLUSTER_REPLICAS=0 ... start
# REDIS_CLUSTER_TLS=1 makes a cluster that speaks TLS (tls-cluster yes: the bus and replication
# too, and slot maps give TLS clients the TLS ports) with the certificates of scripts/tls-certs.sh:
# each node's TLS port is its port + 100 (the cluster bus then TLS port + 10000), and the plaintext
# port stays for redis-cli; `nodes` prints the TLS ports. The tests' TLS cluster is
#   REDIS_CLUSTER_TLS=1 REDIS_CLUSTER_BASE_PORT=21001 scripts/redis-cluster.sh start
# Same settings as the single dev Redis: append-only file, no snapshots, never evict.
set -euo pipefail

BASE_PORT=${REDIS_CLUSTER_BASE_PORT:-30001}
HOST=127.0.0.1
DATA_DIR=${ADWORKER_DEV_DATA_DIR:-/var/tmp/adworker-dev}/redis-cluster
NODE_TIMEOUT=${REDIS_CLUSTER_NODE_TIMEOUT:-2000}
REPLICAS=${REDIS_CLUSTER_REPLICAS:-1}
NODE_COUNT=$((3 * (1 + REPLICAS)))
PORTS=$(seq "$BASE_PORT" $((BASE_PORT + NODE_COUNT - 1)))
TLS=${REDIS_CLUSTER_TLS:-0}
TLS_OFFSET=100
tls_arguments=()
cli_tls=()
if [ "$TLS" = 1 ]; then
    certificates=$("$(dirname "$0")/tls-certs.sh")
    # Nodes present the server certificate to each other on the bus (it allows client use too);
    # clients need none.
    tls_arguments=(--tls-cert-file "$certificates/server.crt" --tls-key-file "$certificates/server.key"
        --tls-ca-cert-file "$certificates/ca.crt" --tls-auth-clients no --tls-cluster yes --tls-replication yes)
    cli_tls=(--tls --cacert "$certificates/ca.crt")
fi

log() { printf '[redis-cluster] %s\n' "$*" >&2; }

client_port() { if [ "$TLS" = 1 ]; then echo $(($1 + TLS_OFFSET)); else echo "$1"; fi; }

nodes() { for port in $PORTS; do printf '%s:%s\n' "$HOST" "$(client_port "$port")"; done | paste -sd, -; }

answers() { redis-cli -h "$HOST" -p "$1" ping 2>/dev/null | grep -q PONG; }

state_ok() { redis-cli -h "$HOST" -p "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }

start_node() {
    local port=$1 dir="$DATA_DIR/$1" tls_port=()
    [ "$TLS" = 1 ] && tls_port=(--tls-port "$(client_port "$port")")
    mkdir -p "$dir"
    if answers "$port"; then return; fi
    redis-server --daemonize yes --bind "$HOST" --port "$port" --dir "$dir" \
        --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout "$NODE_TIMEOUT" \
        --appendonly yes --save "" --maxmemory-policy noeviction \
        --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" ${tls_arguments[@]+"${tls_arguments[@]}"} ${tls_port[@]+"${tls_port[@]}"}
}

wait_until() {
    local what=$1; shift
    for _ in $(seq 300); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    log "$what did not happen within 30 s; logs in $DATA_DIR/<port>/redis.log"
    exit 1
}

all_ok() { for port in $PORTS; do state_ok "$port" || return 1; done; }

# Three replicas, each with its link to its primary up: a kill -9 of a primary then fails over.
replicas_linked() {
    local linked=0
    for port in $PORTS; do
        if redis-cli -h "$HOST" -p "$port" info replication 2>/dev/null | grep -q '^master_link_status:up'; then
            linked=$((linked + 1))
        fi
    done
    [ "$linked" -eq $((3 * REPLICAS)) ]
}

start() {
    for port in $PORTS; do start_node "$port"; done
    for port in $PORTS; do wait_until "redis on $port answering" answers "$port"; done
    local known
    known=$(redis-cli -h "$HOST" -p "$BASE_PORT" cluster info | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')
    if [ "${known:-1}" -lt "$NODE_COUNT" ] || [ "${FRESH:-0}" = 1 ]; then
        # Fresh nodes (or a half-made cluster from an interrupted run): start clean.
        for port in $PORTS; do
            redis-cli -h "$HOST" -p "$port" flushall >/dev/null 2>&1 || true
            redis-cli -h "$HOST" -p "$port" cluster reset hard >/dev/null
        done
        # shellcheck disable=SC2046
        # Through the client ports: a node told to meet PORT looks for its bus at PORT + 10000,
        # and with tls-cluster yes the bus follows the TLS port.
        redis-cli ${cli_tls[@]+"${cli_tls[@]}"} --cluster create $(for port in $PORTS; do printf '%s:%s ' "$HOST" "$(client_port "$port")"; done) \
            --cluster-replicas "$REPLICAS" --cluster-yes >"$DATA_DIR/create-$BASE_PORT.log"
    fi
    wait_until "cluster_state:ok on every node" all_ok
    wait_until "every replica linked to its primary" replicas_linked
    log "cluster ready: REDIS_CLUSTER_NODES=$(nodes)"
}

stop() {
    for port in $PORTS; do
        local pidfile="$DATA_DIR/$port/redis.pid"
        if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            kill "$(cat "$pidfile")"
        fi
    done
    for port in $PORTS; do
        for _ in $(seq 100); do answers "$port" || break; sleep 0.1; done
    done
    log "stopped"
}

case "${1:-}" in
start) start ;;
# A new cluster on the running nodes, every key gone: for tests that need slot ownership and
# config epochs untouched by earlier failovers.
recreate) FRESH=1 start ;;
stop) stop ;;
status) redis-cli -h "$HOST" -p "$BASE_PORT" cluster shards ;;
nodes) nodes ;;
*)
    echo "usage: $0 start|stop|status|nodes" >&2
    exit 2
    ;;
esac

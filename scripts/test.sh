#!/usr/bin/env bash
# The test command: starts local Redis and PostgreSQL (scripts/dev-services.sh), builds once in
# debug, runs the unit and integration tests against those servers, then drives the adworker
# binary end to end (migrate twice, produce, drain, count rows, bench on a small workload).
# Integration tests never skip: a missing server is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n[test] %s\n' "$*" >&2; }

# The CLI smoke run gets its own database so it never mixes with development data.
export DATABASE_HOST=${DATABASE_HOST:-127.0.0.1} DATABASE_PORT=${DATABASE_PORT:-5432}
export DATABASE_USER=${DATABASE_USER:-adworker} DATABASE_PASSWORD=${DATABASE_PASSWORD:-adworker}
export REDIS_HOST=${REDIS_HOST:-127.0.0.1} REDIS_PORT=${REDIS_PORT:-6379}
smoke_database=${ADWORKER_SMOKE_DATABASE:-adworker_smoke}

log "starting Redis and PostgreSQL"
scripts/dev-services.sh
DATABASE_NAME=$smoke_database scripts/dev-services.sh
DATABASE_NAME=adworker_faults scripts/dev-services.sh
log "starting a TLS-only PostgreSQL cluster on 127.0.0.1:5433 (certificates from scripts/tls-certs.sh)"
scripts/postgres-tls.sh start
log "starting a Redis Cluster on loopback (three primaries, three replicas)"
scripts/redis-cluster.sh start
log "starting a Redis Cluster over TLS (tls-cluster yes) on loopback: ports 21001-21006, TLS 21101-21106"
REDIS_CLUSTER_TLS=1 REDIS_CLUSTER_BASE_PORT=21001 scripts/redis-cluster.sh start

log "starting Redis under Sentinel on loopback: a primary and a replica on 6400-6401, sentinels on 26400-26402"
scripts/redis-sentinel.sh start

log "starting PgBouncer on 127.0.0.1:6432 (transaction mode; adworker_pgbouncer_session in session mode) before database adworker_pgbouncer"
scripts/pgbouncer.sh start

log "checking the layout: file and function sizes, Redis commands only in AdWorkerRedis"
python3 scripts/check-layout.py

log "building (debug; every import must be a declared dependency)"
swift build --build-tests --explicit-target-dependency-import-check error

log "unit and integration tests"
# A crash prints only the crashed thread's backtrace, so it is still there when only the end of
# the output is kept (CI's report does).
SWIFT_BACKTRACE=enable=yes,threads=crashed,registers=none,images=none timeout 1200 swift test --skip-build

log "fuzzing the wire decoder and row encoder (libFuzzer, 30 s)"
scripts/fuzz.sh 30 2>&1 | tail -3

log "checking that .env.template lists every variable the code reads"
scripts/check-env-template.sh

log "checking that the README's producer snippet is the one the tests run"
scripts/check-readme-snippet.sh

log "CLI smoke run against database $smoke_database"
adworker=$(swift build --show-bin-path)/adworker
psql_smoke() { PGPASSWORD=$DATABASE_PASSWORD psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$DATABASE_HOST" -p "$DATABASE_PORT" -U "$DATABASE_USER" -d "$smoke_database" "$@"; }
psql_smoke -c 'SET client_min_messages = warning; DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;'
prefix="smoke-$$:"
empty_env=$(mktemp)
cleanup() { rm -f "$empty_env"; redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" --scan --pattern "${prefix}*" | xargs -r redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" del >/dev/null; }
trap cleanup EXIT
export DATABASE_NAME=$smoke_database ADWORKER_STREAM_PREFIX=$prefix
"$adworker" migrate --env-file "$empty_env"
"$adworker" migrate --env-file "$empty_env" | tee /tmp/adworker-smoke-migrate.txt
# What migrate must say about TimescaleDB depends on what this server has: CI's has no package;
# a machine with the extension's files but without preloading it gets told what to change.
if [ "$(psql_smoke -c "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")" = 0 ]; then
    expected_timescale='TimescaleDB: not installed on this server, tables stay plain'
else
    expected_timescale='TimescaleDB: installed on this server but not preloaded, so tables stay plain: add timescaledb to shared_preload_libraries'
fi
grep -qF "$expected_timescale" /tmp/adworker-smoke-migrate.txt || { log "migrate does not say: $expected_timescale"; exit 1; }
# Citus likewise: nothing said on a server without it (CI's), the change to make where its files
# are not preloaded (a machine that built it by hand).
if [ "$(psql_smoke -c "SELECT count(*) FROM pg_available_extensions WHERE name = 'citus'")" = 0 ]; then
    ! grep -q '^Citus' /tmp/adworker-smoke-migrate.txt || { log "migrate speaks of Citus on a server without it"; exit 1; }
else
    grep -qF "Citus: installed on this server but not preloaded, so tables stay on this node: put citus first in shared_preload_libraries" /tmp/adworker-smoke-migrate.txt \
        || { log "migrate does not say how to preload Citus"; exit 1; }
fi
"$adworker" produce --env-file "$empty_env" --stream requests --count 2000
redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" xadd "${prefix}inference" '*' v 1 model smoke request_id by-hand ts 1700000000000 prediction 0.5 >/dev/null
redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" xadd "${prefix}inference" '*' v 1 model smoke request_id poison ts 1700000000000 prediction '{' >/dev/null
timeout 120 "$adworker" run --env-file "$empty_env" --drain --streams training,inference
training=$(psql_smoke -c 'SELECT count(*) FROM training_data')
inference=$(psql_smoke -c 'SELECT count(*) FROM inference_results')
dead=$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" xlen "${prefix}inference:dead")
pending=$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" xpending "${prefix}inference" adworker | head -1)
echo "training rows $training, inference rows $inference, dead letters $dead, pending $pending"
[ "$training" = 1000 ] && [ "$inference" = 1001 ] && [ "$dead" = 1 ] && [ "$pending" = 0 ] || { log "smoke run counts are wrong"; exit 1; }

log "stats for one model match SQL written by hand; JSON logs parse"
model=$(psql_smoke -c 'SELECT model_name FROM inference_results GROUP BY 1 ORDER BY count(*) DESC LIMIT 1')
expected=$(psql_smoke -c "SELECT (SELECT count(*) FROM training_data WHERE model_name = '$model') || ' ' || count(*) || ' ' || round(avg(is_anomaly::int) FILTER (WHERE is_anomaly IS NOT NULL), 6) || ' ' || percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms) FROM inference_results WHERE model_name = '$model'")
"$adworker" stats --env-file "$empty_env" --model "$model" --hours 1 --json > /tmp/adworker-smoke-stats.json
python3 - "$expected" /tmp/adworker-smoke-stats.json <<'PY'
import json, sys
training, inference, anomaly, p95 = sys.argv[1].split()
stats = json.load(open(sys.argv[2]))
assert stats["trainingRecords"] == int(training) and stats["inferenceRecords"] == int(inference), (stats, sys.argv[1])
assert abs(stats["anomalyRate"] - float(anomaly)) < 1e-6, (stats, anomaly)
# From a histogram, so that Citus counts where the rows are: percentile_cont's value exactly.
assert stats["p95ProcessingMilliseconds"] == float(p95), (stats, p95)
print("stats", stats)
PY
"$adworker" migrate --env-file "$empty_env" --log-format json --log-level debug 2>&1 >/dev/null | python3 -c '
import json, sys
lines = [json.loads(line) for line in sys.stdin if line.strip()]
assert lines and all({"time", "level", "message", "label"} <= line.keys() for line in lines), lines
print(len(lines), "JSON log lines")'

log "status with the daemon down: Redis queues, PostgreSQL reachable and each table's newest row; exit 2"
set +e
"$adworker" status --env-file "$empty_env" --url http://127.0.0.1:1 --json > /tmp/adworker-smoke-status.json
status_exit=$?
set -e
[ "$status_exit" = 2 ] || { log "status with no daemon exited $status_exit, expected 2"; exit 1; }
python3 - /tmp/adworker-smoke-status.json <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
assert report["daemon"] == "down" and report["postgres"]["reachable"], report
newest = {t["table"]: t["newestEnqueuedAt"] for t in report["postgres"]["tables"]}
assert newest["training_data"] and newest["inference_results"], newest
print("status without daemon:", newest)
PY

log "DATABASE_URL and DATABASE_URL_FILE connect over TCP as the URL says; flags override its parts; a malformed one is refused without quoting it"
url="postgresql://$DATABASE_USER:$DATABASE_PASSWORD@$DATABASE_HOST:$DATABASE_PORT/$smoke_database"
url_file=$(mktemp)
printf '%s\n' "$url" > "$url_file"
# The variables the URL replaces point nowhere: only the URL can make these succeed.
DATABASE_NAME=no_such_database DATABASE_PASSWORD=wrong DATABASE_URL=$url "$adworker" migrate --env-file "$empty_env" >/dev/null
DATABASE_NAME=no_such_database DATABASE_PASSWORD=wrong DATABASE_URL_FILE=$url_file "$adworker" migrate --env-file "$empty_env" >/dev/null
if DATABASE_URL=$url "$adworker" migrate --env-file "$empty_env" --database-name no_such_database > /tmp/adworker-smoke-url.txt 2>&1; then
    log "--database-name did not override DATABASE_URL"; exit 1
fi
grep -q 'no_such_database' /tmp/adworker-smoke-url.txt || { log "the failure does not name the database: $(cat /tmp/adworker-smoke-url.txt)"; exit 1; }
if DATABASE_URL='postgres://u@h/x?nosuchoption=1' "$adworker" migrate --env-file "$empty_env" > /tmp/adworker-smoke-url.txt 2>&1; then
    log "a malformed DATABASE_URL was accepted"; exit 1
fi
grep -q 'DATABASE_URL is not a valid' /tmp/adworker-smoke-url.txt || { log "malformed URL message: $(cat /tmp/adworker-smoke-url.txt)"; exit 1; }
# libpq's own reason for a password with a bare '%' quotes the password whole: every command that
# reads DATABASE_URL names the part at fault and quotes no piece of it.
secret='Kq4%Zw8Rt'
for command in migrate status run; do
    if DATABASE_URL="postgresql://u:$secret@h/db" "$adworker" $command --env-file "$empty_env" > /tmp/adworker-smoke-url.txt 2>&1; then
        log "$command took a DATABASE_URL whose password has a bare %"; exit 1
    fi
    grep -q "DATABASE_URL is not a valid PostgreSQL URL: the password has a '%'" /tmp/adworker-smoke-url.txt \
        || { log "$command: malformed password message: $(cat /tmp/adworker-smoke-url.txt)"; exit 1; }
    for ((start = 0; start + 4 <= ${#secret}; start++)); do
        if grep -qF -- "${secret:start:4}" /tmp/adworker-smoke-url.txt; then log "$command printed part of the password"; exit 1; fi
    done
done
rm -f "$url_file"
# An empty password file (a systemd credential for a Redis without AUTH) is no password, not AUTH "".
REDIS_PASSWORD_FILE=$empty_env "$adworker" produce --env-file "$empty_env" --stream inference --count 10 >/dev/null

log "dead letters: list, replay (still poison, so it comes back), purge"
redis_cli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }
"$adworker" dlq list --env-file "$empty_env" --stream inference | tee /tmp/adworker-smoke-dlq.txt
grep -q 'invalid_json: prediction' /tmp/adworker-smoke-dlq.txt || { log "dlq list does not show the reason"; exit 1; }
if "$adworker" dlq purge --env-file "$empty_env" --stream inference < /dev/null; then log "purge without --yes and without a terminal must refuse"; exit 1; fi
"$adworker" dlq replay --env-file "$empty_env" --stream inference --yes
[ "$(redis_cli xlen "${prefix}inference:dead")" = 0 ] || { log "replay left the dead letter in place"; exit 1; }
[ "$(redis_cli xrevrange "${prefix}inference" + - COUNT 1 | grep -c '^{$')" = 1 ] || { log "replay did not restore the original fields"; exit 1; }
timeout 120 "$adworker" run --env-file "$empty_env" --drain --streams inference
[ "$(redis_cli xlen "${prefix}inference:dead")" = 1 ] || { log "replayed poison did not return to the dead-letter stream"; exit 1; }
"$adworker" dlq purge --env-file "$empty_env" --stream inference --reason invalid_json --yes
[ "$(redis_cli xlen "${prefix}inference:dead")" = 0 ] || { log "purge left dead letters"; exit 1; }

log "migration 4 on a database that predates it: rows, the view, its owner and a grant to a role whose name needs quoting survive"
upgrade_database=adworker_upgrade
DATABASE_NAME=$upgrade_database scripts/dev-services.sh 2>/dev/null
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
psql_upgrade() { PGPASSWORD=$DATABASE_PASSWORD psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$DATABASE_HOST" -p "$DATABASE_PORT" -U "$DATABASE_USER" -d "$upgrade_database" "$@"; }
psql_upgrade -c 'SET client_min_messages = warning; DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;'
as_postgres psql -X -q -v ON_ERROR_STOP=1 -c 'DROP ROLE IF EXISTS "Dashboard-Reader"' -c 'CREATE ROLE "Dashboard-Reader"'
schema_before_4=$(mktemp -d)
cp schema/00[1-3]_*.sql "$schema_before_4"
DATABASE_NAME=$upgrade_database "$adworker" migrate --env-file "$empty_env" --schema-dir "$schema_before_4" >/dev/null
psql_upgrade -c "INSERT INTO inference_results (stream_id, enqueued_at, event_time, model_name, request_id, prediction)
                 VALUES ('1-0', now(), now(), 'ctr', 'r-1', '1'), ('1-1', now(), now(), 'ctr', 'r-2', '0')" \
             -c 'GRANT SELECT ON model_performance_hourly TO "Dashboard-Reader" WITH GRANT OPTION'
migrated=$(DATABASE_NAME=$upgrade_database "$adworker" migrate --env-file "$empty_env")
grep -q 'applied 4_identifier_collation' <<<"$migrated" || { log "migrate did not apply migration 4: $migrated"; exit 1; }
upgraded=$(psql_upgrade -c "SELECT (SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'
                              AND table_name IN ('training_data', 'inference_results')
                              AND column_name IN ('stream_id', 'model_name', 'request_id') AND collation_name = 'C'),
                            (SELECT inferences FROM model_performance_hourly),
                            has_table_privilege('Dashboard-Reader', 'model_performance_hourly', 'SELECT WITH GRANT OPTION'),
                            (SELECT relowner::regrole::text FROM pg_class WHERE oid = 'model_performance_hourly'::regclass)")
[ "$upgraded" = "6|2|t|$DATABASE_USER" ] || { log "after migration 4: $upgraded (expected 6|2|t|$DATABASE_USER)"; exit 1; }
grep -q '5_shard_key' <<<"$migrated" || { log "migrate did not apply migration 5: $migrated"; exit 1; }
keyed=$(psql_upgrade -c "SELECT (SELECT count(*) FROM inference_results WHERE shard = 0),
                                (SELECT string_agg(attname, ',' ORDER BY array_position(indkey, attnum)) FROM pg_index
                                   JOIN pg_attribute ON attrelid = indrelid AND attnum = ANY (indkey)
                                  WHERE indrelid = 'inference_results'::regclass AND indisprimary)")
[ "$keyed" = "2|enqueued_at,stream_id,shard" ] || { log "after migration 5: $keyed (expected the rows as shard 0, keyed with it)"; exit 1; }
psql_upgrade -c 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;' 2>/dev/null
as_postgres psql -X -q -c 'DROP ROLE "Dashboard-Reader"'
rm -r "$schema_before_4"

log "bench on a small workload (debug build: figures are not meaningful here, the command is)"
"$adworker" bench --env-file "$empty_env" --count 5000 --latency-seconds 2 --latency-rates 500,1000 --json > /tmp/adworker-smoke-bench.json
python3 - /tmp/adworker-smoke-bench.json <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print(json.dumps(report, indent=1))
assert report["records"] == 5000, report
for key in ("rawCopyRowsPerSecond", "xaddCeilingEntriesPerSecond", "producerEntriesPerSecond", "drainRowsPerSecond"):
    assert report[key] > 0, key
assert report["redisAppendOnly"] in ("yes", "no", "unknown"), report
assert [latency["rate"] for latency in report["latency"]] == [500, 1000], report
for latency in report["latency"]:
    assert latency["entries"] > 0
    assert 0 <= latency["p50Milliseconds"] <= latency["p99Milliseconds"] <= latency["p999Milliseconds"] <= latency["maximumMilliseconds"], report
assert report["drainPeakRSSGrowthBytes"] > 0, report
# CPU per row, read from /proc: the bench process and the local PostgreSQL always work.
for cpu in [report["drainCPU"]] + [latency["cpu"] for latency in report["latency"]]:
    assert cpu["benchMicroseconds"] > 0 and cpu["postgresMicroseconds"] > 0 and 0 < cpu["machineBusy"] <= 1, report
PY

log "CLI on the Redis Cluster with 3 shards: produce, drain, status, dlq per shard"
cluster_env=(REDIS_CLUSTER_NODES="$(scripts/redis-cluster.sh nodes)" ADWORKER_SHARDS=3)
psql_smoke -c 'TRUNCATE training_data, inference_results'
env "${cluster_env[@]}" "$adworker" produce --env-file "$empty_env" --stream requests --count 3000
shard1="${prefix}{inference.1}"
redis-cli -c -p 30001 xadd "$shard1" '*' v 1 model smoke request_id poison ts 1700000000000 prediction '{' >/dev/null
timeout 120 env "${cluster_env[@]}" "$adworker" run --env-file "$empty_env" --drain
[ "$(psql_smoke -c 'SELECT count(*), count(DISTINCT shard) FROM inference_results')" = "1500|3" ] || { log "cluster drain: rows per shard wrong"; exit 1; }
env "${cluster_env[@]}" "$adworker" status --env-file "$empty_env" --url http://127.0.0.1:1 > /tmp/adworker-smoke-cluster-status.txt || true
grep -q '^redis cluster:' /tmp/adworker-smoke-cluster-status.txt && [ "$(grep -c ' primary ' /tmp/adworker-smoke-cluster-status.txt)" = 3 ] \
    || { log "status does not show the cluster's three primaries"; cat /tmp/adworker-smoke-cluster-status.txt; exit 1; }
grep -qF "$shard1" /tmp/adworker-smoke-cluster-status.txt || { log "status does not list shard 1"; exit 1; }
env "${cluster_env[@]}" "$adworker" dlq list --env-file "$empty_env" --stream inference | grep -q "^$shard1:dead: 1 dead letter" \
    || { log "dlq list across shards does not show shard 1's letter"; exit 1; }
env "${cluster_env[@]}" "$adworker" dlq purge --env-file "$empty_env" --stream inference --shard 1 --yes
[ "$(redis-cli -c -p 30001 xlen "$shard1:dead")" = 0 ] || { log "dlq purge --shard 1 left the letter"; exit 1; }
for kind in training inference; do
    for key in $(for port in 30001 30002 30003 30004 30005 30006; do redis-cli -p $port --scan --pattern "${prefix}{${kind}*"; done | sort -u); do
        redis-cli -c -p 30001 del "$key" >/dev/null
    done
done

log "CLI over TLS: a TLS-only Redis with the certificates of scripts/tls-certs.sh; produce and drain through rediss://, each refusal exits 4 with one line naming it, within seconds; then PostgreSQL over TLS too (verify-full, client certificate)"
tls_dir=$(scripts/tls-certs.sh)
tls_port=${ADWORKER_TEST_TLS_PORT:-6390}
tls_cli=(redis-cli -p "$tls_port" --tls --cacert "$tls_dir/ca.crt")
mkdir -p /tmp/adworker-tls-redis
# TLS on $tls_port only; the same server's plaintext port is for bench --plaintext-port below.
"${tls_cli[@]}" ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port $((tls_port - 1)) --tls-port "$tls_port" \
    --tls-cert-file "$tls_dir/server.crt" --tls-key-file "$tls_dir/server.key" --tls-ca-cert-file "$tls_dir/ca.crt" \
    --tls-auth-clients no --save "" --appendonly no --dir /tmp/adworker-tls-redis --logfile /tmp/adworker-tls-redis/redis.log
for _ in $(seq 100); do "${tls_cli[@]}" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
tls_env=(REDIS_URL="rediss://127.0.0.1:$tls_port" REDIS_TLS_CA_FILE="$tls_dir/ca.crt")
psql_smoke -c 'TRUNCATE training_data, inference_results'
env "${tls_env[@]}" "$adworker" produce --env-file "$empty_env" --stream requests --count 2000
timeout 120 env "${tls_env[@]}" "$adworker" run --env-file "$empty_env" --drain
[ "$(psql_smoke -c 'SELECT (SELECT count(*) FROM training_data) || '"'|'"' || (SELECT count(*) FROM inference_results)')" = "1000|1000" ] \
    || { log "TLS drain: rows wrong"; exit 1; }
expect_refusal() { # exit-status what-it-must-say env-assignments...
    local expected=$1 said=$2 started=$SECONDS code=0
    shift 2
    timeout 60 env "$@" "$adworker" run --env-file "$empty_env" --drain > /tmp/adworker-smoke-tls.txt 2>&1 || code=$?
    [ "$code" = "$expected" ] && grep -qF "$said" /tmp/adworker-smoke-tls.txt && [ $((SECONDS - started)) -le 15 ] \
        || { log "expected exit $expected within 15 s saying '$said'; got $code after $((SECONDS - started)) s:"; cat /tmp/adworker-smoke-tls.txt; exit 1; }
}
expect_refusal 4 "not signed by an authority this client trusts" "${tls_env[@]}" REDIS_TLS_CA_FILE="$tls_dir/other-ca.crt"
expect_refusal 4 "is not issued for redis.example.com" "${tls_env[@]}" REDIS_TLS_SERVER_NAME=redis.example.com
expect_refusal 4 "speaks only TLS on this port" REDIS_URL="redis://127.0.0.1:$tls_port"
expect_refusal 4 "answered in plaintext, not TLS" REDIS_URL="rediss://$REDIS_HOST:$REDIS_PORT" REDIS_TLS_CA_FILE="$tls_dir/ca.crt"
# A contradiction in the settings is a usage error (64), refused before anything connects.
expect_refusal 64 "REDIS_TLS_CA_FILE is set but TLS is off" REDIS_TLS_CA_FILE="$tls_dir/ca.crt"
# Both over TLS: PostgreSQL with verify-full against the test CA and a client certificate.
pg_tls=(DATABASE_PORT=5433 DATABASE_HOST=localhost DATABASE_NAME=adworker_tls DATABASE_SSLMODE=verify-full DATABASE_SSLROOTCERT="$tls_dir/ca.crt"
    DATABASE_SSLCERT="$tls_dir/client.crt" DATABASE_SSLKEY="$tls_dir/client.key")
psql_tls() { PGPASSWORD=$DATABASE_PASSWORD psql -X -q -t -A -v ON_ERROR_STOP=1 "host=localhost port=5433 dbname=adworker_tls user=$DATABASE_USER sslmode=verify-full sslrootcert=$tls_dir/ca.crt" "$@"; }
psql_tls -c 'SET client_min_messages = warning; DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;'
env "${pg_tls[@]}" "$adworker" migrate --env-file "$empty_env" >/dev/null
env "${tls_env[@]}" "$adworker" produce --env-file "$empty_env" --stream requests --count 2000
timeout 120 env "${tls_env[@]}" "${pg_tls[@]}" "$adworker" run --env-file "$empty_env" --drain
[ "$(psql_tls -c 'SELECT (SELECT count(*) FROM training_data) || '"'|'"' || (SELECT count(*) FROM inference_results)')" = "1000|1000" ] \
    || { log "TLS drain into PostgreSQL over TLS: rows wrong"; exit 1; }
# A name with several addresses (managed Redis endpoints have them) is reached at whichever answers:
# nss_wrapper's hosts file gives 127.0.0.2, where nothing listens, first (hiredis alone tries only it).
multi_hosts=$(mktemp)
printf '127.0.0.2 redis.multi.test\n127.0.0.1 redis.multi.test\n' > "$multi_hosts"
LD_PRELOAD=libnss_wrapper.so NSS_WRAPPER_HOSTS=$multi_hosts env "${tls_env[@]}" REDIS_URL="rediss://redis.multi.test:$tls_port" REDIS_TLS_SERVER_NAME=localhost \
    "$adworker" produce --env-file "$empty_env" --stream requests --count 200 2>&1 | tee /tmp/adworker-smoke-multi.txt | grep -q "^sent 200 records (0 failed)" \
    || { log "a name with several addresses, the first refusing:"; cat /tmp/adworker-smoke-multi.txt; exit 1; }
rm -f "$multi_hosts"
# PostgreSQL's TLS refusals, which libpq states only in words, refuse start-up too (OpenSSL's codes).
expect_refusal 4 "set DATABASE_SSLROOTCERT to its CA's certificate" "${tls_env[@]}" "${pg_tls[@]}" DATABASE_SSLROOTCERT="$tls_dir/other-ca.crt"
expect_refusal 4 "does not offer TLS (ssl = off)" "${tls_env[@]}" DATABASE_SSLMODE=require
env "${tls_env[@]}" "$adworker" bench --env-file "$empty_env" --count 2000 --rounds 1 --latency-seconds 1 --latency-rates 500 \
    --plaintext-port $((tls_port - 1)) --json > /tmp/adworker-smoke-bench-tls.json
python3 - /tmp/adworker-smoke-bench-tls.json <<'PY'
import json, sys
tls = json.load(open(sys.argv[1]))["tls"]
assert tls["tlsToPlaintextDrainRatio"] > 0 and tls["tlsToPlaintextProducerRatio"] > 0 and tls["plaintextDrainToRawCopyRatio"] > 0, tls
assert [latency["rate"] for latency in tls["plaintextLatency"]] == [500], tls
PY
"${tls_cli[@]}" --scan --pattern "${prefix}*" | xargs -r "${tls_cli[@]}" del >/dev/null
"${tls_cli[@]}" shutdown nosave >/dev/null 2>&1 || true

log "CLI under Sentinel: produce and drain through the sentinels of scripts/redis-sentinel.sh; a master name they do not know exits 4, contradictory settings exit 64"
sentinel_env=(REDIS_SENTINELS="$(scripts/redis-sentinel.sh nodes)" REDIS_SENTINEL_MASTER=adworker)
psql_smoke -c 'TRUNCATE training_data, inference_results'
env "${sentinel_env[@]}" "$adworker" produce --env-file "$empty_env" --stream requests --count 2000
timeout 120 env "${sentinel_env[@]}" "$adworker" run --env-file "$empty_env" --drain
[ "$(psql_smoke -c 'SELECT (SELECT count(*) FROM training_data) || '"'|'"' || (SELECT count(*) FROM inference_results)')" = "1000|1000" ] \
    || { log "drain under Sentinel: rows wrong"; exit 1; }
expect_refusal 4 "knows no master named no-such-master" "${sentinel_env[@]}" REDIS_SENTINEL_MASTER=no-such-master
expect_refusal 64 "REDIS_SENTINELS needs REDIS_SENTINEL_MASTER" REDIS_SENTINELS="$(scripts/redis-sentinel.sh nodes)"
expect_refusal 64 "exclude each other" "${sentinel_env[@]}" "${cluster_env[@]}"
sentinel_primary=$(redis-cli -p 26400 sentinel get-master-addr-by-name adworker | sed -n 2p)
# status names the primary in use (the daemon is not running here: status says so and exits 2).
sentinel_status=$(env "${sentinel_env[@]}" "$adworker" status --env-file "$empty_env" 2>&1 || true)
grep -qF "redis under sentinel: master adworker, primary 127.0.0.1:$sentinel_primary" <<<"$sentinel_status" \
    || { log "status does not name the primary on $sentinel_primary:"; echo "$sentinel_status"; exit 1; }
redis-cli -p "$sentinel_primary" --scan --pattern "${prefix}*" | xargs -r redis-cli -p "$sentinel_primary" del >/dev/null

log "CLI through PgBouncer (scripts/pgbouncer.sh, database adworker_pgbouncer, default synchronous_commit = off): migrate refuses the transaction pool with exit 4 and applies nothing, migrates through the session pool; produce, drain and stats through the transaction pool"
pgbouncer_env=(DATABASE_HOST=127.0.0.1 DATABASE_PORT=6432 DATABASE_NAME=adworker_pgbouncer)
psql_pgbouncer() { PGPASSWORD=$DATABASE_PASSWORD psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$DATABASE_HOST" -p "$DATABASE_PORT" -U "$DATABASE_USER" -d adworker_pgbouncer "$@"; }
psql_pgbouncer -c 'SET client_min_messages = warning; DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;'
code=0
timeout 60 env "${pgbouncer_env[@]}" "$adworker" migrate --env-file "$empty_env" > /tmp/adworker-smoke-pgbouncer.txt 2>&1 || code=$?
[ "$code" = 4 ] && grep -qF "needs a direct connection to PostgreSQL or a session-mode pool" /tmp/adworker-smoke-pgbouncer.txt \
    && [ "$(psql_pgbouncer -c "SELECT to_regclass('public.adworker_schema_migrations') IS NULL")" = t ] \
    || { log "migrate through the transaction pool: expected exit 4 and nothing applied; got $code:"; cat /tmp/adworker-smoke-pgbouncer.txt; exit 1; }
env "${pgbouncer_env[@]}" DATABASE_NAME=adworker_pgbouncer_session "$adworker" migrate --env-file "$empty_env" >/dev/null
env "${pgbouncer_env[@]}" "$adworker" produce --env-file "$empty_env" --stream requests --count 2000
timeout 120 env "${pgbouncer_env[@]}" "$adworker" run --env-file "$empty_env" --drain
[ "$(psql_pgbouncer -c 'SELECT (SELECT count(*) FROM training_data) || '"'|'"' || (SELECT count(*) FROM inference_results)')" = "1000|1000" ] \
    && [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" xpending "${prefix}inference" adworker | head -1)" = 0 ] \
    || { log "drain through PgBouncer: rows or pending entries wrong"; exit 1; }
pgbouncer_model=$(psql_pgbouncer -c 'SELECT model_name FROM inference_results GROUP BY 1 ORDER BY count(*) DESC LIMIT 1')
env "${pgbouncer_env[@]}" "$adworker" stats --env-file "$empty_env" --model "$pgbouncer_model" --hours 1 --json | python3 -c '
import json, sys
stats = json.load(sys.stdin)
assert stats["inferenceRecords"] == int(sys.argv[1]), stats' "$(psql_pgbouncer -c "SELECT count(*) FROM inference_results WHERE model_name = '$pgbouncer_model'")"

log "DATABASE_HOSTS: a worker's sinks over two nodes (PostgreSQL itself and PgBouncer, one database); PgBouncer stopped under load: rows go on through the other node, only the stopped node's sinks open their circuits, then exact counts"
hosts_prefix="hosts-$$:"
hosts_env=(DATABASE_HOST=127.0.0.1 DATABASE_PORT=5432 DATABASE_NAME=adworker_pgbouncer DATABASE_HOSTS=127.0.0.1:5432,127.0.0.1:6432 ADWORKER_STREAM_PREFIX=$hosts_prefix)
hosts_rows() { psql_pgbouncer -c 'SELECT count(*) FROM inference_results'; }
psql_pgbouncer -c 'TRUNCATE inference_results'
env "${hosts_env[@]}" "$adworker" produce --env-file "$empty_env" --stream inference --count 20000 --rate 4000 > /tmp/adworker-hosts-produce.txt 2>&1 &
hosts_producer=$!
env "${hosts_env[@]}" "$adworker" run --env-file "$empty_env" --streams inference --concurrency 2 --http off > /tmp/adworker-hosts-run.txt 2>&1 &
hosts_worker=$!
sleep 2
# The script's own database, not the smoke database exported above (it writes pgbouncer.ini's alias from it).
DATABASE_NAME=adworker_pgbouncer scripts/pgbouncer.sh stop >/dev/null
sleep 0.5
hosts_before=$(hosts_rows)
sleep 2
hosts_after=$(hosts_rows)
DATABASE_NAME=adworker_pgbouncer scripts/pgbouncer.sh start >/dev/null
wait "$hosts_producer"
for _ in $(seq 600); do
    [ "$(hosts_rows)" = 20000 ] && [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" xpending "${hosts_prefix}inference" adworker | head -1)" = 0 ] && break
    sleep 0.1
done
kill -TERM "$hosts_worker"
wait "$hosts_worker" || { log "the worker over two nodes exited $?"; cat /tmp/adworker-hosts-run.txt; exit 1; }
hosts_counts="rows $(hosts_rows) of 20000, distinct $(psql_pgbouncer -c 'SELECT count(DISTINCT stream_id) FROM inference_results'), dead $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" xlen "${hosts_prefix}inference:dead"), pending $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" xpending "${hosts_prefix}inference" adworker | head -1); while PgBouncer was down $hosts_before -> $hosts_after rows"
echo "$hosts_counts"
[ "$hosts_counts" = "rows 20000 of 20000, distinct 20000, dead 0, pending 0; while PgBouncer was down $hosts_before -> $hosts_after rows" ] && [ "$hosts_after" -gt "$hosts_before" ] \
    && grep "circuit open" /tmp/adworker-hosts-run.txt | grep -q "postgres_node=127.0.0.1:6432" \
    && ! grep "circuit open" /tmp/adworker-hosts-run.txt | grep -q "postgres_node=127.0.0.1:5432" \
    || { log "DATABASE_HOSTS: counts or circuits wrong"; grep -i "circuit\|error" /tmp/adworker-hosts-run.txt | tail -5; exit 1; }
redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" --scan --pattern "${hosts_prefix}*" | xargs -r redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" del >/dev/null

python3 -c 'import prometheus_client' 2>/dev/null || python3 -m pip install -q prometheus_client

log "deploy files: systemd unit, Kubernetes manifests, compose file"
scripts/validate-deploy.sh "$adworker"

log "dashboard and alert rules: promtool check rules, promtool test rules, the dashboard's queries and metric names"
scripts/check-monitoring.sh
# Installed here, once, for the observability scenario, which loads the status page in it.
command -v chromium >/dev/null || { log "installing chromium"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

log "fault tests: kill -9, PostgreSQL restart, 30 s outage and crashes, Redis restart and maxmemory, a half-open PostgreSQL, lost replies, SIGTERM, racing and same-named workers, poison and hostile ids, a held lock, /readyz and status exit codes, probe floods, idle HTTP clients, least privilege, the process pool; on the cluster: 12 shards in a pool, kill -9 of a primary, live resharding, a seed down at start, one shard; over TLS: kill -9, poison, Redis restart"
# In a subshell with the smoke run's stream prefix and database unset: each scenario sets its own.
(unset ADWORKER_STREAM_PREFIX DATABASE_NAME; python3 scripts/fault-tests.py "$adworker")

log "all tests passed"

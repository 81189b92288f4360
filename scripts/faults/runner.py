"""Runs the scenarios named on the command line (default: all, in SCENARIOS' order), prints the
accounting table and writes it as JSON to $FAULT_REPORT (default /tmp/adworker-faults.json)."""
import json
import os
import re
import subprocess
import sys
import time

from . import harness
from .harness import AS_ROOT, BASE_ENV, ROOT, SPAWNED, postgres_cluster, redis
from .redis_cluster import CLUSTER_PORTS
from .scenarios.access import least_privilege, startup_refused
from .scenarios.cluster import cluster_kill9_master, cluster_node_down_at_start, cluster_one_shard, cluster_pool_12_shards, cluster_reshard_live
from .scenarios.dead_letters import dead_letter_reply_lost, hostile_id, poison_mix, redis_oom
from .scenarios.health import idle_http_clients, observability, permanent_postgres, readyz_under_load, stuck_worker
from .scenarios.network import half_open_postgres, half_open_redis
from .scenarios.outages import (async_commit_crash, kill9, postgres_down_30s, postgres_restart, redis_client_kill, redis_kill9_always,
                                redis_restart, same_consumer_name, sigterm_during_batch, sigterm_with_database_down, slow_database,
                                two_workers_racing)
from .scenarios.pools import pool, pool_crash_loop, pool_frozen_child, stray_signals
from .scenarios.producer import api_not_blocked, api_spool_restart, example_refusals

USAGE = """usage: scripts/fault-tests.py ADWORKER_BINARY [SCENARIO ...]   (restarts servers: root, or sudo)
       scripts/fault-tests.py --list
Runs every scenario, or those named, against the shared Redis, PostgreSQL and Redis Cluster."""

SCENARIOS = {
    "kill9": kill9, "postgres-restart": postgres_restart, "postgres-down-30s": postgres_down_30s,
    "redis-restart": redis_restart, "sigterm": sigterm_during_batch, "sigterm-db-down": sigterm_with_database_down,
    "two-workers": two_workers_racing, "poison": poison_mix, "slow-database": slow_database,
    "observability": observability, "least-privilege": least_privilege, "pool": pool, "pool-crash-loop": pool_crash_loop,
    "api-not-blocked": api_not_blocked, "async-commit-crash": async_commit_crash, "hostile-id": hostile_id,
    "half-open-postgres": half_open_postgres, "half-open-redis": half_open_redis, "redis-oom": redis_oom, "same-consumer-name": same_consumer_name,
    "dead-letter-reply-lost": dead_letter_reply_lost, "readyz-load": readyz_under_load, "idle-http-clients": idle_http_clients,
    "permanent-postgres": permanent_postgres, "startup-refused": startup_refused, "stuck-worker": stuck_worker,
    "cluster-pool-12-shards": cluster_pool_12_shards, "cluster-kill9-master": cluster_kill9_master,
    "cluster-kill9-master-wait": lambda: cluster_kill9_master(wait_replicas=1),
    "cluster-freeze-master-wait": lambda: cluster_kill9_master(wait_replicas=1, freeze=True),
    "cluster-reshard-live": cluster_reshard_live, "cluster-node-down-at-start": cluster_node_down_at_start,
    "cluster-one-shard": cluster_one_shard, "redis-kill9-always": redis_kill9_always, "redis-client-kill": redis_client_kill,
    "api-spool-restart": api_spool_restart,
    "pool-frozen-child": pool_frozen_child, "stray-signals": stray_signals, "example-refusals": example_refusals,
    # The same over TLS: the worker, the producer and dlq reach Redis through rediss://.
    # Through PgBouncer in transaction mode (scripts/pgbouncer.sh): a worker killed, PostgreSQL
    # restarted and crashed behind the pooler.
    "kill9-pgbouncer": lambda: kill9(pooled=True), "postgres-restart-pgbouncer": lambda: postgres_restart(pooled=True),
    "async-commit-crash-pgbouncer": lambda: async_commit_crash(pooled=True),
    "kill9-tls": lambda: kill9(tls=True), "poison-tls": lambda: poison_mix(tls=True), "redis-restart-tls": lambda: redis_restart(tls=True),
}


def remove_leftovers():
    """Streams of earlier runs that stopped half way (the 5 MiB poison entries alone are 90 MB):
    left in Redis they make every AOF rewrite during these scenarios slower. Keys name their
    run's pid; a run still alive keeps its streams."""
    def run_is_alive(key):
        match = re.match(r"fault-.*-(\d+):", key)
        return match is not None and os.path.exists(f"/proc/{match.group(1)}")
    leftovers = [key for key in redis("--scan", "--pattern", "fault-*").split() if not run_is_alive(key)]
    for start in range(0, len(leftovers), 100):
        redis("UNLINK", *leftovers[start:start + 100])
    for port in CLUSTER_PORTS:
        # The cluster's leftovers, on whichever primary holds them (replicas refuse the UNLINK).
        scan = subprocess.run(["redis-cli", "-p", str(port), "--scan", "--pattern", "fault-*"], capture_output=True, text=True)
        for key in scan.stdout.split() if scan.returncode == 0 else []:
            if not run_is_alive(key):
                subprocess.run(["redis-cli", "-c", "-p", str(port), "UNLINK", key], capture_output=True)


def diagnosis(since):
    """The last lines of every log written since `since` (a monotonic time), and PostgreSQL's
    client connections by state: what a timeout alone does not say."""
    lines = []
    cutoff = time.time() - (time.monotonic() - since)
    for entry in sorted(os.scandir(harness.LOG_DIR), key=lambda entry: entry.name):
        if entry.name.endswith(".log") and entry.stat().st_mtime >= cutoff:
            with open(entry.path, errors="replace") as log:
                tail = [line.rstrip()[:240] for line in log.read().splitlines() if line.strip()][-4:]
            lines += [f"    {entry.name}: {line}" for line in tail]
    connections = subprocess.run(
        harness.PSQL + ["-c", "SELECT coalesce(state, '?') || ' ' || count(*) FROM pg_stat_activity"
                               " WHERE backend_type = 'client backend' GROUP BY state"],
        env=harness.PG_ENV, capture_output=True, text=True)
    lines.append("    postgres connections: " + (" ".join(connections.stdout.split("\n")).strip() or connections.stderr.strip()[:200]))
    return "\n".join(lines)


def main(argv):
    """`argv` as sys.argv: the binary, then scenario names. Names are checked before anything runs."""
    if len(argv) > 1 and argv[1] in ("-h", "--help", "--list"):
        print("\n".join(SCENARIOS) if argv[1] == "--list" else USAGE + "\nscenarios: " + " ".join(SCENARIOS))
        return
    if len(argv) < 2:
        sys.exit(USAGE)
    unknown = [name for name in argv[2:] if name not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenario {', '.join(unknown)}; --list names them")
    harness.configure(argv[1])
    names = argv[2:] or list(SCENARIOS)
    subprocess.run([harness.ADWORKER, "migrate", "--env-file", harness.EMPTY_ENV], env=BASE_ENV, check=True,
                   cwd=ROOT, capture_output=True)
    remove_leftovers()
    results, failures = [], []
    for name in names:
        started = time.monotonic()
        try:
            results.append(SCENARIOS[name]())
            print(f"[fault] {name}: ok ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        except Exception as error:  # noqa: BLE001 - every scenario runs, every failure is reported
            # CI shows only the end of the output: the summary carries what the scenario's
            # processes said last and what PostgreSQL's connections were doing.
            failures.append(f"{name}: {error}\n" + diagnosis(started))
            for process in SPAWNED:
                if process.poll() is None:
                    process.kill()
            print(f"[fault] {name}: FAILED: {error} (logs in {harness.LOG_DIR})", file=sys.stderr, flush=True)
            subprocess.run(AS_ROOT + ["pg_ctlcluster", postgres_cluster(), "main", "start"], capture_output=True)
            subprocess.run([os.path.join(ROOT, "scripts", "dev-services.sh")], capture_output=True)
    print(f"{'scenario':<20}{'entries':>9}{'rows':>9}{'dead':>6}{'dupes':>7}{'pending':>9}{'recovery s':>12}  notes")
    for result in results:
        print(f"{result['scenario']:<20}{result['entries']:>9}{result['rows']:>9}{result['dead']:>6}{result['duplicates']:>7}"
              f"{result['pending']:>9}{result['recovery_seconds']:>12}  {result['notes']}")
    with open(os.environ.get("FAULT_REPORT", "/tmp/adworker-faults.json"), "w") as report:
        json.dump(results, report, indent=1)
    if failures:
        print("\n".join(["FAILED:"] + failures), file=sys.stderr)
        sys.exit(1)

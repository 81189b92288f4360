"""Against the Redis Cluster scripts/redis-cluster.sh starts (three primaries, three replicas)."""
import json
import os
import re
import signal
import subprocess
import time

from ..harness import Failure, ROOT, check, free_ports, http_get, psql, wait_for, wait_producer
from ..redis_cluster import CLUSTER_DATA, CLUSTER_NODES, CLUSTER_PORTS, ClusterScenario, cluster_manager, cluster_ok, cluster_primaries, cluster_redis, key_slot, primary_of, restore_cluster


def cluster_pool_12_shards():
    """A pool of two worker processes consuming 12 shards on the cluster while a producer writes."""
    scenario = ClusterScenario("cluster-pool-12-shards", 12)
    port = free_ports(19800, 3)
    scenario.pool("supervisor", port, "cpool", "--trim-interval", "0", "--claim-idle", "2")
    producer = scenario.produce(24000, 6000, 31)
    started = time.monotonic()
    wait_producer(producer)
    recovery = scenario.wait_caught_up(started)
    status = json.loads(http_get(f"http://127.0.0.1:{port}/status")[1])
    consumers = {(c["stream"], c["consumer"]) for c in status["consumers"]}
    check(len(consumers) == 24, f"expected 12 shards x 2 processes = 24 consumers, found {len(consumers)}")
    per_shard = [int(psql(f"SELECT count(*) FROM inference_results WHERE shard = {shard}")) for shard in range(12)]
    check(min(per_shard) > 0, f"rows per shard: {per_shard}")
    scenario.notes.append(f"2 processes x 12 shards; rows per shard {min(per_shard)}..{max(per_shard)}")
    return scenario.finish(recovery)



def cluster_kill9_master(wait_replicas=0, freeze=False):
    """kill -9 of the primary serving shard 0 under load (or, with `freeze`, SIGSTOP past the node
    timeout, then SIGCONT: it wakes up a primary no longer, after taking writes its replica never
    saw): its replica takes over; producer and worker go on without a restart. What Redis's
    asynchronous replication lost is counted apart from what adworker lost, which must be nothing:
    every entry the cluster holds afterwards is one row. With `wait_replicas`
    (ADWORKER_REDIS_WAIT_REPLICAS), replication loses nothing confirmed either."""
    # A cluster fresh from `create`: the Swift tests move slots back and forth with forced config
    # epochs, and once the promoted replica of a killed primary held a slot map it never settled
    # (cluster_state:fail on it alone for 30 s while every other node said ok).
    subprocess.run([os.path.join(ROOT, "scripts", "redis-cluster.sh"), "recreate"], check=True, capture_output=True)
    name = "cluster-" + ("freeze" if freeze else "kill9") + "-master" + ("-wait" if wait_replicas else "")
    scenario = ClusterScenario(name, 12)
    if wait_replicas:
        scenario.extra_env["ADWORKER_REDIS_WAIT_REPLICAS"] = str(wait_replicas)
    worker = scenario.worker("w")
    producer = scenario.produce(30000, 5000, 32)
    time.sleep(2)
    victim_port, victim_id = primary_of(key_slot(scenario.streams[0]))
    check(victim_port is not None, "no primary serves shard 0")
    with open(os.path.join(CLUSTER_DATA, str(victim_port), "redis.pid")) as pidfile:
        victim_pid = int(pidfile.read().strip())
    os.kill(victim_pid, signal.SIGSTOP if freeze else signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: primary_of(key_slot(scenario.streams[0]), skip=victim_port)[0] not in (None, victim_port), 30, "a replica to take over shard 0")
    failover = time.monotonic() - killed
    if freeze:
        os.kill(victim_pid, signal.SIGCONT)
    else:
        restore_cluster()  # the killed node comes back, as a replica of its successor
    wait_for(cluster_ok, 30, "cluster_state:ok everywhere")
    code = producer.wait(120)
    sent_line = scenario.log("produce").strip().splitlines()[-1] if scenario.log("produce").strip() else ""
    match = re.search(r"sent (\d+) records \((\d+) failed\)", scenario.log("produce"))
    check(match is not None, f"producer printed no summary (exit {code}): {sent_line}")
    confirmed, failed = int(match.group(1)), int(match.group(2))
    try:
        recovery = scenario.wait_caught_up(killed, timeout=180)
    except Failure as failure:
        present, stored = scenario.entries_in_redis(), scenario.rows_by_entry()
        raise Failure(f"{failure}: {scenario.counts()}; {len(present - stored)} entries without a row, {len(stored - present)} rows without an entry; "
                      f"worker {'running' if worker.poll() is None else f'exited {worker.poll()}'}")
    check(worker.poll() is None, "the worker exited during the failover")
    present = scenario.entries_in_redis()
    stored = scenario.rows_by_entry()
    unstored = present - stored
    check(not unstored, f"adworker lost {len(unstored)} entries the cluster holds (e.g. {sorted(unstored)[:3]})")
    stored_then_lost = len(stored - present)
    redis_lost = max(0, confirmed - len(present & stored) - stored_then_lost)
    if wait_replicas:
        check(failed == 0 and redis_lost == 0 and stored_then_lost == 0,
              f"with WAIT {wait_replicas}: {failed} failed, {redis_lost} confirmed entries lost, {stored_then_lost} stored and then lost")
    moved = scenario.log("worker-w").count("following it")
    scenario.notes.append(
        f"primary :{victim_port} {'frozen' if freeze else 'killed'}, replica took over in {failover:.1f} s; producer confirmed {confirmed}, failed {failed}; "
        f"cluster holds {len(present)}: every one stored; replication lost {redis_lost} confirmed entries "
        f"before the worker read them, {stored_then_lost} after it stored them; worker followed {moved} slot moves")
    return scenario.finish(recovery)



def cluster_reshard_live():
    """Slots holding shard streams move between primaries under load (reshard, then rebalance):
    MOVED and ASK are followed, nothing is lost or doubled, nothing stays pending."""
    # A cluster fresh from `create`: the failovers of earlier scenarios leave config epochs under
    # which a reshard's slot hand-over was seen to be lost on some nodes (one slot owned by
    # nobody, nodes disagreeing, in a CI run), which is Redis's bookkeeping, not this test's.
    subprocess.run([os.path.join(ROOT, "scripts", "redis-cluster.sh"), "recreate"], check=True, capture_output=True)
    scenario = ClusterScenario("cluster-reshard-live", 12)
    worker = scenario.worker("w")
    producer = scenario.produce(30000, 5000, 33)
    time.sleep(1.5)
    primaries = cluster_primaries()
    source_port, source = primary_of(key_slot(scenario.streams[0]))
    target = next(node for port, node in primaries.items() if port != source_port)
    started = time.monotonic()
    cluster_manager("reshard", f"127.0.0.1:{source_port}", "--cluster-from", source, "--cluster-to", target,
                    "--cluster-slots", "2000", "--cluster-yes")
    moved_to = primary_of(key_slot(scenario.streams[0]))[1]
    cluster_manager("rebalance", f"127.0.0.1:{source_port}", "--cluster-yes")
    took = time.monotonic() - started
    wait_producer(producer)
    recovery = scenario.wait_caught_up(started)
    check(worker.poll() is None, "the worker exited during the resharding")
    log = scenario.log("worker-w") + scenario.log("produce")
    followed = log.count("following it")
    scenario.notes.append(f"2000 slots moved away from :{source_port} (shard 0 {'moved' if moved_to != source else 'stayed'}) and "
                          f"rebalanced back, under load, in {took:.1f} s; {followed} MOVED followed by worker and producer")
    return scenario.finish(recovery)



def cluster_node_down_at_start():
    """The first seed node is down when the worker and the producer start: both use the others."""
    scenario = ClusterScenario("cluster-node-down-at-start", 3)
    replica_port = next(port for port in CLUSTER_PORTS
                        if "role:slave" in cluster_redis("INFO", "replication", port=port))
    seeds = [f"127.0.0.1:{replica_port}"] + [node for node in CLUSTER_NODES.split(",") if not node.endswith(f":{replica_port}")]
    scenario.extra_env["REDIS_CLUSTER_NODES"] = ",".join(seeds)
    with open(os.path.join(CLUSTER_DATA, str(replica_port), "redis.pid")) as pidfile:
        os.kill(int(pidfile.read().strip()), signal.SIGTERM)
    wait_for(lambda: subprocess.run(["redis-cli", "-p", str(replica_port), "ping"], capture_output=True).returncode != 0, 10,
             "the seed node to stop")
    try:
        scenario.worker("w")
        producer = scenario.produce(6000, 3000, 34)
        started = time.monotonic()
        wait_producer(producer)
        recovery = scenario.wait_caught_up(started)
    finally:
        restore_cluster()
    scenario.notes.append(f"seed :{replica_port} (a replica) down at start-up; 3 shards")
    return scenario.finish(recovery)



def cluster_one_shard():
    """One shard on the cluster, poison mixed in: the dead letter and its XACK share {inference.0}."""
    scenario = ClusterScenario("cluster-one-shard", 1)
    check(scenario.streams == [scenario.prefix + "{inference.0}"], f"one-shard name: {scenario.streams}")
    scenario.worker("w")
    producer = scenario.produce(5000, 2500, 35)
    for _ in range(3):
        cluster_redis("XADD", scenario.streams[0], "*", "v", "1", "model", "m", "request_id", "poison", "ts", "1", "prediction", "{")
    started = time.monotonic()
    wait_producer(producer)
    recovery = scenario.wait_caught_up(started)
    scenario.notes.append("tagged name on a cluster even for one shard; 3 poison entries dead-lettered in the same slot")
    return scenario.finish(recovery, expected_dead=3)

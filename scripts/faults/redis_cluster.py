"""The Redis Cluster scripts/redis-cluster.sh starts (three primaries, three replicas): its nodes,
slots, shard stream names computed independently of adworker's, and a Scenario whose accounting
spans every shard."""
import json
import os
import re
import subprocess

from .harness import ROOT, Failure, Scenario, check, psql, wait_for

CLUSTER_NODES = os.environ.get("REDIS_CLUSTER_NODES") or ",".join(f"127.0.0.1:{30001 + i}" for i in range(6))


CLUSTER_PORTS = [int(node.rsplit(":", 1)[1]) for node in CLUSTER_NODES.split(",")]


CLUSTER_DATA = os.path.join(os.environ.get("ADWORKER_DEV_DATA_DIR", "/var/tmp/adworker-dev"), "redis-cluster")


def crc16(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key):
    data = key.encode()
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    return crc16(data) & 16383


def shard_streams(prefix, kind, count):
    """ShardLayout's names, computed independently: shard i's tag is the first of <kind>.<i>,
    <kind>.<i>.1, ... whose slot lies in [i*16384/N, (i+1)*16384/N)."""
    streams = []
    for index in range(count):
        low, high = index * 16384 // count, (index + 1) * 16384 // count
        attempt = 0
        while True:
            tag = f"{kind}.{index}" if attempt == 0 else f"{kind}.{index}.{attempt}"
            if low <= key_slot(tag) < high:
                break
            attempt += 1
        streams.append(f"{prefix}{{{tag}}}")
    return streams


def cluster_redis(*args, port=None, skip=None):
    """redis-cli -c (follows MOVED/ASK) against the first node that answers; never `skip` (a
    frozen node accepts the connection and answers nothing)."""
    for candidate in ([port] if port else [node for node in CLUSTER_PORTS if node != skip]):
        result = subprocess.run(["redis-cli", "-c", "-h", "127.0.0.1", "-p", str(candidate), *args], capture_output=True)
        if result.returncode == 0 and not result.stdout.startswith(b"Could not connect"):
            return result.stdout.decode("utf-8", "replace").strip()
    raise Failure(f"no cluster node answers {args[:2]}")


def cluster_primaries():
    """{port: node id} of the primaries that serve slots, and {slot range start: port}."""
    primaries = {}
    for line in cluster_redis("CLUSTER", "NODES").splitlines():
        fields = line.split()
        if "master" in fields[2] and "fail" not in fields[2] and len(fields) > 8:
            primaries[int(fields[1].split("@")[0].rsplit(":", 1)[1])] = fields[0]
    return primaries


def primary_of(slot, skip=None):
    for line in cluster_redis("CLUSTER", "NODES", skip=skip).splitlines():
        fields = line.split()
        if "master" not in fields[2] or "fail" in fields[2]:
            continue
        for assignment in fields[8:]:
            if assignment.startswith("["):
                continue
            low, _, high = assignment.partition("-")
            if int(low) <= slot <= int(high or low):
                return int(fields[1].split("@")[0].rsplit(":", 1)[1]), fields[0]
    return None, None


def cluster_ok():
    try:
        return all("cluster_state:ok" in cluster_redis("CLUSTER", "INFO", port=port) for port in CLUSTER_PORTS)
    except Failure:
        return False


def cluster_manager(command, *args):
    """redis-cli --cluster COMMAND, once every node agrees on the slot map: right after a reshard
    the nodes still gossip the new owners, and rebalance refuses a cluster whose nodes disagree."""
    problems = []
    def settled():
        checked = subprocess.run(["redis-cli", "--cluster", "check", CLUSTER_NODES.split(",")[0]], capture_output=True, text=True)
        problems[:] = [line for line in checked.stdout.splitlines() if "[ERR]" in line or "[WARNING]" in line]
        return checked.returncode == 0 and not problems
    try:
        wait_for(settled, 30, "every node to agree on the slot map, with no slot half-moved")
    except Failure as failure:
        raise Failure(f"{failure}: " + " | ".join(re.sub(r"\x1b\[[0-9;]*m", "", line) for line in problems)) from None
    done = subprocess.run(["redis-cli", "--cluster", command, *args], capture_output=True, text=True)
    check(done.returncode == 0, f"redis-cli --cluster {command} exited {done.returncode}: "
          + " | ".join((done.stdout + done.stderr).strip().splitlines()[-6:]))


def restore_cluster():
    """Every node up, cluster_state:ok and the replicas linked. After a kill -9 the node comes back
    as a replica and syncs in full; on a loaded 2-core CI machine that once took longer than the
    script's 30 s wait: it gets a second 30 s, and a failure says what did not happen."""
    for attempt in (1, 2):
        started = subprocess.run([os.path.join(ROOT, "scripts", "redis-cluster.sh"), "start"], capture_output=True, text=True)
        if started.returncode == 0:
            return
    raise AssertionError(f"redis-cluster.sh start: {started.stderr.strip().splitlines()[-1:]}")


class ClusterScenario(Scenario):
    def __init__(self, name, shards):
        super().__init__(name)
        self.shards = shards
        self.streams = shard_streams(self.prefix, "inference", shards)
        self.extra_env = {"REDIS_CLUSTER_NODES": CLUSTER_NODES, "ADWORKER_SHARDS": str(shards)}

    def counts(self):
        rows, distinct = (int(value) for value in psql("SELECT count(*), count(DISTINCT request_id) FROM inference_results").split("|"))
        entries = dead = pending = 0
        for stream in self.streams:
            info = cluster_redis("XINFO", "STREAM", stream).splitlines()
            if "entries-added" in info:
                entries += int(info[info.index("entries-added") + 1])
                reply = cluster_redis("XPENDING", stream, "adworker")
                pending += 0 if not reply or reply.startswith(("NOGROUP", "ERR")) else int(reply.splitlines()[0])
            dead += int(cluster_redis("XLEN", stream + ":dead"))
        return {"entries": entries, "rows": rows, "dead": dead, "duplicates": rows - distinct, "pending": pending}

    def entries_in_redis(self):
        """(shard, entry id) of every entry the streams hold now (fault workers do not trim)."""
        present = set()
        for shard, stream in enumerate(self.streams):
            for entry in json.loads(cluster_redis("--json", "XRANGE", stream, "-", "+") or "[]"):
                present.add((shard, entry[0]))
        return present

    def rows_by_entry(self):
        return {(int(shard), entry) for entry, shard in
                (line.split("|") for line in psql("SELECT stream_id, shard FROM inference_results").splitlines() if line)}

    def finish(self, recovery, expected_dead=0):
        result = super().finish(recovery, expected_dead)
        for stream in self.streams:
            cluster_redis("DEL", stream, stream + ":dead")
        return result

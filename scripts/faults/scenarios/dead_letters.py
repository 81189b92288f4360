"""Bad input and dead letters: every poison entry becomes exactly one letter with its reason."""
import json
import os
import re
import subprocess
import time

from .. import harness as h
from ..harness import Scenario, check, free_ports, http_get, pending_count, redis, wait_for, wait_producer, xadd
from ..proxy import Proxy


def poison_mix(tls=False):
    scenario = Scenario("poison", tls=tls)
    redis("XGROUP", "CREATE", scenario.stream, "adworker", "0", "MKSTREAM")

    def entry(**overrides):
        fields = {"v": b"1", "model": b"m", "request_id": b"poison", "ts": b"1700000000000", "prediction": b"1"}
        fields.update(overrides)
        return [(name, value) for name, value in fields.items() if value is not None]

    cases = [
        (entry(prediction=b'{"a":'), "invalid_json: prediction"),
        (entry(request_id=None), "missing_field: request_id"),
        (entry(confidence=b"high"), "invalid_number: confidence"),
        (entry(model=b"m\x00m"), "nul_byte: model"),
        (entry(meta=b'{"k":"\xc3\x28"}'), "invalid_utf8: meta"),
        (entry(meta=b'{"blob":"' + b"x" * (5 << 20) + b'"}'), "entry_too_large"),
        (entry(v=b"2"), "unknown_version: v"),
    ]
    expected = {xadd(scenario.stream, fields): reason for fields, reason in cases}
    # An empty entry: delivered, then deleted from the stream, so the re-read returns no fields.
    gone = xadd(scenario.stream, entry())
    redis("XREADGROUP", "GROUP", "adworker", "w", "COUNT", "100", "STREAMS", scenario.stream, ">")
    redis("XDEL", scenario.stream, gone)
    wait_producer(scenario.produce(2000, 5000, 8))
    started = time.monotonic()
    scenario.worker()
    recovery = scenario.wait_caught_up(started)
    letters = [json.loads(line) for line in subprocess.run(
        [h.ADWORKER, "dlq", "list", "--env-file", h.EMPTY_ENV, "--stream", "inference", "--json", "--limit", "100"],
        env=scenario.environment(), check=True, capture_output=True, text=True).stdout.splitlines()]
    reasons = {letter["dead.entry_id"]: letter["dead.reason"] for letter in letters}
    check(reasons.get(gone) == "empty_entry", f"deleted entry: {reasons.get(gone)}")
    for entry_id, reason in expected.items():
        check(reasons.get(entry_id) == reason, f"{entry_id}: expected {reason}, got {reasons.get(entry_id)}")
    scenario.notes.append("reasons: " + ", ".join(sorted(set(reasons.values()))))
    check(scenario.counts()["rows"] == 2000, "not every valid entry was stored")
    return scenario.finish(recovery, expected_dead=len(cases) + 1)



def hostile_id():
    """An explicit id whose milliseconds overflow a timestamp, and the entries Redis gives the
    same milliseconds afterwards: dead letters, and the worker (two processes) keeps going."""
    scenario = Scenario("hostile-id")
    port = free_ports(21000, 3)
    wait_producer(scenario.produce(500, 5000, 21))
    redis("XADD", scenario.stream, "9223372036854776-0", "v", "1", "model", "m", "request_id", "hostile", "ts", "1", "prediction", "1")
    for number in range(20):
        redis("XADD", scenario.stream, "*", "v", "1", "model", "m", "request_id", f"after-{number}", "ts", "1", "prediction", "1")
    started = time.monotonic()
    pool = scenario.pool("pool", port, "hostile")
    recovery = scenario.wait_caught_up(started)
    check(pool.poll() is None, f"the pool exited {pool.returncode}")
    reasons = redis("XRANGE", scenario.stream + ":dead", "-", "+").splitlines()
    check(reasons.count("out_of_range: entry_id") == 21, f"dead-letter reasons: {sorted(set(reasons))[:5]}")
    check("Swift runtime failure" not in scenario.log("pool"), "a worker process crashed")
    scenario.notes.append("id 9223372036854776-0 and 20 later '*' entries (same milliseconds): out_of_range: entry_id, no crash")
    return scenario.finish(recovery, expected_dead=21)



def redis_oom():
    """Redis at maxmemory with noeviction: stored entries are acknowledged, dead letters wait
    (pending, visible on /readyz), a restarted worker reads although its group exists; once memory
    is free the waiting letters are written."""
    scenario = Scenario("redis-oom")
    base = f"http://127.0.0.1:{free_ports(23000)}"
    redis("XGROUP", "CREATE", scenario.stream, "adworker", "0", "MKSTREAM")
    wait_producer(scenario.produce(3000, 5000, 23))
    for number in range(20):
        redis("XADD", scenario.stream, "*", "v", "1", "model", "m", "request_id", f"poison-{number}", "ts", "1", "prediction", "{")
    # Below what Redis uses now, so that no write fits whatever it frees meanwhile (noeviction
    # evicts nothing: it refuses writes until usage is under the limit).
    used = int(re.search(r"used_memory:(\d+)", redis("INFO", "memory")).group(1))
    redis("CONFIG", "SET", "maxmemory", str(used // 2))
    try:
        check(redis("XADD", scenario.stream, "*", "v", "1").startswith("OOM"), "Redis accepted a write at maxmemory")
        # A stream and group that do not exist cannot be created at maxmemory: not ready, and
        # SIGTERM meanwhile ends the worker at once with 0.
        other = scenario.spawn("worker-nogroup", ["run", "--env-file", h.EMPTY_ENV, "--streams", "training", "--consumer-name", "ng",
                                                  "--http", base.removeprefix("http://")])
        wait_for(lambda: "cannot create consumer group" in http_get(base + "/readyz")[1], 15, "/readyz to name the group")
        code, took = scenario.stop(other, timeout=15)
        check(code == 0 and took < 3, f"SIGTERM while group creation failed: exit {code} after {took:.1f} s")
        scenario.processes.remove(other)
        scenario.notes.append(f"group creation refused: /readyz 503 naming it, SIGTERM exit 0 in {took:.1f} s")
        # The load generator says why its records failed.
        # OOM is retried (the XADD did not run) until the retry deadline, here 1 s.
        refused = subprocess.run([h.ADWORKER, "produce", "--env-file", h.EMPTY_ENV, "--stream", "training", "--count", "10",
                                  "--max-retry-seconds", "1"],
                                 env=scenario.environment(), capture_output=True, text=True)
        check(refused.returncode == 1 and "rejected (outOfMemory)" in refused.stdout and "OOM" in refused.stdout,
              f"adworker produce at maxmemory: exit {refused.returncode}, {refused.stdout.strip()[-200:]}")
        started = time.monotonic()
        scenario.worker("w", "--http", base.removeprefix("http://"), "--max-deliveries", "1000")
        wait_for(lambda: scenario.counts()["rows"] == 3000, 60, "the stored entries to be committed")
        wait_for(lambda: "out of memory" in http_get(base + "/readyz")[1], 10, "/readyz to name the full Redis")
        pending = pending_count(scenario.stream)
        check(pending == 20, f"{pending} entries pending at maxmemory, expected the 20 dead letters")
        scenario.notes.append(f"at maxmemory: 3000 rows acknowledged, {pending} dead letters pending, /readyz 503 out of memory")
    finally:
        redis("CONFIG", "SET", "maxmemory", "0")
    freed = time.monotonic()
    recovery = scenario.wait_caught_up(freed)
    wait_for(lambda: http_get(base + "/readyz")[0] == 200, 10, "/readyz to answer 200 once memory is free")
    reasons = set(redis("XRANGE", scenario.stream + ":dead", "-", "+").splitlines())
    check("invalid_json: prediction" in reasons, "the waiting letters lost their reason")
    scenario.notes.append(f"group existed: read at once ({time.monotonic() - started:.1f} s in all)")
    return scenario.finish(recovery, expected_dead=20)



def dead_letter_reply_lost():
    """The reply to MULTI {XADD dead letters; XACK} is lost three times (the MULTI ran): no letter
    is written twice."""
    scenario = Scenario("dead-letter-reply-lost")
    proxy = Proxy(int(os.environ.get("REDIS_PORT", "6379")), swallow_exec_replies=3)
    scenario.extra_env = {"REDIS_PORT": str(proxy.port)}
    redis("XGROUP", "CREATE", scenario.stream, "adworker", "0", "MKSTREAM")
    for number in range(600):
        fields = ["prediction", "{"] if number % 2 else ["prediction", "1"]
        redis("XADD", scenario.stream, "*", "v", "1", "model", "m", "request_id", f"r-{number}", "ts", "1", *fields)
    started = time.monotonic()
    scenario.worker("w", "--batch-size", "50")
    try:
        recovery = scenario.wait_caught_up(started)
        check(proxy.swallowed == 3, f"the proxy swallowed {proxy.swallowed} EXEC replies, expected 3")
    finally:
        proxy.close()
    scenario.notes.append("3 EXEC replies swallowed by a proxy after Redis ran them; 300 poison entries, 300 dead letters")
    return scenario.finish(recovery, expected_dead=300)

"""Servers that stop answering with their sockets open (a proxy frozen in between)."""
import os
import re
import time

from ..harness import Scenario, check, free_ports, http_get, wait_for, wait_producer
from ..proxy import Proxy


def half_open_postgres():
    """PostgreSQL stops answering with the socket open (no RST) while the worker waits for a
    reply: bounded by the reply timeout, logged, /readyz 503, prompt recovery, SIGTERM in budget."""
    scenario = Scenario("half-open-postgres")
    proxy = Proxy(int(os.environ.get("DATABASE_PORT", "5432")))
    scenario.extra_env = {"DATABASE_PORT": str(proxy.port), "ADWORKER_STATEMENT_TIMEOUT": "2"}
    base = f"http://127.0.0.1:{free_ports(22000)}"
    worker = scenario.worker("w", "--http", base.removeprefix("http://"), "--shutdown-timeout", "5")
    producer = scenario.produce(12000, 1000, 22)
    try:
        wait_for(lambda: http_get(base + "/readyz")[0] == 200, 20, "/readyz to answer 200")
        time.sleep(1)
        proxy.freeze()
        frozen = time.monotonic()
        # The sink's bound is the statement timeout + 5 s (the readiness probe's own is 2 s).
        wait_for(lambda: re.search(r"timeout=7\.0 seconds .*postgres did not answer in time", scenario.log("worker-w")), 20,
                 "the sink to give up the stalled reply")
        given_up = time.monotonic() - frozen
        wait_for(lambda: http_get(base + "/readyz")[0] == 503, 10, "/readyz to answer 503")
        time.sleep(3)
        rows_frozen = scenario.counts()["rows"]
        proxy.thaw()
        thawed = time.monotonic()
        wait_for(lambda: scenario.counts()["rows"] > rows_frozen, 15, "rows to arrive after the network healed")
        first_commit = time.monotonic() - thawed
        check(first_commit < 3, f"the first commit came {first_commit:.1f} s after the network healed")
        time.sleep(1)
        proxy.freeze()
        time.sleep(1)
        code, took = scenario.stop(worker, timeout=30)
        check(code == 0, f"worker exited {code} on SIGTERM while PostgreSQL was unreachable")
        check(took < 8, f"worker took {took:.1f} s to stop with a 5 s shutdown timeout")
        scenario.notes.append(
            f"sink's stalled reply given up after {given_up:.1f} s (statement timeout 2 s + 5 s), /readyz 503; first commit {first_commit:.2f} s after"
            f" healing; SIGTERM while frozen: exit 0 in {took:.1f} s")
    finally:
        proxy.thaw()
        proxy.close()
    scenario.extra_env = {}
    restarted = time.monotonic()
    scenario.worker()
    wait_producer(producer)
    return scenario.finish(scenario.wait_caught_up(restarted))



def half_open_redis():
    """Redis stops answering with the sockets open: every wait for a reply is bounded by the
    command timeout (10 s), the readiness probe's by 2 s; the worker says so, recovers at once when
    Redis answers again, and SIGTERM meanwhile ends within its shutdown budget (waits are cancellable)."""
    scenario = Scenario("half-open-redis")
    proxy = Proxy(int(os.environ.get("REDIS_PORT", "6379")))
    scenario.extra_env = {"REDIS_PORT": str(proxy.port)}
    base = f"http://127.0.0.1:{free_ports(26000)}"
    worker = scenario.worker("w", "--http", base.removeprefix("http://"), "--shutdown-timeout", "5")
    # The producer talks to Redis directly: only the worker's connections are frozen.
    scenario.extra_env = {}
    producer = scenario.produce(12000, 1000, 27)
    scenario.extra_env = {"REDIS_PORT": str(proxy.port)}
    try:
        wait_for(lambda: http_get(base + "/readyz")[0] == 200, 20, "/readyz to answer 200")
        time.sleep(1)
        proxy.freeze()
        frozen = time.monotonic()
        wait_for(lambda: http_get(base + "/readyz")[0] == 503, 10, "/readyz to answer 503 with Redis frozen")
        wait_for(lambda: "redis circuit open" in scenario.log("worker-w"), 20, "the worker to give up a stalled Redis reply")
        given_up = time.monotonic() - frozen
        rows_frozen = scenario.counts()["rows"]
        proxy.thaw()
        thawed = time.monotonic()
        wait_for(lambda: scenario.counts()["rows"] > rows_frozen, 20, "rows to arrive after Redis answered again")
        first_commit = time.monotonic() - thawed
        time.sleep(1)
        proxy.freeze()
        time.sleep(1)
        code, took = scenario.stop(worker, timeout=40)
        check(code == 0, f"worker exited {code} on SIGTERM while Redis was frozen")
        check(took < 8, f"worker took {took:.1f} s to stop with Redis frozen and a 5 s shutdown timeout")
        scenario.notes.append(f"stalled Redis replies given up within {given_up:.1f} s, /readyz 503; first commit {first_commit:.2f} s"
                              f" after Redis answered again; SIGTERM while frozen: exit 0 in {took:.1f} s")
    finally:
        proxy.thaw()
        proxy.close()
    scenario.extra_env = {}
    restarted = time.monotonic()
    scenario.worker()
    wait_producer(producer)
    return scenario.finish(scenario.wait_caught_up(restarted))

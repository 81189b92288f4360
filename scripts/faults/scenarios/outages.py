"""Workers killed, servers restarted or stopped, locks held: the pipeline waits them out and loses nothing."""
import os
import signal
import subprocess
import time

from .. import harness as h
from ..harness import (DATABASE, PG_ENV, PSQL, REDIS, ROOT, Scenario, check, cpu_seconds, pending_count, pg_ctl, process_gone, producer_summary,
                       psql, redis, redis_pid, redis_stopped, wait_for, wait_producer)


def pooled_scenario(name, pooled, tls=False):
    """With `pooled`, the scenario's adworker processes reach PostgreSQL through PgBouncer in
    transaction mode (scripts/pgbouncer.sh, port 6432; named NAME-pgbouncer); the harness's own
    counts go to PostgreSQL directly."""
    scenario = Scenario(name + ("-pgbouncer" if pooled else ""), tls=tls)
    if pooled:
        scenario.extra_env["DATABASE_PORT"] = "6432"
    return scenario


def kill9(tls=False, pooled=False):
    scenario = pooled_scenario("kill9", pooled, tls=tls)
    worker = scenario.worker()
    producer = scenario.produce(20000, 5000, 1)
    time.sleep(2)
    worker.kill()
    worker.wait()
    scenario.notes.append(f"killed with {scenario.counts()['pending']} entries pending")
    time.sleep(1)
    restarted = time.monotonic()
    scenario.worker()
    wait_producer(producer)
    return scenario.finish(scenario.wait_caught_up(restarted))



def postgres_restart(pooled=False):
    scenario = pooled_scenario("postgres-restart", pooled)
    scenario.worker()
    producer = scenario.produce(20000, 5000, 2)
    time.sleep(2)
    pg_ctl("restart")
    back = time.monotonic()
    wait_producer(producer)
    return scenario.finish(scenario.wait_caught_up(back))



def postgres_down_30s():
    scenario = Scenario("postgres-down-30s")
    worker = scenario.worker()
    producer = scenario.produce(40000, 1000, 3)
    time.sleep(3)
    pg_ctl("stop")
    cpu_before = cpu_seconds(worker.pid)
    pending_at_stop = pending_count(scenario.stream)
    time.sleep(30)
    cpu_during = cpu_seconds(worker.pid) - cpu_before
    pending_before_start = pending_count(scenario.stream)
    pg_ctl("start")
    back = time.monotonic()
    check(cpu_during < 3, f"worker used {cpu_during:.1f} s of CPU in 30 s of outage: it spins")
    check(pending_before_start >= pending_at_stop, "entries were acknowledged while the database was down")
    scenario.notes.append(f"worker CPU during outage {cpu_during:.2f} s; {pending_before_start} pending, unacknowledged, at restart")
    wait_producer(producer)
    return scenario.finish(scenario.wait_caught_up(back))



def redis_restart(tls=False):
    scenario = Scenario("redis-restart", tls=tls)
    scenario.worker()
    producer = scenario.produce(20000, 5000, 4)
    time.sleep(2)
    subprocess.run(REDIS + ["SHUTDOWN"], capture_output=True)
    wait_for(redis_stopped, 10, "Redis to stop")
    subprocess.run([os.path.join(ROOT, "scripts", "dev-services.sh")], check=True, capture_output=True)
    back = time.monotonic()
    # Sends while Redis was down fail and are counted by the producer; what Redis holds is the truth.
    wait_producer(producer, allow_failures=True)
    with open(os.path.join(h.LOG_DIR, f"{scenario.name}-produce.log")) as log:
        summary = [line for line in log if line.startswith("sent ")]
    scenario.notes.append("producer: " + (summary[-1].split(" in ")[0] if summary else "no summary") + " while Redis restarted")
    return scenario.finish(scenario.wait_caught_up(back))



def redis_kill9_always():
    """kill -9 of Redis under load with appendfsync always, restarted from its AOF: XADDs cut by
    the kill are looked up by their origin before they are sent again; every record is one row."""
    scenario = Scenario("redis-kill9-always")
    redis("CONFIG", "SET", "appendfsync", "always")
    scenario.worker()
    producer = scenario.produce(20000, 5000, 41)
    time.sleep(2)
    killed = redis_pid()
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: process_gone(killed), 10, "the killed Redis to be gone")
    subprocess.run([os.path.join(ROOT, "scripts", "dev-services.sh")], check=True, capture_output=True)  # back from its AOF, everysec again
    back = time.monotonic()
    wait_producer(producer)
    confirmed, failed = producer_summary(scenario)
    check((confirmed, failed) == (20000, 0), f"producer confirmed {confirmed}, failed {failed}")
    scenario.notes.append(f"Redis killed -9 with appendfsync always, restarted from its AOF: producer confirmed {confirmed} of 20000, failed {failed}")
    return scenario.finish(scenario.wait_caught_up(back), accepted=20000)



def redis_client_kill():
    """The producer's connection killed (CLIENT KILL) again and again under load: a pipeline cut
    after Redis ran part of it is looked up, and only what is missing is sent again."""
    scenario = Scenario("redis-client-kill")
    scenario.worker()
    producer = scenario.produce(40000, 20000, 42)
    time.sleep(0.5)
    kills = 0
    for _ in range(20):
        time.sleep(0.1)
        for line in redis("CLIENT", "LIST").splitlines():
            fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
            if fields.get("cmd") == "xadd":
                kills += int(redis("CLIENT", "KILL", "ID", fields["id"]) or 0)
    wait_producer(producer)
    confirmed, failed = producer_summary(scenario)
    check((confirmed, failed) == (40000, 0), f"producer confirmed {confirmed}, failed {failed}")
    check(kills > 0, "no producer connection was killed")
    scenario.notes.append(f"the producer's connection killed {kills} times under load (20k records/s): confirmed {confirmed}, failed {failed}")
    return scenario.finish(scenario.wait_caught_up(time.monotonic()), accepted=40000)



def sigterm_during_batch():
    scenario = Scenario("sigterm")
    worker = scenario.worker("w", "--batch-size", "5000", "--max-wait-ms", "2000")
    producer = scenario.produce(20000, 5000, 5)
    time.sleep(2.5)
    code, took = scenario.stop(worker)
    check(code == 0, f"worker exited {code} on SIGTERM")
    counts = scenario.counts()
    check(counts["pending"] == 0, f"{counts['pending']} entries pending after a clean stop")
    scenario.notes.append(f"exit 0 {took:.2f} s after SIGTERM with the batch in hand committed; {counts['rows']} rows")
    restarted = time.monotonic()
    scenario.worker()
    wait_producer(producer)
    return scenario.finish(scenario.wait_caught_up(restarted))



def sigterm_with_database_down():
    scenario = Scenario("sigterm-db-down")
    worker = scenario.worker("w", "--shutdown-timeout", "3")
    producer = scenario.produce(10000, 5000, 6)
    time.sleep(1)
    pg_ctl("stop")
    try:
        time.sleep(1)
        code, took = scenario.stop(worker)
        check(code == 0, f"worker exited {code} on SIGTERM with the database down")
        check(took < 4.5, f"worker took {took:.1f} s to stop with a 3 s shutdown timeout")
        pending = pending_count(scenario.stream)
        check(pending > 0, "nothing was left pending although the database was down")
        scenario.notes.append(f"exit 0 {took:.2f} s after SIGTERM, {pending} entries left pending")
    finally:
        pg_ctl("start")
    restarted = time.monotonic()
    scenario.worker()
    wait_producer(producer)
    return scenario.finish(scenario.wait_caught_up(restarted))



def two_workers_racing():
    scenario = Scenario("two-workers")
    first = scenario.worker("a")
    scenario.worker("b")
    producer = scenario.produce(20000, 5000, 7)
    time.sleep(2)
    first.kill()
    killed = time.monotonic()
    scenario.notes.append("two consumers on one group; a killed with -9 and not restarted, b claims what a held")
    wait_producer(producer)
    return scenario.finish(scenario.wait_caught_up(killed))



def slow_database():
    scenario = Scenario("slow-database")
    worker = scenario.worker()
    producer = scenario.produce(20000, 2000, 9)
    time.sleep(2)
    locker = subprocess.Popen(
        PSQL + ["-c", "BEGIN; LOCK TABLE inference_results IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(10); COMMIT;"],
        env=PG_ENV, stdout=subprocess.DEVNULL)
    wait_for(lambda: psql("SELECT count(*) FROM pg_locks WHERE relation = 'inference_results'::regclass"
                          " AND mode = 'AccessExclusiveLock' AND granted") == "1", 10, "the lock to be held")
    cpu_before = cpu_seconds(worker.pid)
    locker.wait(30)
    cpu_during = cpu_seconds(worker.pid) - cpu_before
    released = time.monotonic()
    check(cpu_during < 2, f"worker used {cpu_during:.1f} s of CPU while blocked on a lock: it spins")
    scenario.notes.append(f"lock held 10 s; worker CPU meanwhile {cpu_during:.2f} s")
    wait_producer(producer)
    return scenario.finish(scenario.wait_caught_up(released))



def async_commit_crash(pooled=False):
    """synchronous_commit = off as the database's default, and PostgreSQL crashing (immediate
    stop) under load: what was acknowledged must have been durable."""
    scenario = pooled_scenario("async-commit-crash", pooled)
    psql(f"ALTER DATABASE {DATABASE} SET synchronous_commit = off")
    try:
        scenario.worker()
        producer = scenario.produce(20000, 5000, 20)
        crashes = 0
        for _ in range(2):
            time.sleep(1.5)
            pg_ctl("stop", "-m", "immediate")
            crashes += 1
            pg_ctl("start")
        back = time.monotonic()
        wait_producer(producer)
        scenario.notes.append(f"database default synchronous_commit = off; {crashes} immediate stops under load")
        return scenario.finish(scenario.wait_caught_up(back))
    finally:
        psql(f"ALTER DATABASE {DATABASE} RESET synchronous_commit")



def same_consumer_name():
    """A second live process with the same consumer name is refused (exit 3) instead of
    re-reading the first one's entries."""
    scenario = Scenario("same-consumer-name")
    scenario.worker("dup")
    producer = scenario.produce(10000, 5000, 24)
    wait_for(lambda: redis("EXISTS", scenario.prefix + "consumer-lease:dup") == "1", 10, "the first worker to hold its lease")
    second = scenario.spawn("worker-dup-2", ["run", "--env-file", h.EMPTY_ENV, "--streams", "inference", "--consumer-name", "dup",
                                             "--http", "off"])
    code = second.wait(30)
    check(code == 3, f"the second worker with the same name exited {code}, expected 3")
    check("--consumer-name" in scenario.log("worker-dup-2"), "the refusal does not say what to change")
    scenario.notes.append("second process with the name exited 3 and named --consumer-name")
    wait_producer(producer)
    started = time.monotonic()
    return scenario.finish(scenario.wait_caught_up(started))

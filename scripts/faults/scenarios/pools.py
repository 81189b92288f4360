"""adworker run --processes N: the supervisor and its worker processes."""
import json
import os
import re
import signal
import socket
import subprocess
import time

from .. import harness as h
from ..harness import (Scenario, check, consecutive_free_ports, free_ports, held_entries, http_get, notify_listener, pending_by_consumer,
                       redis, stored_among, wait_for, wait_producer)


def pool():
    """adworker run --processes 2: kill -9 of a child under load, the aggregate endpoint, SIGTERM."""
    scenario = Scenario("pool")
    port = free_ports(19600, 3)
    base = f"http://127.0.0.1:{port}"
    supervisor = scenario.pool("supervisor", port, "pool", "--trim-interval", "0", "--claim-idle", "2", "--max-wait-ms", "50")
    producer = scenario.produce(20000, 5000, 12)
    wait_for(lambda: http_get(base + "/readyz")[0] == 200, 20, "the pool to be ready")
    time.sleep(1.5)
    child = subprocess.run(["pgrep", "-f", "consumer-name pool-p0"], capture_output=True, text=True).stdout.split()
    check(len(child) == 1, f"expected one process for child 0, found {child}")
    os.kill(int(child[0]), signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: http_get(base + "/readyz")[0] == 503, 5, "/readyz to report the killed process")
    wait_for(lambda: http_get(base + "/readyz")[0] == 200, 30, "the supervisor to restart the killed process")
    restarted = subprocess.run(["pgrep", "-f", "consumer-name pool-p0"], capture_output=True, text=True).stdout.split()
    check(len(restarted) == 1 and restarted != child, "child 0 was not restarted as a new process")
    wait_producer(producer)
    recovery = scenario.wait_caught_up(killed)

    # The aggregate equals the sum of what the processes report themselves (now quiescent).
    pooled = http_get(base + "/metrics")[1]
    def total(text, name):
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") and f'stream="{scenario.stream}"' in line)
    children = [http_get(f"http://127.0.0.1:{port + 1 + index}/metrics")[1] for index in range(2)]
    for name in ("adworker_rows_inserted_total", "adworker_entries_acknowledged_total", "adworker_batch_size_count"):
        check(total(pooled, name) == sum(total(text, name) for text in children) > 0, f"{name}: pool differs from the sum of its processes")
    status = json.loads(http_get(base + "/status")[1])
    check(sorted(c["consumer"] for c in status["consumers"]) == ["pool-p0-0", "pool-p1-0"], f"consumers: {status['consumers']}")

    code, took = scenario.stop(supervisor)
    check(code == 0, f"supervisor exited {code} on SIGTERM")
    check(not subprocess.run(["pgrep", "-f", "consumer-name pool-p"], capture_output=True).stdout, "children outlived the supervisor")

    # A supervisor killed with -9 cannot forward anything: its children must stop on their own.
    second = scenario.pool("supervisor-2", port, "pool")
    wait_for(lambda: http_get(base + "/readyz")[0] == 200, 20, "the second pool to be ready")
    second.kill()
    second.wait()
    wait_for(lambda: not subprocess.run(["pgrep", "-f", "consumer-name pool-p"], capture_output=True).stdout, 15,
             "the children of a killed supervisor to stop")
    scenario.notes.append(f"child 0 killed -9 and restarted; aggregate /metrics = sum of processes; SIGTERM: exit 0 in {took:.2f} s, "
                          "no child left; supervisor killed -9: children stopped by themselves")
    return scenario.finish(recovery)



def pool_crash_loop():
    """A child that cannot start (its port taken) is restarted with backoff, then the pool gives up."""
    scenario = Scenario("pool-crash-loop")
    port = free_ports(19800, 3)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port + 1))
    blocker.listen()
    try:
        started = time.monotonic()
        supervisor = scenario.pool("supervisor", port, "loop")
        code = supervisor.wait(90)
        took = time.monotonic() - started
    finally:
        blocker.close()
    log = open(os.path.join(h.LOG_DIR, "pool-crash-loop-supervisor.log")).read()
    check(code != 0, "the supervisor exited 0 although a child crash-looped")
    check("crash-looping" in log, "no clear error about the crash loop")
    check(not subprocess.run(["pgrep", "-f", "consumer-name loop-p"], capture_output=True).stdout, "children outlived the supervisor")
    scenario.notes.append(f"child 0 could not bind its port: gave up after {took:.1f} s with exit {code}")
    redis("XADD", scenario.stream, "*", "v", "1", "model", "m", "request_id", "r", "ts", "1", "prediction", "1")
    scenario.worker()
    return scenario.finish(scenario.wait_caught_up(time.monotonic()))



def pool_frozen_child():
    """A pool of three worker processes, one frozen (SIGSTOP) under load: the pool's /healthz answers
    503 naming it, every answer well within a 1 s probe timeout, and the watchdog goes unfed; on
    SIGTERM the others commit their batches, the frozen one is killed (SIGKILL) past the shutdown
    grace with a warning, exit 0; what it held stays pending and the next run stores it."""
    scenario = Scenario("pool-frozen-child")
    path = os.path.join(h.LOG_DIR, "frozen-notify.sock")
    notify, messages, receive = notify_listener(path)

    scenario.extra_env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="2000000")
    port = consecutive_free_ports(4, 7200)
    base = f"http://127.0.0.1:{port}"
    name = f"frozen{os.getpid()}"
    shutdown_timeout, produced = 5, 20000
    supervisor = scenario.spawn("supervisor", [
        "run", "--env-file", h.EMPTY_ENV, "--streams", "inference", "--processes", "3", "--http", f"127.0.0.1:{port}",
        "--consumer-name", name, "--shutdown-timeout", str(shutdown_timeout), "--trim-interval", "0", "--max-wait-ms", "50"])
    wait_for(lambda: http_get(base + "/readyz")[0] == 200, 30, "the pool to be ready")
    wait_for(lambda: "READY=1" in messages + receive(0.5), 10, "READY=1 on the notify socket")
    healthy = receive(2)
    check("WATCHDOG=1" in healthy, f"no watchdog ping while healthy: {healthy}")
    producer = scenario.produce(produced, 5000, 61)
    time.sleep(1.5)
    child = subprocess.run(["pgrep", "-f", f"consumer-name {name}-p0"], capture_output=True, text=True).stdout.split()
    check(len(child) == 1, f"expected one process for child 0, found {child}")
    os.kill(int(child[0]), signal.SIGSTOP)
    frozen = time.monotonic()
    answers = []

    def reported():
        asked = time.monotonic()
        status, body = http_get(base + "/healthz")
        answers.append(time.monotonic() - asked)
        return status == 503 and body

    wait_for(reported, 10, "/healthz to report the frozen process")
    detected = time.monotonic() - frozen
    status, body = http_get(base + "/healthz")
    check(status == 503 and f"worker process 0 (pid {child[0]}) is not answering" in body, f"/healthz does not name it: {status} {body}")
    check(max(answers) < 1.0, f"/healthz took {max(answers):.2f} s with a process frozen")
    asked = time.monotonic()
    status, body = http_get(base + "/readyz")
    readyz = time.monotonic() - asked
    check(status == 503 and "worker process 0: no answer" in body and readyz < 1.0, f"/readyz: {status} {body} in {readyz:.2f} s")
    receive(0.3)
    while_frozen = receive(2.5)
    check("WATCHDOG=1" not in while_frozen, f"watchdog fed while a process is frozen: {while_frozen}")
    check(any(message.startswith("STATUS=stuck: worker process 0") for message in messages), "no STATUS=stuck line naming it")
    wait_producer(producer)

    # The other two store everything but what the frozen process holds. Some of what it holds may
    # already be rows: frozen between its COMMIT and its XACK, those stay pending (the next run
    # finds them stored and acknowledges them), so they count once, as rows.
    def unaccounted():
        counts = scenario.counts()
        held = held_entries(scenario.stream, f"{name}-p0-")
        stored = stored_among(held)
        missing = counts["entries"] - (counts["rows"] + counts["dead"] + len(held) - stored)
        return counts, held, stored, missing

    def only_frozen_pending():
        counts, held, _, missing = unaccounted()
        return counts["entries"] == produced and counts["pending"] == len(held) and missing == 0
    try:
        wait_for(only_frozen_pending, 60, "the other processes to store the rest")
    except h.Failure as failure:
        counts, held, stored, missing = unaccounted()
        raise h.Failure(f"{failure}: {counts}, pending by consumer {pending_by_consumer(scenario.stream)}, "
                        f"{len(held)} held by the frozen process ({stored} of them stored), {missing} unaccounted")
    counts, held, stored, _ = unaccounted()

    code, took = scenario.stop(supervisor, timeout=shutdown_timeout + 20)
    check(code == 0, f"supervisor exited {code} on SIGTERM with a frozen process")
    check(took < shutdown_timeout + 2 + 3, f"supervisor took {took:.1f} s to stop with a {shutdown_timeout} s shutdown timeout")
    log = scenario.log("supervisor")
    check(re.search(r"worker process 0 did not stop within .* killed with SIGKILL", log), "no warning naming the killed process")
    check(not subprocess.run(["pgrep", "-f", f"consumer-name {name}-p"], capture_output=True).stdout, "children outlived the supervisor")
    after, _, _, missing = unaccounted()
    check(after["pending"] == len(held) and missing == 0, f"after the stop: {after}, {missing} unaccounted; the frozen process held {len(held)} ({stored} stored)")
    notify.close()
    scenario.notes.append(f"child 0 frozen: /healthz 503 naming it after {detected:.1f} s, slowest answer {max(answers) * 1000:.0f} ms, /readyz {readyz * 1000:.0f} ms, "
                          f"watchdog unfed; SIGTERM: exit 0 in {took:.1f} s, it was killed holding {len(held)} entries "
                          f"({stored} committed, not yet acknowledged), all settled by the next run")
    restarted = time.monotonic()
    scenario.worker("w")
    return scenario.finish(scenario.wait_caught_up(restarted), accepted=produced)



def stray_signals():
    """SIGHUP, SIGUSR1 and SIGUSR2 to a worker under load, and to a pool's supervisor and one of its
    processes: each is logged and ignored; nothing is lost, and SIGTERM still stops them with exit 0."""
    scenario = Scenario("stray-signals")
    worker = scenario.worker("w")
    port = consecutive_free_ports(3, 7200)
    name = f"strays{os.getpid()}"
    supervisor = scenario.pool("supervisor", port, name, "--trim-interval", "0", "--claim-idle", "2", "--max-wait-ms", "50")
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "the pool to be ready")
    child = subprocess.run(["pgrep", "-f", f"consumer-name {name}-p0"], capture_output=True, text=True).stdout.split()
    check(len(child) == 1, f"expected one process for child 0, found {child}")
    started = time.monotonic()
    producer = scenario.produce(20000, 5000, 62)
    time.sleep(1)
    for number in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        for pid in (worker.pid, supervisor.pid, int(child[0])):
            os.kill(pid, number)
        wait_for(lambda: scenario.log("worker-w").count(f"{number.name} ignored") >= 1
                 and scenario.log("supervisor").count(f"{number.name} ignored") >= 2, 10, f"{number.name} to be logged")
    check(worker.poll() is None and supervisor.poll() is None, f"exit {worker.poll()} (worker), {supervisor.poll()} (supervisor)")
    now = subprocess.run(["pgrep", "-f", f"consumer-name {name}-p0"], capture_output=True, text=True).stdout.split()
    check(now == child, f"child 0 was {child}, now {now}")
    for number in ("SIGHUP", "SIGUSR1", "SIGUSR2"):
        check(scenario.log("worker-w").count(f"{number} ignored") == 1, f"the worker did not log {number} once")
        # The supervisor and its process 0 share the log.
        check(scenario.log("supervisor").count(f"{number} ignored") == 2, f"the pool did not log {number} twice")
    wait_producer(producer)
    recovery = scenario.wait_caught_up(started)
    for process in (worker, supervisor):
        code, _ = scenario.stop(process)
        check(code == 0, f"{process.args[1:3]} exited {code} on SIGTERM after the stray signals")
    scenario.notes.append("SIGHUP, SIGUSR1, SIGUSR2 to a worker, a supervisor and a pool process under load: logged, ignored, SIGTERM exit 0")
    return scenario.finish(recovery)

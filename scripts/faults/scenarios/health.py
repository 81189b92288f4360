"""What operators see: metrics, /readyz, /healthz, status, the watchdog, under load and under faults."""
import json
import os
import socket
import subprocess
import threading
import time

from .. import harness as h
from ..harness import (PG_ENV, PSQL, ROOT, Scenario, check, free_ports, http_get, metric_value, notify_listener, pending_count, pg_ctl,
                       psql, redis, wait_for, wait_producer)


def observability():
    from prometheus_client.parser import text_string_to_metric_families

    scenario = Scenario("observability")
    base = f"http://127.0.0.1:{free_ports(19000)}"
    worker = scenario.worker("w", "--http", base.removeprefix("http://"))
    wait_producer(scenario.produce(5000, 5000, 10))
    redis("XADD", scenario.stream, "*", "v", "1", "model", "m", "request_id", "bad", "ts", "1", "prediction", "{")
    started = time.monotonic()
    recovery = scenario.wait_caught_up(started)

    def status_exit():
        return subprocess.run([h.ADWORKER, "status", "--env-file", h.EMPTY_ENV, "--url", base], env=scenario.environment(),
                              capture_output=True).returncode

    wait_for(lambda: http_get(base + "/readyz")[0] == 200, 10, "/readyz to answer 200")
    check(status_exit() == 0, "adworker status is not 0 with a healthy daemon")
    families = {family.name: family for family in text_string_to_metric_families(http_get(base + "/metrics")[1])}

    def sample(name, **labels):
        for family in families.values():
            for found in family.samples:
                if found.name == name and all(found.labels.get(key) == value for key, value in labels.items()):
                    return found.value
        return None

    check(sample("adworker_rows_inserted_total", stream=scenario.stream) == 5000, "rows inserted metric")
    check(sample("adworker_dead_letters_total", stream=scenario.stream, reason="invalid_json") == 1, "dead letters metric")
    check(sample("adworker_end_to_end_latency_seconds_count", stream=scenario.stream) == 5001, "latency histogram count")
    status = json.loads(http_get(base + "/status")[1])
    figures = next(stream for stream in status["streams"] if stream["stream"] == scenario.stream)
    check(figures["totalRows"] == 5000 and figures["totalDeadLetters"] == 1, f"/status totals: {figures}")
    # A busy worker's exposition passes promtool's lint (HELP on every family, names, types).
    lint = subprocess.run([os.path.join(ROOT, "scripts", "check-monitoring.sh"), base + "/metrics"], capture_output=True, text=True)
    check(lint.returncode == 0, f"check-monitoring.sh on /metrics: {lint.stdout[-600:]}{lint.stderr[-600:]}")

    # The page's charts, in a real browser, once the history has a point with the rows in it.
    def history_has_rows():
        points = json.loads(http_get(base + "/status")[1]).get("history", {}).get("points", [])
        return any(point["streams"].get(scenario.stream, {}).get("rowsPerSecond", 0) > 0 for point in points)
    wait_for(history_has_rows, 20, "a history point with the rows")
    screenshot = os.path.join(h.LOG_DIR, "status-page.png")
    page = subprocess.run([os.path.join(ROOT, "scripts", "check-status-page.sh"), base + "/", screenshot,
                           "--expect-streams", scenario.stream, "--expect-rows"], capture_output=True, text=True)
    check(page.returncode == 0, f"check-status-page.sh: {page.stdout[-800:]}{page.stderr[-800:]}")
    scenario.notes.append(f"status page checked in chromium ({screenshot})")

    pg_ctl("stop")
    try:
        wait_for(lambda: http_get(base + "/readyz")[0] == 503, 20, "/readyz to answer 503 with PostgreSQL stopped")
        reasons = json.loads(http_get(base + "/readyz")[1])["reasons"]
        check(any("postgres" in reason for reason in reasons), f"/readyz reasons: {reasons}")
        check(status_exit() == 1, "adworker status is not 1 (degraded) with PostgreSQL stopped")
    finally:
        pg_ctl("start")
    wait_for(lambda: http_get(base + "/readyz")[0] == 200, 30, "/readyz to answer 200 again")
    scenario.stop(worker)
    check(status_exit() == 2, "adworker status is not 2 with the daemon stopped")
    scenario.notes.append(f"{len(families)} metric families parsed by prometheus_client; /readyz 200 → 503 → 200; status exits 0, 1, 2")
    return scenario.finish(recovery, expected_dead=1)



def readyz_under_load():
    """200 clients polling /readyz cost the servers nothing extra, and get no false 503."""
    scenario = Scenario("readyz-load")
    base = f"http://127.0.0.1:{free_ports(24000)}"
    scenario.worker("w", "--http", base.removeprefix("http://"))
    producer = scenario.produce(20000, 4000, 25)
    wait_for(lambda: http_get(base + "/readyz")[0] == 200, 20, "/readyz to answer 200")
    answers, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            code, body = http_get(base + "/readyz")
            answers.append(code if code == 200 else f"{code} {body[:300]}")

    pollers = [threading.Thread(target=poll, daemon=True) for _ in range(200)]
    for poller in pollers:
        poller.start()
    backends = []
    for _ in range(20):
        time.sleep(0.25)
        # This worker's database only: PgBouncer keeps idle server sessions of earlier runs (named
        # adworker too) for up to 10 minutes, on its own databases.
        backends.append(int(psql("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'adworker%' AND datname = current_database()")))
    stop.set()
    for poller in pollers:
        poller.join(10)
    wait_producer(producer)
    started = time.monotonic()
    not_ok = [answer for answer in answers if answer != 200]
    check(max(backends) <= 4, f"{max(backends)} PostgreSQL backends while /readyz was polled")
    check(not not_ok, f"{len(not_ok)} of {len(answers)} /readyz answers were not 200: {sorted(set(map(str, not_ok)))}")
    scenario.notes.append(f"{len(answers)} /readyz answers from 200 pollers, all 200; PostgreSQL backends at most {max(backends)}")
    return scenario.finish(scenario.wait_caught_up(started))



def idle_http_clients():
    """300 idle and 100 slow (never finishing a header) clients on the endpoint: closed after the
    idle timeout, never more than the connection limit held, the pipeline keeps flowing."""
    scenario = Scenario("idle-http-clients")
    port = free_ports(25000)
    worker = scenario.worker("w", "--http", f"127.0.0.1:{port}")
    producer = scenario.produce(20000, 2000, 26)
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 20, "/readyz to answer 200")
    # 250 idle and 50 that never finish their header: more than the connection limit (64) and
    # within it plus the listen backlog (256), so every connect completes.
    clients = []
    for number in range(300):
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        if number >= 250:
            client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        clients.append(client)
    opened = time.monotonic()
    descriptors = []
    rows_before = scenario.counts()["rows"]
    while time.monotonic() - opened < 14:
        descriptors.append(len(os.listdir(f"/proc/{worker.pid}/fd")))
        time.sleep(0.5)
    rows_during = scenario.counts()["rows"] - rows_before
    closed_by_server = 0
    for client in clients:
        client.setblocking(False)
        try:
            closed_by_server += client.recv(1) == b""
        except OSError:
            pass
        client.close()
    wait_producer(producer)
    started = time.monotonic()
    baseline = descriptors[0]
    check(max(descriptors) < 64 + 40, f"the worker held up to {max(descriptors)} descriptors with 400 slow clients")
    check(rows_during > 0, "no rows were stored while slow clients held the endpoint")
    check(closed_by_server >= 60, f"only {closed_by_server} idle connections were closed by the server after 14 s")
    scenario.notes.append(f"300 idle/slow clients: {closed_by_server} closed by the idle timeout within 14 s; worker descriptors at most"
                          f" {max(descriptors)} (baseline {baseline}); {rows_during} rows meanwhile")
    return scenario.finish(scenario.wait_caught_up(started))



def permanent_postgres():
    """The table renamed away under load (42P01): retried with nothing acknowledged, and
    unmistakable: /readyz names the fix, status is degraded, a gauge by kind, a bounded error log."""
    scenario = Scenario("permanent-postgres")
    base = f"http://127.0.0.1:{free_ports(20000)}"
    scenario.worker("w", "--http", base.removeprefix("http://"))
    wait_producer(scenario.produce(2000, 4000, 41))
    scenario.wait_caught_up(time.monotonic())
    psql("ALTER TABLE inference_results RENAME TO inference_results_away")
    try:
        wait_producer(scenario.produce(2000, 4000, 42))

        def refused():
            code, body = http_get(base + "/readyz")
            return code == 503 and "sqlstate 42P01" in body and "run adworker migrate" in body
        wait_for(refused, 30, "/readyz to name the fix for the missing table")
        refused_at = time.monotonic()
        _, metrics = http_get(base + "/metrics")
        check(metric_value(metrics, "adworker_permanent_errors", target="postgres", kind="42P01") == 1,
              "adworker_permanent_errors{target=postgres,kind=42P01} is not 1")
        status = subprocess.run([h.ADWORKER, "status", "--env-file", h.EMPTY_ENV, "--url", base], env=scenario.environment(),
                                capture_output=True, text=True)
        check(status.returncode == 1 and "run adworker migrate" in status.stdout,
              f"status exit {status.returncode} without the fix: {status.stdout[-400:]}")
        check(pending_count(scenario.stream) > 0, "entries were acknowledged while the table was missing")
        time.sleep(max(0, 12 - (time.monotonic() - refused_at)))
        refusals = scenario.log("worker-w").count("refuses the worker")
        # Two sinks, each at most once per 30 s, plus the first line each: a bounded rate, not one per retry.
        check(1 <= refusals <= 4, f"{refusals} error lines for the refusal in about 12 s")
        scenario.notes.append(f"{refusals} error lines in 12 s")
    finally:
        psql("ALTER TABLE inference_results_away RENAME TO inference_results")
    since = time.monotonic()
    recovery = scenario.wait_caught_up(since)
    wait_for(lambda: http_get(base + "/readyz")[0] == 200, 30, "/readyz to recover once the table is back")
    _, metrics = http_get(base + "/metrics")
    check(metric_value(metrics, "adworker_permanent_errors", target="postgres", kind="42P01") == 0,
          "adworker_permanent_errors stays 1 after recovery")
    return scenario.finish(recovery)



def stuck_worker():
    """A COPY blocked on a lock (no error, no circuit): /healthz 503 and no watchdog pings after
    the stall timeout; both recover when the lock goes. The notify socket is read as systemd would."""
    scenario = Scenario("stuck-worker")
    path = os.path.join(h.LOG_DIR, "notify.sock")
    notify, messages, receive = notify_listener(path)

    scenario.extra_env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="2000000", ADWORKER_STALL_TIMEOUT="3",
                              ADWORKER_STATEMENT_TIMEOUT="600")
    base = f"http://127.0.0.1:{free_ports(21000)}"
    worker = scenario.worker("w", "--http", base.removeprefix("http://"))
    wait_for(lambda: "READY=1" in messages + receive(0.5), 30, "READY=1 on the notify socket")
    check("WATCHDOG=1" in receive(2), "no watchdog ping while healthy")
    lock = subprocess.Popen(PSQL, env=PG_ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        lock.stdin.write("BEGIN; LOCK TABLE inference_results IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n")
        lock.stdin.flush()
        check(lock.stdout.readline().strip() in ("BEGIN", "locked"), "psql did not take the lock")
        wait_producer(scenario.produce(500, 1000, 43))
        wait_for(lambda: http_get(base + "/healthz")[0] == 503, 30, "/healthz to fail while the COPY is stuck")
        _, body = http_get(base + "/healthz")
        check("no batch committed" in body, f"/healthz does not say why: {body}")
        receive(0.3)
        stuck = receive(2.5)
        check("WATCHDOG=1" not in stuck, f"watchdog fed while stuck: {stuck}")
        check(any(message.startswith("STATUS=stuck: ") for message in messages), "no STATUS=stuck line")
    finally:
        lock.stdin.write("COMMIT;\n")
        lock.stdin.close()
        lock.wait(10)
    since = time.monotonic()
    recovery = scenario.wait_caught_up(since)
    wait_for(lambda: http_get(base + "/healthz")[0] == 200, 30, "/healthz to recover")
    check("WATCHDOG=1" in receive(2), "watchdog pings did not resume")
    scenario.stop(worker)
    check("STOPPING=1" in receive(0.5) + messages, "no STOPPING=1 at shutdown")
    notify.close()
    return scenario.finish(recovery)

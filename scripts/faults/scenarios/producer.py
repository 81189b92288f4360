"""The producer library inside the example API service (Examples/AdServingAPI)."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from .. import harness as h
from ..harness import (REDIS, ROOT, SPAWNED, Scenario, check, consecutive_free_ports, entries_added, free_ports, http_get, redis,
                       redis_pid, wait_for)


def api_spool_restart():
    """The example API service with a spool and a 1,000-record memory buffer: Redis goes away, the
    service is killed with -9 holding fewer records than its buffer would (all on disk), more
    come than the buffer holds, it is restarted gracefully before Redis is back; every request's
    records end as rows, none twice."""
    from concurrent.futures import ThreadPoolExecutor

    scenario = Scenario("api-spool-restart")
    example = os.path.join(os.path.dirname(h.ADWORKER), "AdServingExample")
    port = free_ports(18300)
    spool = tempfile.mkdtemp(prefix="adworker-spool-")
    log = open(os.path.join(h.LOG_DIR, "api-spool-restart-example.log"), "ab")
    environment = dict(scenario.environment(), EXAMPLE_HTTP=f"127.0.0.1:{port}", EXAMPLE_SPOOL_DIR=spool, EXAMPLE_MAX_BUFFERED="1000")

    def start():
        service = subprocess.Popen([example], env=environment, stdout=log, stderr=subprocess.STDOUT)
        scenario.processes.append(service)
        SPAWNED.append(service)
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/metrics")[0] == 200, 20, "the example service to start")
        return service

    def requests(numbers):
        def one(number):
            body = json.dumps({"model": "ctr-v3", "request_id": f"spool-{number}", "features": {"slot": number % 7}}).encode()
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body), timeout=10) as response:
                return response.status
        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, numbers))

    def metric(name):
        text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name) and not line.startswith("#"))

    service = start()
    statuses = requests(range(0, 300))
    subprocess.run(REDIS + ["SHUTDOWN"], capture_output=True)
    # Fewer records than the memory buffer holds: while Redis is away they are written through to
    # the spool all the same, so a kill -9 loses none of them (before, all 500 were only in memory).
    statuses += requests(range(300, 550))
    check(metric("adtelemetry_spooled_records") == 500, f"{metric('adtelemetry_spooled_records'):.0f} of 500 records on disk while Redis is away")
    service.kill()
    service.wait()
    service = start()
    wait_for(lambda: metric("adtelemetry_spooled_records") > 0, 10, "the service restarted after kill -9 to count its spool")
    after_crash = metric("adtelemetry_spooled_records")
    check(after_crash == 500, f"{after_crash:.0f} of 500 spooled records left after kill -9")
    statuses += requests(range(550, 2300))
    spooled_while_down = metric("adtelemetry_spooled_records")
    check(spooled_while_down > 0, "nothing was spooled past the memory buffer")
    code, took = scenario.stop(service)
    check(code == 0, f"the service exited {code} on SIGTERM")
    # Everything it holds is on disk: a stop does not wait out the shutdown grace for Redis.
    check(took < 5, f"the service took {took:.1f} s to stop with Redis away")
    service = start()
    wait_for(lambda: metric("adtelemetry_spooled_records") > 0, 10, "the restarted service to count its spool")
    spooled_at_restart = metric("adtelemetry_spooled_records")
    statuses += requests(range(2300, 2500))
    subprocess.run([os.path.join(ROOT, "scripts", "dev-services.sh")], check=True, capture_output=True)
    back = time.monotonic()
    wait_for(lambda: metric("adtelemetry_spooled_records") == 0 and metric("adtelemetry_buffered") == 0, 60, "the spool to be sent")
    sent, failed, dropped = (metric(name) for name in ("adtelemetry_sent_total", "adtelemetry_failed_total", "adtelemetry_dropped_total"))
    check(all(status == 200 for status in statuses), "a request failed")
    code, _ = scenario.stop(service)
    check(code == 0, f"the restarted service exited {code} on SIGTERM")
    training = entries_added(scenario.prefix + "training")
    check(training == len(statuses), f"{len(statuses)} requests but {training} training entries")
    redis("DEL", scenario.prefix + "training")
    shutil.rmtree(spool, ignore_errors=True)
    scenario.notes.append(f"{len(statuses)} requests; Redis away: 500 records written through to the spool, all there after kill -9, "
                          f"{spooled_while_down:.0f} spooled in all; "
                          f"service restarted ({took:.1f} s to stop) with {spooled_at_restart:.0f} on disk; after Redis came back the restarted "
                          f"service sent {sent:.0f}, failed {failed:.0f}, dropped {dropped:.0f}")
    scenario.worker("w")
    return scenario.finish(scenario.wait_caught_up(back), accepted=len(statuses))



def api_not_blocked():
    """The example API service (Examples/AdServingAPI) under concurrent requests while Redis hangs
    (SIGSTOP for 3 s) and then restarts: no request waits for Redis, and every record is either
    sent, or counted as failed or dropped in the producer's metrics."""
    from concurrent.futures import ThreadPoolExecutor

    scenario = Scenario("api-not-blocked")
    example = os.path.join(os.path.dirname(h.ADWORKER), "AdServingExample")
    port = free_ports(18100)
    log = open(os.path.join(h.LOG_DIR, "api-not-blocked-example.log"), "ab")
    service = subprocess.Popen([example], env=dict(scenario.environment(), EXAMPLE_HTTP=f"127.0.0.1:{port}"), stdout=log, stderr=subprocess.STDOUT)
    scenario.processes.append(service)
    SPAWNED.append(service)
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/metrics")[0] == 200, 20, "the example service to start")

    def request(number):
        body = json.dumps({"model": "ctr-v3", "request_id": f"api-{number}", "features": {"slot": number % 7, "bid": 0.42}}).encode()
        started = time.monotonic()
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body), timeout=10) as response:
            answer = json.loads(response.read())
            return response.status, time.monotonic() - started, answer["telemetry"]

    results = []
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(request, number) for number in range(300)]
        time.sleep(0.3)
        hung = redis_pid()
        os.kill(hung, signal.SIGSTOP)  # Redis hangs: connections open, no answers
        futures += [pool.submit(request, number) for number in range(300, 1500)]
        time.sleep(3)
        os.kill(hung, signal.SIGCONT)
        subprocess.run(REDIS + ["SHUTDOWN"], capture_output=True)  # then Redis goes away and comes back
        futures += [pool.submit(request, number) for number in range(1500, 2500)]
        subprocess.run([os.path.join(ROOT, "scripts", "dev-services.sh")], check=True, capture_output=True)
        added_before_return = entries_added(scenario.stream)
        futures += [pool.submit(request, number) for number in range(2500, 3000)]
        results = [future.result() for future in futures]
    latencies = sorted(latency for _, latency, _ in results)
    check(all(status == 200 for status, _, _ in results), "a request failed")
    p99, worst = latencies[int(len(latencies) * 0.99)], latencies[-1]
    check(worst < 1.0, f"a request took {worst:.2f} s: the handler waited for Redis")

    def metric(name, text):
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name) and not line.startswith("#"))
    def settled():
        text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
        return metric("adtelemetry_buffered", text) == 0 and text
    wait_for(settled, 30, "the producer's buffer to drain")
    text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    sent, failed, dropped = (metric(name, text) for name in ("adtelemetry_sent_total", "adtelemetry_failed_total", "adtelemetry_dropped_total"))
    check(sent + failed + dropped == 2 * len(results), f"records: sent {sent} + failed {failed} + dropped {dropped} != {2 * len(results)}")
    added = entries_added(scenario.stream)
    check(added > added_before_return, "no record reached Redis after it came back")
    check(added + int(redis("XLEN", scenario.prefix + "training")) >= sent, "sent records missing from Redis")
    scenario.notes.append(f"{len(results)} requests, 16 at a time, through a 3 s Redis hang and a restart: all 200, "
                          f"p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms; records sent {sent:.0f}, failed (unconfirmed) {failed:.0f}, dropped {dropped:.0f}")
    service.send_signal(signal.SIGTERM)
    service.wait(20)
    scenario.worker("w")
    recovery = scenario.wait_caught_up(time.monotonic())
    training = entries_added(scenario.prefix + "training")
    check(training == len(results), f"{len(results)} requests but {training} training entries")
    redis("DEL", scenario.prefix + "training")
    return scenario.finish(recovery, accepted=len(results))



def example_refusals():
    """The example API service with its port taken, then with its spool refused (a file where its
    directory should be): one clear line and exit 1 each time; no crash, no backtrace, no second error."""
    scenario = Scenario("example-refusals")
    example = os.path.join(os.path.dirname(h.ADWORKER), "AdServingExample")
    port = consecutive_free_ports(2, 7200)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    not_a_directory = os.path.join(h.LOG_DIR, "not-a-directory")
    open(not_a_directory, "w").close()
    cases = {"port taken": ({"EXAMPLE_HTTP": f"127.0.0.1:{port}"}, "Address already in use"),
             "spool refused": ({"EXAMPLE_HTTP": f"127.0.0.1:{port + 1}", "EXAMPLE_SPOOL_DIR": not_a_directory + "/spool"}, "spool")}
    try:
        for case, (settings, cause) in cases.items():
            result = subprocess.run([example], env=dict(scenario.environment(), **settings), capture_output=True, text=True, timeout=30)
            output = result.stdout + result.stderr
            errors = [line for line in output.splitlines() if re.search(r" (error|critical) ", line)]
            check(result.returncode == 1, f"{case}: exit {result.returncode}, expected 1: {output[-600:]}")
            check("Fatal error" not in output and "Backtrace" not in output and "Current stack trace" not in output,
                  f"{case}: a crash: {output[-600:]}")
            check(len(errors) == 1 and cause in errors[0], f"{case}: expected one error line naming '{cause}': {errors}")
            scenario.notes.append(f"{case}: exit 1, '{errors[0].split(': ', 1)[-1][:70]}'")
    finally:
        blocker.close()
    return scenario.finish(0)

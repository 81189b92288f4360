"""Credentials and privileges: the documented ACL and role, a wrong password."""
import os
import subprocess
import time

from ..harness import AS_ROOT, DATABASE, PG_ENV, PSQL, REDIS, ROOT, Scenario, check, consecutive_free_ports, redis, wait_for, wait_producer


def least_privilege():
    """The ACL lines and the role script from deploy/, exactly as documented (key patterns moved to
    this scenario's prefix): the worker works with its user and role, the producer user can only
    append, the worker role can only insert and read."""
    scenario = Scenario("least-privilege")
    acl = open(os.path.join(ROOT, "deploy", "redis", "users.acl")).read().replace("~adserving:", "~" + scenario.prefix)
    users = {}
    for line in acl.splitlines():
        if line.startswith("user "):
            name = line.split()[1]
            redis("ACL", "SETUSER", *line.split()[1:])
            users[name] = next(part[1:] for part in line.split() if part.startswith(">"))
    role, password = f"adworker_worker_{os.getpid()}", "worker-secret"
    subprocess.run(AS_ROOT + ["su", "postgres", "-c", f"psql -q -X -v ON_ERROR_STOP=1 -d {DATABASE} -v role={role} "
                              f"-v password={password} -v database={DATABASE} -f {ROOT}/deploy/postgres/worker-role.sql"],
                   check=True, capture_output=True)
    worker_env = dict(REDIS_USERNAME="adworker-worker", REDIS_PASSWORD=users["adworker-worker"],
                      DATABASE_USER=role, DATABASE_PASSWORD=password)
    producer_env = dict(REDIS_USERNAME="adworker-producer", REDIS_PASSWORD=users["adworker-producer"])
    original = scenario.environment

    try:
        scenario.environment = lambda: dict(original(), **worker_env)
        worker = scenario.worker("w", "--trim-interval", "1", "--claim-idle", "1")
        scenario.environment = lambda: dict(original(), **producer_env)
        producer = scenario.produce(10000, 5000, 11)
        time.sleep(1)
        worker.kill()
        worker.wait()
        scenario.environment = lambda: dict(original(), **worker_env)
        restarted = time.monotonic()
        scenario.worker("w", "--trim-interval", "1", "--claim-idle", "1")
        wait_producer(producer)
        redis("XADD", scenario.stream, "*", "v", "1", "model", "m", "request_id", "bad", "ts", "1", "prediction", "{")
        # Acknowledged entries within 10 s of the newest stay (for producers looking up a cut
        # pipeline): one entry 20 s later than the rest leaves it alone in the stream.
        newest_ms = int(redis("XREVRANGE", scenario.stream, "+", "-", "COUNT", "1").split("-")[0])
        redis("XADD", scenario.stream, f"{newest_ms + 20000}-0", "v", "1", "model", "m", "request_id", "later", "ts", "1", "prediction", "1")
        recovery = scenario.wait_caught_up(restarted)
        # The trim script (EVAL of XINFO, XPENDING, XTRIM) runs under the worker's ACL too.
        wait_for(lambda: int(redis("XLEN", scenario.stream)) == 1, 30, "the acknowledged stream to be trimmed")

        as_producer = REDIS + ["--user", "adworker-producer", "--pass", users["adworker-producer"], "--no-auth-warning"]
        for command in (["XRANGE", "elsewhere", "-", "+", "COUNT", "1"], ["XREADGROUP", "GROUP", "adworker", "x", "STREAMS", scenario.stream, ">"],
                        ["XADD", "elsewhere", "*", "a", "b"], ["XDEL", scenario.stream, "0-1"]):
            reply = subprocess.run(as_producer + command, capture_output=True, text=True).stdout + ""
            check("NOPERM" in reply, f"producer user was allowed {command[0]} ({reply.strip()[:80]})")
        as_worker = REDIS + ["--user", "adworker-worker", "--pass", users["adworker-worker"], "--no-auth-warning"]
        for command in (["KEYS", "*"], ["FLUSHALL"], ["XRANGE", "elsewhere", "-", "+"]):
            reply = subprocess.run(as_worker + command, capture_output=True, text=True).stdout
            check("NOPERM" in reply, f"worker user was allowed {command[0]} ({reply.strip()[:80]})")
        as_role = [arg if arg != os.environ.get("DATABASE_USER", "adworker") else role for arg in PSQL]
        for sql in ("DELETE FROM inference_results", "TRUNCATE inference_results", "DROP TABLE inference_results"):
            result = subprocess.run(as_role + ["-c", sql], env=dict(PG_ENV, PGPASSWORD=password), capture_output=True, text=True)
            check(result.returncode != 0 and ("permission denied" in result.stderr or "must be owner" in result.stderr),
                  f"worker role was allowed: {sql} ({result.stderr.strip()[:80]})")
        scenario.notes.append("worker ran as ACL user adworker-worker and role with INSERT/SELECT/TEMP only (killed -9 once: "
                              "idempotent path; trimmed to the newest entry); producer user refused XREADGROUP, XDEL, XRANGE and XADD elsewhere; role refused DELETE, TRUNCATE, DROP")
        return scenario.finish(recovery, expected_dead=1)
    finally:
        scenario.environment = original
        for name in users:
            redis("ACL", "DELUSER", name)
        subprocess.run(AS_ROOT + ["su", "postgres", "-c", f"psql -q -X -d {DATABASE} -c 'DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}'"],
                       capture_output=True)



def startup_refused():
    """A wrong database password: exit 4 at once with what to change, not a retry loop."""
    scenario = Scenario("startup-refused")
    scenario.extra_env["DATABASE_PASSWORD"] = "not-the-password"
    started = time.monotonic()
    worker = scenario.worker("w")
    code = worker.wait(30)
    log = scenario.log("worker-w")
    check(code == 4, f"exit {code} with a wrong password, expected 4")
    check("28P01" in log and "DATABASE_PASSWORD" in log, f"the log does not name the fix: {log[-400:]}")
    # With the endpoint serving, the refusal stops it gracefully: the one clear line, no errors of Hummingbird's.
    port = consecutive_free_ports(1, 7200)
    code = scenario.worker("http", "--http", f"127.0.0.1:{port}").wait(30)
    log = scenario.log("worker-http")
    check(code == 4, f"exit {code} with a wrong password and the endpoint on, expected 4")
    check("Waiting on child channel" not in log and "Server shutdown error" not in log, f"Hummingbird errors beside the refusal: {log[-600:]}")
    scenario.notes.append(f"exit 4 after {time.monotonic() - started:.1f} s (and with --http, no Hummingbird error lines)")
    return scenario.finish(0)

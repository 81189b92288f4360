"""The fault tests' harness: settings, the shared servers (redis-cli, psql, pg_ctlcluster), the
processes a scenario spawns, exact accounting, and waits that poll a state with a deadline.

Nothing runs at import: `configure(adworker)` sets the binary and makes the log directory; the
runner calls it once before any scenario.
"""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATABASE = os.environ.get("ADWORKER_FAULT_DATABASE", "adworker_faults")
REDIS = ["redis-cli", "-h", os.environ.get("REDIS_HOST", "127.0.0.1"), "-p", os.environ.get("REDIS_PORT", "6379")]
PSQL = [
    "psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
    "-h", os.environ.get("DATABASE_HOST", "127.0.0.1"), "-p", os.environ.get("DATABASE_PORT", "5432"),
    "-U", os.environ.get("DATABASE_USER", "adworker"), "-d", DATABASE,
]
BASE_ENV = dict(os.environ, DATABASE_NAME=DATABASE)
BASE_ENV.setdefault("DATABASE_PASSWORD", "adworker")
PG_ENV = dict(os.environ, PGPASSWORD=BASE_ENV["DATABASE_PASSWORD"])
AS_ROOT = [] if os.geteuid() == 0 else ["sudo"]

# Set by configure(): the binary under test, where logs go, an empty --env-file (so no .env applies).
ADWORKER = None
LOG_DIR = None
EMPTY_ENV = None

# Every process any scenario spawned: the runner kills what is left of them after a failure.
SPAWNED = []


def configure(adworker):
    global ADWORKER, LOG_DIR, EMPTY_ENV
    ADWORKER = os.path.abspath(adworker)
    LOG_DIR = tempfile.mkdtemp(prefix="adworker-faults-")
    EMPTY_ENV = os.path.join(LOG_DIR, "empty.env")
    open(EMPTY_ENV, "w").close()


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def psql(sql):
    return subprocess.run(PSQL + ["-c", sql], env=PG_ENV, check=True, capture_output=True, text=True).stdout.strip()


def redis(*args, stdin=None):
    """The reply as redis-cli prints it; error replies come back as text (redis-cli exits 0 on them)."""
    result = subprocess.run(REDIS + list(args), input=stdin, check=True, capture_output=True)
    return result.stdout.decode("utf-8", "replace").strip()


def entries_added(stream):
    """Every entry ever added to the stream (XLEN shrinks with trimming and XDEL); 0 if it does not exist."""
    info = redis("XINFO", "STREAM", stream).splitlines()
    if "entries-added" not in info:
        check(info == ["ERR no such key"], f"XINFO STREAM {stream}: {info[:2]}")
        return 0
    return int(info[info.index("entries-added") + 1])


def pending_count(stream):
    """Entries pending in the worker's group; 0 if the group does not exist."""
    reply = redis("XPENDING", stream, "adworker")
    return 0 if not reply or reply.startswith(("NOGROUP", "ERR")) else int(reply.splitlines()[0])


def postgres_cluster():
    for line in subprocess.run(["pg_lsclusters", "-h"], check=True, capture_output=True, text=True).stdout.splitlines():
        version, name = line.split()[:2]
        if name == "main":
            return version
    raise Failure("no PostgreSQL cluster 'main'")


def pg_ctl(action, *options):
    subprocess.run(AS_ROOT + ["pg_ctlcluster", postgres_cluster(), "main", action, *options], check=True)


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise Failure(f"timed out after {timeout} s waiting for {what}")


def redis_stopped():
    """Redis no longer answers (redis-cli SHUTDOWN returns once the connection closes, maybe before
    the process is gone; scripts/dev-services.sh starts nothing while it still answers)."""
    return subprocess.run(REDIS + ["PING"], capture_output=True).stdout.strip() != b"PONG"


def process_gone(pid):
    return not os.path.exists(f"/proc/{pid}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tls_environment():
    """What adworker needs to reach the dev Redis on its TLS port (scripts/dev-services.sh opens it)."""
    certificates = subprocess.run([os.path.join(ROOT, "scripts", "tls-certs.sh")], check=True, capture_output=True, text=True).stdout.strip()
    port = os.environ.get("ADWORKER_DEV_REDIS_TLS_PORT", "6380")
    return {"REDIS_URL": f"rediss://127.0.0.1:{port}", "REDIS_TLS_CA_FILE": os.path.join(certificates, "ca.crt")}


class Scenario:
    def __init__(self, name, tls=False):
        """With `tls`, the scenario's adworker processes reach Redis over TLS (named NAME-tls);
        the harness's own checks stay on the plaintext port of the same server."""
        name = f"{name}-tls" if tls else name
        self.name = name
        self.prefix = f"fault-{name}-{os.getpid()}:"
        self.stream = self.prefix + "inference"
        self.processes = []
        self.notes = []
        # Settings for this scenario's processes only (a proxy's port, a short statement timeout).
        self.tls = tls
        self.extra_env = tls_environment() if tls else {}
        psql("TRUNCATE inference_results")

    def environment(self):
        return dict(BASE_ENV, ADWORKER_STREAM_PREFIX=self.prefix, ADWORKER_LOG_LEVEL="notice", **self.extra_env)

    def log(self, label):
        with open(os.path.join(LOG_DIR, f"{self.name}-{label}.log"), errors="replace") as log:
            return log.read()

    def spawn(self, label, arguments):
        log = open(os.path.join(LOG_DIR, f"{self.name}-{label}.log"), "ab")
        process = subprocess.Popen([ADWORKER] + arguments, env=self.environment(), stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        SPAWNED.append(process)
        return process

    def worker(self, consumer="w", *extra):
        # Several workers run at once here: the HTTP endpoint only where a scenario asks for it.
        http = [] if "--http" in extra else ["--http", "off"]
        worker = self.spawn(
            f"worker-{consumer}",
            ["run", "--env-file", EMPTY_ENV, "--streams", "inference", "--consumer-name", consumer, "--trim-interval", "0",
             "--claim-idle", "2", "--max-wait-ms", "50", *http, *extra],
        )
        if self.tls:
            self.expect_tls_clients()
        return worker

    def expect_tls_clients(self):
        """Over TLS, the server lists this scenario's clients on its TLS port (CLIENT LIST's laddr)."""
        port = self.extra_env["REDIS_URL"].rsplit(":", 1)[1]
        wait_for(lambda: f"laddr=127.0.0.1:{port} " in redis("CLIENT", "LIST"), 20, "a client on Redis's TLS port")

    def pool(self, label, port, name, *extra):
        """A supervisor with two worker processes, its endpoint on `port`."""
        return self.spawn(label, ["run", "--env-file", EMPTY_ENV, "--streams", "inference", "--processes", "2",
                                  "--http", f"127.0.0.1:{port}", "--consumer-name", name, *extra])

    def produce(self, count, rate, seed):
        return self.spawn("produce", ["produce", "--env-file", EMPTY_ENV, "--stream", "inference", "--count", str(count),
                                      "--rate", str(rate), "--seed", str(seed)])

    def counts(self):
        rows, distinct = (int(value) for value in psql("SELECT count(*), count(DISTINCT request_id) FROM inference_results").split("|"))
        entries = entries_added(self.stream)
        dead = int(redis("XLEN", self.stream + ":dead"))
        pending = pending_count(self.stream) if entries else 0
        return {"entries": entries, "rows": rows, "dead": dead, "duplicates": rows - distinct, "pending": pending}

    def caught_up(self):
        counts = self.counts()
        return counts["entries"] > 0 and counts["pending"] == 0 and counts["rows"] + counts["dead"] == counts["entries"]

    def wait_caught_up(self, since, timeout=120):
        try:
            wait_for(self.caught_up, timeout, "the worker to catch up")
        except Failure as timeout_error:
            raise Failure(f"{timeout_error}; {self.counts()}") from None
        return time.monotonic() - since

    def stop(self, process, timeout=40):
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = process.wait(timeout)
        return code, time.monotonic() - started

    def finish(self, recovery, expected_dead=0, accepted=None):
        """Exact accounting; with `accepted` (records the producer accepted), counted from the API call."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                # What it and its children were doing, before the kill ends them: a pool's
                # supervisor waits for its children, so say which of them are still there.
                tree = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,wchan:24,args", "--pid", str(process.pid), "--ppid", str(process.pid)],
                                      capture_output=True, text=True).stdout.strip().replace("\n", " | ")
                process.kill()
                raise Failure(f"process {process.args[1]} did not stop within 40 s of SIGTERM; processes: {tree[:1200]}")
        counts = self.counts()
        check(counts["rows"] + counts["dead"] == counts["entries"],
              f"{counts['entries']} entries but {counts['rows']} rows + {counts['dead']} dead letters")
        check(counts["duplicates"] == 0, f"{counts['duplicates']} duplicate rows")
        check(counts["pending"] == 0, f"{counts['pending']} entries still pending")
        check(counts["dead"] == expected_dead, f"{counts['dead']} dead letters, expected {expected_dead}")
        if accepted is not None:
            check(counts["entries"] == accepted, f"the producer accepted {accepted} records, the stream got {counts['entries']}")
        redis("DEL", self.stream, self.stream + ":dead")
        return dict(counts, scenario=self.name, recovery_seconds=round(recovery, 2), notes="; ".join(self.notes))


def wait_producer(producer, allow_failures=False):
    code = producer.wait(120)
    check(code == 0 or allow_failures, f"producer exited {code}")


def redis_pid():
    """The dev Redis's pid (the cluster's nodes are redis-server processes too)."""
    return int(re.search(r"process_id:(\d+)", redis("INFO", "server")).group(1))


def producer_summary(scenario):
    """(confirmed, failed) from `adworker produce`'s last line."""
    match = re.search(r"sent (\d+) records \((\d+) failed\)", scenario.log("produce"))
    check(match is not None, "the producer printed no summary")
    return int(match.group(1)), int(match.group(2))


def xadd(stream, pairs):
    """XADD with raw byte values (NUL bytes, invalid UTF-8), spoken in RESP over a socket."""
    host, port = os.environ.get("REDIS_HOST", "127.0.0.1"), int(os.environ.get("REDIS_PORT", "6379"))
    arguments = [b"XADD", stream.encode(), b"*"] + [part for name, value in pairs for part in (name.encode(), value)]
    command = b"*%d\r\n" % len(arguments) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in arguments)
    with socket.create_connection((host, port)) as connection:
        connection.sendall(command)
        reply = connection.makefile("rb")
        header = reply.readline()
        check(header.startswith(b"$"), f"XADD failed: {header!r}")
        return reply.readline().strip().decode()


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return None, ""


def metric_value(text, name, **labels):
    """The value of the sample `name` whose labels include `labels` (in any order), or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def notify_listener(path):
    """A socket systemd's notify protocol writes to, bound at `path`: the socket, every message
    received so far, and receive(seconds), which collects for that long and returns what came."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(path)
    notify.settimeout(0.1)
    messages = []

    def receive(seconds):
        end = time.monotonic() + seconds
        received = []
        while time.monotonic() < end:
            try:
                received.append(notify.recv(4096).decode())
            except socket.timeout:
                pass
        messages.extend(received)
        return received
    return notify, messages, receive


def free_ports(base, count=1):
    """The first of `count` consecutive loopback ports nothing listens on, from `base` plus this
    run's pid modulo 1000: the pid keeps two runs apart, the probe keeps clear of the servers the
    test script runs (the TLS cluster's 21001-21106, the sentinels' 26400-26402), which a port
    taken from the pid alone hit once in a few dozen runs (a pool needs its port and one per child)."""
    return consecutive_free_ports(count, base + os.getpid() % 1000)


def consecutive_free_ports(count, start):
    """The first of `count` consecutive loopback ports from `start` on that nothing is bound to."""
    port = start
    while True:
        sockets = []
        try:
            for offset in range(count):
                sockets.append(socket.socket())
                sockets[-1].bind(("127.0.0.1", port + offset))
            return port
        except OSError:
            port += count
        finally:
            for bound in sockets:
                bound.close()


def held_entries(stream, consumer_prefix):
    """Ids of the entries pending for the worker's consumers whose names start with the prefix."""
    reply = json.loads(redis("--json", "XPENDING", stream, "adworker", "-", "+", "1000000") or "[]")
    return [entry[0] for entry in reply if entry[1].startswith(consumer_prefix)]


def stored_among(entry_ids):
    """How many of these entry ids are rows already (committed; the XACK may not have followed)."""
    if not entry_ids:
        return 0
    return int(psql("SELECT count(*) FROM inference_results WHERE stream_id = ANY('{" + ",".join(entry_ids) + "}'::text[])"))


def pending_by_consumer(stream):
    """{consumer: entries pending} in the worker's group (XPENDING's summary)."""
    lines = redis("XPENDING", stream, "adworker").splitlines()
    return {lines[i]: int(lines[i + 1]) for i in range(3, len(lines) - 1, 2)}

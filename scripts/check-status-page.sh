#!/usr/bin/env bash
# Tests the status page at / of a running worker (or pool) in a real headless browser, Debian's
# chromium (installed when missing):
#   - waits until the worker's /status history has two points (and, with --expect-rows, rows);
#   - loads URL and dumps the DOM once the page's scripts ran: --virtual-time-budget runs the page on
#     a virtual clock that stands still while a fetch() is pending, so the budget (5 s) cannot run
#     out before a refresh completes and covers three refreshes (at 0, 2 and 4 s);
#   - fetches URL/status right after and asserts on the DOM: the streams table has a row per stream
#     the worker reports; chart-rows, chart-lag and chart-p99 each have one polyline per stream, whose
#     data-values are numbers equal to the history's rowsPerSecond, lag, latencyP99Milliseconds at
#     the same times (data-times on the <svg>; the newest point may still change, as in a pool, so it
#     is not compared), and whose line has a vertex per value, left to right, higher for larger values;
#   - with --expect-streams a,b: those streams are charted; with --expect-rows: each of them (or every
#     reported stream) has a positive rows/s point;
#   - keeps a screenshot (1200×900) at SCREENSHOT_PATH, taken even when an assertion failed.
# Usage: scripts/check-status-page.sh URL SCREENSHOT_PATH [--expect-streams training,inference] [--expect-rows]
set -euo pipefail
log() { printf '[status-page] %s\n' "$*"; }
usage() { echo "usage: $0 URL SCREENSHOT_PATH [--expect-streams a,b] [--expect-rows]" >&2; exit 2; }

(($# >= 2)) || usage
url=${1%/} screenshot=$2
shift 2
expect_streams='' expect_rows=0
while (($#)); do
    case $1 in
    --expect-streams) (($# >= 2)) || usage; expect_streams=$2; shift 2 ;;
    --expect-streams=*) expect_streams=${1#*=}; shift ;;
    --expect-rows) expect_rows=1; shift ;;
    *) usage ;;
    esac
done

if ! command -v chromium >/dev/null; then
    log "installing chromium"
    sudo=''
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
budget=5000
browser() {
    # A profile of its own, so that a browser already running elsewhere cannot take the page over.
    timeout 120 chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
        --user-data-dir="$work/profile" --virtual-time-budget=$budget "$@" 2>>"$work/chromium.log" || {
        echo "[status-page] FAIL: chromium exited with $? ($*); its last lines:" >&2
        grep -v dbus "$work/chromium.log" | tail -5 >&2
        exit 1
    }
}

log "waiting for $url/status to have history"
python3 - "$url/status" "$expect_streams" "$expect_rows" <<'PY'
import json, sys, time, urllib.request
status_url, expected, expect_rows = sys.argv[1], [s for s in sys.argv[2].split(",") if s], sys.argv[3] == "1"
deadline, why = time.time() + 60, ""
while time.time() < deadline:
    try:
        status = json.load(urllib.request.urlopen(status_url, timeout=10))
    except Exception as error:
        why = f"{status_url} does not answer: {error}"
    else:
        points = (status.get("history") or {}).get("points", [])
        wanted = expected or [s["stream"] for s in status["streams"]]
        idle = [n for n in wanted if not any(p["streams"].get(n, {}).get("rowsPerSecond", 0) > 0 for p in points)]
        if len(points) < 2:
            why = f"the history has {len(points)} point(s), 2 are needed to compare"
        elif expect_rows and idle:
            why = f"no rows in the history yet for {', '.join(idle)}"
        else:
            sys.exit(0)
    time.sleep(1)
sys.exit(f"[status-page] FAIL: after 60 s, {why}")
PY

log "loading $url/ in headless chromium (virtual time budget ${budget} ms)"
browser --dump-dom "$url/" >"$work/dom.html"
checked=0
python3 - "$work/dom.html" "$url/status" "$expect_streams" "$expect_rows" <<'PY' || checked=$?
import json, math, sys, urllib.request
from html.parser import HTMLParser

dom_path, status_url, expected, expect_rows = sys.argv[1], sys.argv[2], [s for s in sys.argv[3].split(",") if s], sys.argv[4] == "1"
status = json.load(urllib.request.urlopen(status_url, timeout=10))  # right after the dump: nearly what the page last saw
failures = []
def check(ok, message):
    if not ok: failures.append(message)
    return ok

class Dom(HTMLParser):
    """The page's <body> attributes, its charts (<svg> with their polylines) and the streams table's first column."""
    def __init__(self):
        super().__init__()
        self.body, self.charts, self.svg, self.table, self.cells, self.stream_rows = {}, {}, None, None, None, []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body": self.body = a
        elif tag == "svg": self.svg = a.get("id"); self.charts[self.svg] = (a, [])
        elif tag == "polyline" and self.svg: self.charts[self.svg][1].append(a)
        elif tag == "table": self.table = a.get("id")
        elif tag == "tr" and self.table == "streams": self.cells = []
        elif tag == "td" and self.cells is not None: self.cells.append("")
    def handle_endtag(self, tag):
        if tag == "svg": self.svg = None
        elif tag == "table": self.table = None
        elif tag == "tr" and self.cells is not None:
            if self.cells: self.stream_rows.append(self.cells[0])
            self.cells = None
    def handle_data(self, data):
        if self.cells: self.cells[-1] += data

dom = Dom()
dom.feed(open(dom_path, encoding="utf-8").read())

reported = [s["stream"] for s in status["streams"]]
history = {p["time"]: p["streams"] for p in (status.get("history") or {}).get("points", [])}
streams = sorted(set(reported) | set(expected))
check(dom.stream_rows == reported, f"streams table rows {dom.stream_rows}, /status reports {reported}")
missing = [n for n in expected if n not in reported]
check(not missing, f"/status does not report the expected stream(s) {missing}")
rendered = dom.body.get("data-charts-rendered")
print(f"[status-page] streams table: {len(dom.stream_rows)} rows ({', '.join(dom.stream_rows)}); <body data-charts-rendered={rendered}>")
if not check(rendered is not None and rendered.isdigit(), "<body data-charts-rendered> is not set: the charts never rendered"):
    rendered = -1

def number(text, where):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    check(math.isfinite(value), f"{where}: {text!r} is not a number")
    return value

for chart, key in (("chart-rows", "rowsPerSecond"), ("chart-lag", "lag"), ("chart-p99", "latencyP99Milliseconds")):
    if not check(chart in dom.charts, f"no <svg id={chart}> in the page"):
        continue
    attrs, lines = dom.charts[chart]
    times = [number(t, f"{chart} data-times") for t in attrs.get("data-times", "").split(",") if t]
    check(rendered == -1 or len(times) == int(rendered), f"{chart}: {len(times)} times in data-times, the page says it rendered {rendered} points")
    check(times == sorted(times), f"{chart}: data-times not oldest first")
    names = [line.get("data-stream") for line in lines]
    check(len(names) == len(set(names)), f"{chart}: more than one line for a stream: {names}")
    check(set(streams) <= set(names), f"{chart}: lines for {sorted(set(names))}, streams {streams} expected")
    for line in lines:
        name, raw = line.get("data-stream"), line.get("data-values")
        where = f"{chart} {name}"
        if not check(raw is not None, f"{where}: no data-values"):
            continue
        values = [None if v == "" else number(v, where) for v in raw.split(",")] if times else []
        if not check(len(values) == len(times), f"{where}: {len(values)} values for {len(times)} times"):
            continue
        # The line draws those values: a vertex each, left to right, higher for a larger value (y grows downwards).
        try:
            vertices = [tuple(map(float, xy.split(","))) for xy in line.get("points", "").split()]
        except ValueError:
            vertices = []
            check(False, f"{where}: the line's points attribute is not a list of x,y: {line.get('points')!r}")
        shown = [v for v in values if v is not None]
        if check(len(vertices) == len(shown), f"{where}: the line has {len(vertices)} vertices for {len(shown)} values"):
            xs, by_value = [x for x, _ in vertices], sorted(zip(shown, (y for _, y in vertices)))
            check(xs == sorted(xs), f"{where}: the line's vertices are not left to right")
            check(all(b[1] <= a[1] + 0.2 for a, b in zip(by_value, by_value[1:])), f"{where}: a larger value is drawn lower")
        # The page's points are a window of the worker's history a moment older; the newest may still change.
        compared, wrong, oldest = 0, [], min(history, default=math.inf)
        for t, value in list(zip(times, values))[:-1]:
            if t not in history:
                check(t < oldest, f"{where}: a point at {t:.0f} that /status's history does not have")
                continue
            want = history[t].get(name, {}).get(key)
            want = None if want is None else float(want)
            compared += 1
            if value != want: wrong.append(f"{value} at {t:.0f} where /status's history has {want}")
        check(not wrong, f"{where}: {len(wrong)} of {compared} points differ from /status, the first: {wrong[0] if wrong else ''}")
        check(name not in streams or compared > 0, f"{where}: no point in common with /status's history")
        summary = f"{min(shown):g}…{max(shown):g}" if shown else "no figures"
        print(f"[status-page] {where}: {len(values)} points ({summary}, {len(values) - len(shown)} empty), {compared - len(wrong)} of {compared} equal to /status history {key}")
        if chart == "chart-rows" and expect_rows and name in (expected or reported):
            check(any(v > 0 for v in shown), f"{where}: no positive rows/s, rows were expected to flow")
    print(f"[status-page] {chart}: lines for {', '.join(names)}")

for failure in failures:
    print(f"[status-page] FAIL: {failure}", file=sys.stderr)
sys.exit(1 if failures else 0)
PY

log "screenshot to $screenshot"
mkdir -p "$(dirname "$screenshot")"
rm -f "$screenshot"
browser --window-size=1200,900 --screenshot="$screenshot" "$url/" >/dev/null
python3 - "$screenshot" <<'PY'
import struct, sys
head = open(sys.argv[1], "rb").read(24)
if head[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit(f"[status-page] FAIL: {sys.argv[1]} is not a PNG")
print("[status-page] screenshot %s: %d×%d" % ((sys.argv[1],) + struct.unpack(">II", head[16:24])))
PY
if ((checked)); then
    log "FAILED (screenshot kept at $screenshot)"
    exit "$checked"
fi
log "passed"

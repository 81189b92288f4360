#!/usr/bin/env bash
# Checks what deploy/ ships for monitoring, without a Prometheus or a Grafana server:
#   - deploy/prometheus/adworker-rules.yml: `promtool check rules`, then its unit tests
#     (`promtool test rules deploy/prometheus/adworker-rules.test.yml`);
#   - deploy/grafana/adworker.json: valid JSON, unique panel ids, a grid position for every panel
#     and no two overlapping, every panel with the data source variable and queries, every query
#     valid PromQL (run through `promtool check rules` as recording rules), histogram quantiles
#     summed `by (le, ...)`;
#   - every metric name in the rules, their tests and the dashboard is one the code exposes
#     (FAMILIES below, compared with Sources/AdWorkerCore/MetricHelp.swift);
#   - with a URL (or a file) as $1, e.g. http://127.0.0.1:9464/metrics of a running worker or
#     pool: `promtool check metrics` on what it serves, failing on any problem it prints.
# Usage: scripts/check-monitoring.sh [METRICS_URL_OR_FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[monitoring] %s\n' "$*"; }
rules=deploy/prometheus/adworker-rules.yml
rule_tests=deploy/prometheus/adworker-rules.test.yml
dashboard=deploy/grafana/adworker.json
metrics_source=${1:-}

# The metric families adworker and the adtelemetry producer expose. This list must match the code
# (the labels of Counter/Gauge/Recorder/Timer in Sources/, and Sources/AdWorkerCore/MetricHelp.swift,
# which has HELP text for each family; the check below fails when the two differ).
# Histograms (Timer, Recorder) are exposed as NAME_bucket, NAME_sum and NAME_count.
FAMILIES=(
    # counters
    adworker_entries_read_total
    adworker_rows_inserted_total
    adworker_entries_acknowledged_total
    adworker_duplicate_rows_skipped_total
    adworker_dead_letters_total
    adworker_dead_letters_trimmed_total
    adworker_errors_total
    adtelemetry_sent_total
    adtelemetry_failed_total
    adtelemetry_dropped_total
    adtelemetry_retried_total
    adtelemetry_unknown_outcome_total
    # gauges
    adworker_workers_alive
    adworker_circuit_open
    adworker_target_up
    adworker_permanent_errors
    adworker_stream_length
    adworker_pending_entries
    adworker_consumer_group_lag
    adworker_dead_letter_stream_length
    adworker_seconds_since_progress
    adworker_process_up
    adtelemetry_buffered
    adtelemetry_spooled_records
    adtelemetry_spooled_bytes
)
HISTOGRAMS=(
    adworker_end_to_end_latency_seconds
    adworker_insert_duration_seconds
    adworker_batch_size
    adtelemetry_send_latency_seconds
    adtelemetry_redis_recovery_seconds
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0

# promtool: Debian's `prometheus` package ships /usr/bin/promtool (no daemon is started where
# policy-rc.d forbids it, as in containers; elsewhere the package enables prometheus.service).
if ! command -v promtool >/dev/null; then
    log "installing promtool (Debian package prometheus)"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    apt_install() { DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends prometheus >"$work/apt.log" 2>&1; }
    if ! apt_install; then
        "${sudo[@]}" apt-get update -qq >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; exit 1; }
        apt_install || { cat "$work/apt.log" >&2; log "could not install prometheus (promtool)"; exit 1; }
    fi
fi
log "$(promtool --version 2>&1 | head -n 1)"

log "rules: promtool check rules $rules"
promtool check rules "$rules" >"$work/check.txt" 2>&1 || { cat "$work/check.txt"; exit 1; }
sed '/^$/d; s/^ */    /' "$work/check.txt"
passed=$((passed + 1))

log "rule tests: promtool test rules $rule_tests"
promtool test rules "$rule_tests" >"$work/test.txt" 2>&1 || { cat "$work/test.txt"; log "rule tests failed"; exit 1; }
sed '/^$/d; s/^ */    /' "$work/test.txt"
passed=$((passed + 1))

log "dashboard and metric names: $dashboard"
python3 - "$dashboard" "$work/dashboard-rules.yml" "${FAMILIES[*]}" "${HISTOGRAMS[*]}" \
    "$rules" "$rule_tests" Sources/AdWorkerCore/MetricHelp.swift <<'PY'
import json, re, sys

dashboard_path, rules_out, families, histograms, *name_files, help_path = sys.argv[1:]
families, histograms = set(families.split()), set(histograms.split())
known = families | {h + s for h in histograms for s in ("_bucket", "_sum", "_count")}
errors = []
name = re.compile(r"\b(?:adworker|adtelemetry)_[a-zA-Z0-9_]+")

# The list above against the code's HELP table: a family added to or removed from the code
# without this script (and so the dashboard and rules) noticing fails here.
with open(help_path) as f:
    in_code = set(re.findall(r'^\s*"((?:adworker|adtelemetry)_[a-z0-9_]+)":', f.read(), re.M))
if in_code != families | histograms:
    errors.append(f"FAMILIES/HISTOGRAMS differ from {help_path}: only in the code {sorted(in_code - families - histograms)}, "
                  f"only in this script {sorted((families | histograms) - in_code)}")

def check_names(where, text, allowed=known):
    for metric in name.findall(text):
        if metric not in allowed:
            errors.append(f"{where}: unknown metric {metric}" + (" (a histogram: use _bucket, _sum or _count)" if metric in histograms else ""))

for path in name_files:
    with open(path) as f:
        for number, line in enumerate(f, 1):
            # Prose may name a histogram family; expressions are checked by promtool's tests.
            check_names(f"{path}:{number}", line, known | histograms)

try:
    with open(dashboard_path) as f:
        dashboard = json.load(f)
except ValueError as error:
    print(f"{dashboard_path}: not valid JSON: {error}")
    sys.exit(1)
for key in ("title", "uid", "schemaVersion", "panels", "templating"):
    if key not in dashboard:
        errors.append(f"dashboard: no {key}")
variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
source = variables.get("datasource")
if not source or source.get("type") != "datasource" or source.get("query") != "prometheus":
    errors.append("dashboard: no `datasource` variable of type datasource for prometheus")
stream = variables.get("stream")
if not stream or "label_values(adworker_rows_inserted_total, stream)" not in json.dumps(stream.get("query")):
    errors.append("dashboard: no `stream` variable from label_values(adworker_rows_inserted_total, stream)")
else:
    check_names("variable stream", json.dumps(stream.get("query")))

panels = []
def walk(items):
    for panel in items:
        panels.append(panel)
        walk(panel.get("panels", []))
walk(dashboard.get("panels", []))

ids, boxes, queries = {}, [], []
for panel in panels:
    title = f"panel {panel.get('id')} ({panel.get('title', '?')})"
    if not isinstance(panel.get("id"), int):
        errors.append(f"{title}: no integer id")
    elif panel["id"] in ids:
        errors.append(f"{title}: id already used by {ids[panel['id']]}")
    else:
        ids[panel["id"]] = panel.get("title")
    grid = panel.get("gridPos", {})
    if not all(isinstance(grid.get(k), int) for k in "hwxy") or grid["w"] < 1 or grid["h"] < 1 or grid["x"] + grid["w"] > 24:
        errors.append(f"{title}: bad gridPos {grid}")
    else:
        for other, box in boxes:
            if grid["x"] < box["x"] + box["w"] and box["x"] < grid["x"] + grid["w"] and grid["y"] < box["y"] + box["h"] and box["y"] < grid["y"] + grid["h"]:
                errors.append(f"{title}: overlaps {other}")
        boxes.append((title, grid))
    if panel.get("type") == "row":
        continue
    if panel.get("datasource", {}).get("uid") != "${datasource}":
        errors.append(f"{title}: datasource is not the ${{datasource}} variable")
    targets = panel.get("targets") or []
    if not targets:
        errors.append(f"{title}: no queries")
    refs = [t.get("refId") for t in targets]
    if len(set(refs)) != len(refs):
        errors.append(f"{title}: duplicate refId")
    for target in targets:
        expr = (target.get("expr") or "").strip()
        where = f"{title} query {target.get('refId')}"
        if not expr:
            errors.append(f"{where}: no expr")
            continue
        if target.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"{where}: datasource is not the ${{datasource}} variable")
        if not name.search(expr):
            errors.append(f"{where}: uses no adworker/adtelemetry metric")
        check_names(where, expr)
        if "histogram_quantile" in expr and not (re.search(r"\bby \(le\b", expr) and "_bucket" in expr):
            errors.append(f"{where}: histogram_quantile needs rate(..._bucket) summed by (le, ...)")
        queries.append((panel["id"], target.get("refId"), expr))

# Each query as a recording rule, so promtool parses it as PromQL (the variables as Grafana
# would substitute them).
with open(rules_out, "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for panel_id, ref, expr in queries:
        expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$stream", ".*")
        f.write(f"      - record: dashboard:panel_{panel_id}_{ref}\n        expr: {json.dumps(expr)}\n")

if errors:
    print("\n".join(errors))
    sys.exit(1)
used = {m for _, _, e in queries for m in name.findall(e)}
print(f"[monitoring] dashboard: {len(panels)} panels, {len(queries)} queries over {len(used)} series names; metric names of rules and tests known")
PY
promtool check rules "$work/dashboard-rules.yml" >"$work/dashboard-check.txt" 2>&1 || {
    cat "$work/dashboard-check.txt"
    log "a dashboard query is not valid PromQL (rule dashboard:panel_ID_REFID above)"
    exit 1
}
log "dashboard queries parse as PromQL: $(grep -o '[0-9]* rules found' "$work/dashboard-check.txt")"
passed=$((passed + 1))

if [ -n "$metrics_source" ]; then
    log "metrics: promtool check metrics on $metrics_source"
    if [ -f "$metrics_source" ]; then
        cp "$metrics_source" "$work/metrics.txt"
    else
        python3 - "$metrics_source" "$work/metrics.txt" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as response, open(sys.argv[2], "wb") as out:
    out.write(response.read())
PY
    fi
    grep -q '^adworker_\|^adtelemetry_' "$work/metrics.txt" || { log "no adworker_ or adtelemetry_ samples in $metrics_source"; exit 1; }
    # promtool exits non-zero for some problems only; any line it prints is one.
    status=0
    promtool check metrics <"$work/metrics.txt" >"$work/lint.txt" 2>&1 || status=$?
    if [ "$status" -ne 0 ] || [ -s "$work/lint.txt" ]; then
        cat "$work/lint.txt"
        log "promtool check metrics found problems (exit $status)"
        exit 1
    fi
    log "metrics: $(grep -c '^[a-z]' "$work/metrics.txt") samples, no problems"
    passed=$((passed + 1))
else
    log "metrics: skipped (pass a worker's metrics URL, e.g. http://127.0.0.1:9464/metrics, to lint them)"
fi
echo "monitoring checks: $passed passed, 0 failed"

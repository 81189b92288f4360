#!/usr/bin/env bash
# One command from a fresh Debian machine (with Swift installed) to a running worker: installs
# Redis, PostgreSQL, hiredis and libpq, starts Redis and PostgreSQL on loopback, builds adworker
# in release, applies the migrations, queues 1,000 sample records (500 API requests) (skip with
# ADWORKER_SAMPLE=0) and runs the worker in the foreground. Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/dev-services.sh
[ -f .env ] || { cp .env.template .env; echo "[quickstart] wrote .env from .env.template" >&2; }
swift build -c release --product adworker
adworker=$(swift build -c release --show-bin-path)/adworker
"$adworker" migrate
sample=${ADWORKER_SAMPLE:-1000}
if [ "$sample" -gt 0 ]; then
    "$adworker" produce --stream requests --count "$sample"
fi
echo "[quickstart] worker starting; rows land in training_data and inference_results" >&2
exec "$adworker" run "$@"

#!/usr/bin/env bash
# Fuzzes the wire decoder and the COPY row encoder with libFuzzer (Fuzz/, the project's own
# decoder and encoder files): any trap, overflow or memory error fails. Usage: scripts/fuzz.sh [seconds]
# (default 30). Findings are written to Fuzz/Findings; the corpus grows in .build-fuzz/corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
swift build --package-path Fuzz --scratch-path .build-fuzz -c debug --sanitize=fuzzer --sanitize=address >&2
corpus=.build-fuzz/corpus
mkdir -p "$corpus" Fuzz/Findings
# Seeds: valid entries of both kinds, and one with the id that once overflowed enqueued_at.
python3 - "$corpus" <<'PY'
import struct, sys
def entry(ms, seq, kind, fields):
    out = struct.pack(">QQB", ms, seq, kind)
    for name, value in fields:
        out += bytes([len(name)]) + name + bytes([len(value)]) + value
    return out
common = [(b"v", b"1"), (b"model", b"fraud"), (b"request_id", b"r-1"), (b"ts", b"1700000000000")]
seeds = {
    "inference": entry(1700000000000, 0, 1, common + [(b"prediction", b'{"p":0.9}'), (b"confidence", b"0.87"),
                       (b"anomaly_score", b"1e-5"), (b"is_anomaly", b"1"), (b"processing_ms", b"42")]),
    "training": entry(1700000000000, 1, 0, common + [(b"input", b'{"a":[1,2]}'), (b"meta", b'{"k":"v"}'),
                      (b"source_ip", b"2001:db8::1"), (b"extra", b"x")]),
    "huge-id": entry(9223372036854776, 0, 1, common + [(b"prediction", b"1")]),
}
for name, data in seeds.items():
    open(f"{sys.argv[1]}/seed-{name}", "wb").write(data)
PY
# Swift's crash backtracer and AddressSanitizer wait on each other; libFuzzer reports the trap.
SWIFT_BACKTRACE=enable=no "$(swift build --package-path Fuzz --scratch-path .build-fuzz -c debug --show-bin-path)/EntryFuzzer" \
    -max_total_time="$seconds" -max_len=512 -print_final_stats=1 -artifact_prefix=Fuzz/Findings/ "$corpus"

#!/usr/bin/env bash
# The README's producer snippet must be what Tests/IntegrationTests/ReadmeSnippetTests.swift
# compiles and runs: the same imports (of the project, AdTelemetry alone; the test's own Testing and
# AdWorkerTestSupport aside), the same lines.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import re, sys
readme = open("README.md").read()
section = readme[readme.index("## Producer library"):]
block = re.search(r"```swift\n(.*?)```", section, re.S).group(1).splitlines()
test = open("Tests/IntegrationTests/ReadmeSnippetTests.swift").read().splitlines()
imports = [line for line in test if line.startswith("import ") and line not in ("import Testing", "import AdWorkerTestSupport")]
begin = next(i for i, line in enumerate(test) if line.strip() == "// README snippet begins")
end = next(i for i, line in enumerate(test) if line.strip() == "// README snippet ends")
body = [line[8:] if line.startswith(" " * 8) else line.strip() for line in test[begin + 1:end]]
expected = imports + [""] + body
if block != expected:
    import difflib
    print("README's producer snippet differs from ReadmeSnippetTests.swift:", file=sys.stderr)
    print("\n".join(difflib.unified_diff(expected, block, "test", "README", lineterm="")), file=sys.stderr)
    sys.exit(1)
print(f"README snippet: {len(block)} lines, as the test runs them")
PY

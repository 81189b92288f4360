#!/usr/bin/env bash
# Fails when the code reads an environment variable that .env.template does not list, or the
# template lists one that nothing reads. Variables are the quoted UPPER_CASE names the CLI's
# settings look up; *_FILE forms of secrets are derived, so the template lists them explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."

read_by_code=$(grep -rhoE '"(REDIS|DATABASE|ADWORKER|CONSUMER|ASYNC)_[A-Z_]+"' Sources | tr -d '"' | sort -u)
secrets=$(grep -rhoE 'secret\("[A-Z_]+"\)' Sources | grep -oE '[A-Z_]+' | sed 's/$/_FILE/' | sort -u)
expected=$(printf '%s\n%s\n' "$read_by_code" "$secrets" | sort -u)
listed=$(grep -oE '^#? ?[A-Z][A-Z0-9_]+=' .env.template | tr -d '#= ' | sort -u)

missing=$(comm -23 <(echo "$expected") <(echo "$listed"))
unused=$(comm -13 <(echo "$expected") <(echo "$listed"))
[ -z "$missing" ] || { echo ".env.template lacks: $missing" >&2; exit 1; }
[ -z "$unused" ] || { echo ".env.template lists variables nothing reads: $unused" >&2; exit 1; }
echo ".env.template lists all $(echo "$expected" | wc -l) variables"

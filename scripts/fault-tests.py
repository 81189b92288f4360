#!/usr/bin/env python3
"""Fault tests: the adworker binary under load against the real Redis and PostgreSQL that
scripts/dev-services.sh starts, with workers killed, servers restarted or stopped, locks held and
poison mixed in. Every scenario ends with exact accounting:

    entries ever added to the stream = rows + dead letters, no request id twice, nothing pending.

Usage: scripts/fault-tests.py ADWORKER_BINARY [SCENARIO ...]   (restarts servers: root, or sudo)
       scripts/fault-tests.py --list
Writes a summary table to stdout and JSON to $FAULT_REPORT (default /tmp/adworker-faults.json).
The scenarios live in scripts/faults/ (harness.py, scenarios/*.py, runner.py).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from faults.runner import main  # noqa: E402 - after the path that finds it

if __name__ == "__main__":
    main(sys.argv)

"""scripts/fault-tests.py's scenarios as a package: `harness` (servers, processes, accounting,
waits), `proxy`, `redis_cluster`, the scenarios grouped in `scenarios/`, and `runner` (the order,
the summary table, main)."""

-- Superseded. Hypertables are no longer a one-time migration: `adworker migrate` looks at
-- TimescaleDB after the versioned migrations on every run (TimescaleSetup in the Postgres
-- module), so a database that gets the extension later is converted then, keeping its rows, and
-- a server that has the extension without preloading it is told what to change instead of
-- failing. This version stays, doing nothing, so the numbering of recorded migrations holds.
SELECT 1;

-- TimescaleDB when the server has it: both tables become hypertables on enqueued_at (the key's
-- time column). On plain PostgreSQL this does nothing; `adworker migrate` says it skipped.
-- Creating the extension needs a superuser or a trusted install; without the right, the tables
-- stay plain and the migration still succeeds (a notice says why).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        RAISE NOTICE 'timescaledb is not available on this server: tables stay plain';
        RETURN;
    END IF;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'timescaledb is available but this role may not create it: run CREATE EXTENSION timescaledb as a superuser, then adworker migrate --timescaledb';
        RETURN;
    END;
    PERFORM create_hypertable('training_data', 'enqueued_at', if_not_exists => TRUE, migrate_data => TRUE);
    PERFORM create_hypertable('inference_results', 'enqueued_at', if_not_exists => TRUE, migrate_data => TRUE);
END
$$;

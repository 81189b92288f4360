-- Sharded streams (ADWORKER_SHARDS above 1, or any Redis Cluster) number their entries per shard:
-- two shards, on different nodes, hand out the same entry id in the same millisecond, so the
-- entry id alone no longer names a row. The key becomes (enqueued_at, stream_id, shard); an
-- unsharded stream is shard 0, as is every row already stored. Adding the column is instant (a
-- constant default); rebuilding the primary key locks the table while it builds: on a large
-- table, migrate in a quiet hour. TimescaleDB cannot change the key of a hypertable with
-- compression enabled: such a table keeps its key, a notice says how to change it, and the
-- worker refuses sharded streams until it has been changed.
SET LOCAL statement_timeout = 0;

DO $$
DECLARE
    target text;
    compressed boolean;
BEGIN
    FOREACH target IN ARRAY ARRAY['training_data', 'inference_results'] LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS shard smallint NOT NULL DEFAULT 0', target);
        compressed := false;
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
            EXECUTE 'SELECT coalesce(bool_or(compression_enabled), false) FROM timescaledb_information.hypertables
                      WHERE hypertable_schema = current_schema() AND hypertable_name = $1'
               INTO compressed USING target;
        END IF;
        IF compressed THEN
            RAISE NOTICE '% has TimescaleDB compression: its key stays (enqueued_at, stream_id), so sharded streams are refused (decompress its chunks, disable compression, then: ALTER TABLE % DROP CONSTRAINT %_pkey, ADD PRIMARY KEY (enqueued_at, stream_id, shard))', target, target, target;
            CONTINUE;
        END IF;
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I, ADD PRIMARY KEY (enqueued_at, stream_id, shard)', target, target || '_pkey');
    END LOOP;
END
$$;

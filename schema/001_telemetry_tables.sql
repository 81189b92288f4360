-- Telemetry tables, with the names and columns the original Python system used.
-- Key (enqueued_at, stream_id): the Redis entry id makes a redelivered entry a no-op
-- (INSERT ... ON CONFLICT DO NOTHING), and the time column in the key lets the same tables
-- become TimescaleDB hypertables on enqueued_at.

CREATE TABLE IF NOT EXISTS training_data (
    stream_id    text        NOT NULL,
    enqueued_at  timestamptz NOT NULL,
    event_time   timestamptz NOT NULL,
    model_name   text        NOT NULL,
    request_id   text        NOT NULL,
    input_data   jsonb       NOT NULL,
    metadata     jsonb,
    source_ip    inet,
    ingested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (enqueued_at, stream_id)
);

CREATE TABLE IF NOT EXISTS inference_results (
    stream_id          text        NOT NULL,
    enqueued_at        timestamptz NOT NULL,
    event_time         timestamptz NOT NULL,
    model_name         text        NOT NULL,
    request_id         text        NOT NULL,
    prediction         jsonb       NOT NULL,
    confidence         float8,
    anomaly_score      float8,
    is_anomaly         bool,
    processing_time_ms int4,
    metadata           jsonb,
    ingested_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (enqueued_at, stream_id)
);

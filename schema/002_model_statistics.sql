-- Per-model statistics (adworker stats) read recent rows of one model: index by model and time.
CREATE INDEX IF NOT EXISTS training_data_model_time ON training_data (model_name, event_time);
CREATE INDEX IF NOT EXISTS inference_results_model_time ON inference_results (model_name, event_time);

-- Hourly performance per model, for dashboards and ad-hoc SQL.
CREATE OR REPLACE VIEW model_performance_hourly AS
SELECT model_name,
       date_trunc('hour', event_time)                                        AS hour,
       count(*)                                                              AS inferences,
       avg(processing_time_ms)                                               AS mean_processing_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms)      AS p95_processing_ms,
       avg(confidence)                                                       AS mean_confidence,
       avg(is_anomaly::int) FILTER (WHERE is_anomaly IS NOT NULL)            AS anomaly_rate
FROM inference_results
GROUP BY model_name, date_trunc('hour', event_time);

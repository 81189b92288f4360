/// HELP text for every metric family the worker exposes, the producer's (`adtelemetry_*`) too:
/// bench and tests run both in one process. swift-metrics has no place for help, and
/// swift-prometheus refuses two registrations of one name with different help, so the endpoint
/// adds these lines to the exposition instead (``MetricHelp/annotate(_:)``). A family missing here
/// fails a test.
public enum MetricHelp {
    public static let texts: [String: String] = [
        "adworker_entries_read_total": "Stream entries read and acknowledged (rows plus dead letters), per stream.",
        "adworker_rows_inserted_total": "Rows committed to PostgreSQL, per stream.",
        "adworker_entries_acknowledged_total": "Stream entries acknowledged (XACK) after their rows or dead letters were stored.",
        "adworker_duplicate_rows_skipped_total": "Redelivered entries whose row was already in the table (idempotent path).",
        "adworker_dead_letters_total": "Entries written to the dead-letter stream, by reason code.",
        "adworker_dead_letters_trimmed_total": "Oldest dead letters removed to keep the dead-letter stream within --dead-letter-limit.",
        "adworker_batch_size": "Entries per committed batch.",
        "adworker_insert_duration_seconds": "Time to COPY and commit one batch.",
        "adworker_end_to_end_latency_seconds": "Commit time minus the entry id's time (when Redis accepted the entry).",
        "adworker_errors_total": "Failed attempts against a target (redis, postgres), by error code (kind) and SQLSTATE.",
        "adworker_workers_alive": "Consumers of the stream that are running.",
        "adworker_circuit_open": "1 while a consumer of the stream has its circuit to the target open (the target is failing).",
        "adworker_target_up": "1 when the last readiness probe of the target (redis, postgres) succeeded.",
        "adworker_stream_length": "Entries in the stream (XLEN), as last sampled.",
        "adworker_pending_entries": "Entries delivered to the group and not yet acknowledged, as last sampled.",
        "adworker_consumer_group_lag": "Entries in the stream not yet delivered to the group (Redis 7 lag), as last sampled.",
        "adworker_dead_letter_stream_length": "Letters in the stream's dead-letter stream, as last sampled.",
        "adworker_seconds_since_progress": "Seconds since a consumer of the stream last committed a batch or found nothing to read.",
        "adworker_permanent_errors": "1 while a target refuses the worker for a reason retrying cannot fix (kind: the error code).",
        "adworker_process_up": "1 when the pool's worker process answers on its loopback endpoint.",
        "adtelemetry_sent_total": "Records the producer had confirmed by Redis.",
        "adtelemetry_failed_total": "Records the producer could not get confirmed by Redis.",
        "adtelemetry_buffered": "Records accepted by the producer and not yet confirmed.",
        "adtelemetry_dropped_total": "Records the producer dropped, by reason (buffer full, shut down, spool full, spool unwritable, spool damaged).",
        "adtelemetry_spooled_records": "Records waiting in the producer's spool on local disk.",
        "adtelemetry_spooled_bytes": "Bytes the producer's spool holds on local disk.",
        "adtelemetry_send_latency_seconds": "Time from accepting a record to Redis confirming it.",
        "adtelemetry_retried_total": "XADDs held back and sent again because Redis had certainly not run them (no connection, LOADING, OOM, CLUSTERDOWN, a moving slot).",
        "adtelemetry_unknown_outcome_total": "Records of pipelines cut mid-way, looked up by their origin field before a resend: stored (found in the stream) or resent (not there).",
        "adtelemetry_redis_recovery_seconds": "How long Redis refused or could not be reached before it took records again, per outage.",
    ]

    /// The exposition with a `# HELP` line before each family's `# TYPE` line that lacks one.
    public static func annotate(_ exposition: String) -> String {
        var output = ""
        output.reserveCapacity(exposition.utf8.count + 4096)
        var helped: Set<Substring> = []
        for line in exposition.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# HELP ") {
                helped.insert(line.dropFirst(7).prefix { $0 != " " })
            } else if line.hasPrefix("# TYPE ") {
                let family = line.dropFirst(7).prefix { $0 != " " }
                if !helped.contains(family), let text = texts[String(family)] {
                    output += "# HELP \(family) \(text)\n"
                    helped.insert(family)
                }
            }
            output += line
            output += "\n"
        }
        if exposition.hasSuffix("\n") { output.removeLast() }
        return output
    }
}

import AdWorkerPostgres
import ArgumentParser
import Foundation
import Logging

/// `adworker stats --model NAME`: per-model performance over a window, from SQL.
struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Per-model statistics over the last hours: record counts, processing time, confidence, anomaly rate."
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The model name, as sent in the records.")
    var model: String

    @Option(help: "The window: records whose event time is within the last H hours.")
    var hours: Double = 24

    @Flag(help: "Print JSON.")
    var json = false

    struct Statistics: Codable, Equatable {
        var model: String
        var hours: Double
        var trainingRecords: Int
        var inferenceRecords: Int
        var meanProcessingMilliseconds: Double?
        var p95ProcessingMilliseconds: Double?
        var meanConfidence: Double?
        var anomalyRate: Double?
    }

    func validate() throws {
        guard hours > 0 else { throw ValidationError("--hours must be positive") }
    }

    /// One row; each part a query of its own, which Citus runs on the nodes that hold the rows
    /// (it refuses a subquery in a distributed query's select list). The p95 is percentile_cont's, bit for bit, computed from a histogram of the
    /// processing times (whole milliseconds, so one row per distinct value), which a distributed
    /// table (Citus) counts where its rows are: percentile_cont itself would pull every row of
    /// the model to the coordinator. At the position p × (n − 1) of the sorted values it
    /// interpolates between the values at its floor and its ceiling, as PostgreSQL does.
    static let query = """
        WITH window_start AS (SELECT now() - make_interval(secs => $2::float8 * 3600) AS since),
        training AS (SELECT count(*) AS records FROM training_data, window_start WHERE model_name = $1 AND event_time >= since),
        inference AS (
          SELECT count(*) AS records, avg(processing_time_ms) AS mean_ms, avg(confidence) AS confidence,
            avg(is_anomaly::int) FILTER (WHERE is_anomaly IS NOT NULL) AS anomaly_rate
          FROM inference_results, window_start
          WHERE model_name = $1 AND event_time >= since
        ),
        histogram AS (
          SELECT processing_time_ms AS value, count(*) AS rows
          FROM inference_results, window_start
          WHERE model_name = $1 AND event_time >= since AND processing_time_ms IS NOT NULL
          GROUP BY processing_time_ms
        ),
        ranked AS (
          SELECT value, (sum(rows) OVER (ORDER BY value) - rows)::bigint AS first_rank,
            (sum(rows) OVER (ORDER BY value))::bigint AS next_rank, (sum(rows) OVER ())::bigint AS total
          FROM histogram
        ),
        position AS (SELECT 0.95::float8 * (total - 1) AS at FROM ranked LIMIT 1),
        p95 AS (
          SELECT lower.value::float8 + (upper.value::float8 - lower.value::float8) * (at - floor(at)) AS value
          FROM position, ranked lower, ranked upper
          WHERE floor(at) >= lower.first_rank AND floor(at) < lower.next_rank
            AND ceil(at) >= upper.first_rank AND ceil(at) < upper.next_rank
        )
        SELECT training.records, inference.records, inference.mean_ms, p95.value, inference.confidence, inference.anomaly_rate
        FROM training CROSS JOIN inference LEFT JOIN p95 ON true
        """

    func run() async throws {
        let settings = try connection.settings()
        let logger = try connection.bootstrap(settings, label: "adworker.stats")
        let row = try await PostgresConnection.withConnection(try connection.postgres(settings), logger: logger) { postgres in
            try await postgres.query(Self.query, [model, String(hours)])
        }[0]
        let statistics = Statistics(
            model: model, hours: hours, trainingRecords: Int(row[0] ?? "0") ?? 0, inferenceRecords: Int(row[1] ?? "0") ?? 0,
            meanProcessingMilliseconds: row[2].flatMap(Double.init), p95ProcessingMilliseconds: row[3].flatMap(Double.init),
            meanConfidence: row[4].flatMap(Double.init), anomalyRate: row[5].flatMap(Double.init)
        )
        if json {
            try printJSON(statistics)
            return
        }
        func number(_ value: Double?, _ format: String) -> String { value.map { String(format: format, $0) } ?? "-" }
        print("""
            model \(model), last \(number(hours, "%g")) h
              training records        \(statistics.trainingRecords)
              inference records       \(statistics.inferenceRecords)
              processing time mean    \(number(statistics.meanProcessingMilliseconds, "%.1f")) ms
              processing time p95     \(number(statistics.p95ProcessingMilliseconds, "%.1f")) ms
              mean confidence         \(number(statistics.meanConfidence, "%.3f"))
              anomaly rate            \(number(statistics.anomalyRate.map { $0 * 100 }, "%.2f")) %
            """)
    }
}

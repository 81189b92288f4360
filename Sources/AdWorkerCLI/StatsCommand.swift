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

    static let query = """
        WITH window_start AS (SELECT now() - make_interval(secs => $2::float8 * 3600) AS since)
        SELECT
          (SELECT count(*) FROM training_data, window_start WHERE model_name = $1 AND event_time >= since),
          count(*),
          avg(processing_time_ms),
          percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms),
          avg(confidence),
          avg(is_anomaly::int) FILTER (WHERE is_anomaly IS NOT NULL)
        FROM inference_results, window_start
        WHERE model_name = $1 AND event_time >= since
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

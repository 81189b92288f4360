import AdTelemetryRecords
@testable import AdWorkerCore
import AdWorkerPostgres

/// Batch reports as a sink gives them to ``WorkerStatus``, for the status and metrics suites.
enum BatchReports {
    /// A batch of `rows` stored the fast way, each entry enqueued `latency` ms before its commit.
    static func committed(_ rows: Int, stream: String = "training", latency: Int64 = 3) -> BatchReport {
        let now = Timestamp.now()
        return BatchReport(
            stream: stream, entries: rows, insertedRows: rows, duplicateRows: 0, deadLettered: 0, path: .fast, committedAt: now,
            acknowledgedAt: now, enqueuedAt: Array(repeating: Timestamp(millisecondsSinceEpoch: now.millisecondsSinceEpoch - latency), count: rows)
        )
    }
}

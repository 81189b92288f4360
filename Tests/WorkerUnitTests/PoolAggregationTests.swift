import AdWorkerCore
import AdWorkerHTTP
import Foundation
import Testing

@Suite("Pool aggregation")
struct PoolAggregationTests {
    @Test func mergedMetricsKeepEachFamilyOnceAndLabelEveryProcess() {
        let child = """
            # TYPE adworker_rows_inserted_total counter
            adworker_rows_inserted_total{stream="s"} 10
            # TYPE adworker_batch_size histogram
            adworker_batch_size_bucket{stream="s",le="+Inf"} 2
            adworker_batch_size_count{stream="s"} 2
            # TYPE adtelemetry_buffered gauge
            adtelemetry_buffered 3.0
            """
        let merged = PoolAggregation.mergeMetrics([(0, child), (1, child.replacingOccurrences(of: "} 10", with: "} 32"))])
        let lines = merged.split(separator: "\n").map(String.init)
        #expect(lines.filter { $0 == "# TYPE adworker_rows_inserted_total counter" }.count == 1)
        #expect(lines.contains(#"adworker_rows_inserted_total{process="0",stream="s"} 10"#))
        #expect(lines.contains(#"adworker_rows_inserted_total{process="1",stream="s"} 32"#))
        #expect(lines.contains(#"adworker_batch_size_count{process="1",stream="s"} 2"#))
        #expect(lines.contains(#"adtelemetry_buffered{process="0"} 3.0"#))
        // Samples stay under their family's TYPE line.
        let type = lines.firstIndex(of: "# TYPE adworker_batch_size histogram")!
        let bucket = lines.firstIndex(of: #"adworker_batch_size_bucket{process="1",stream="s",le="+Inf"} 2"#)!
        let nextType = lines.firstIndex(of: "# TYPE adtelemetry_buffered gauge")!
        #expect(type < bucket && bucket < nextType)
    }

    @Test func mergedStatusSumsRatesTakesTheWorstLatencyAndShowsDownProcesses() {
        func stream(rows: Int, dead: Int, p99: Double) -> WorkerStatus.StreamSnapshot {
            WorkerStatus.StreamSnapshot(
                stream: "s", entriesPerSecond: Double(rows + dead) / 60, rowsPerSecond: Double(rows) / 60, latencyP50Milliseconds: 10,
                latencyP95Milliseconds: 20, latencyP99Milliseconds: p99, errorRate: Double(dead) / Double(rows + dead), failedAttempts: 1,
                totalEntries: rows + dead, totalRows: rows, totalDeadLetters: dead, streamLength: 5, lag: 0, pending: 2, queueLength: 2
            )
        }
        let first = WorkerStatus.Snapshot(version: "v", uptimeSeconds: 1, streams: [stream(rows: 590, dead: 10, p99: 30)], consumers: [])
        let second = WorkerStatus.Snapshot(version: "v", uptimeSeconds: 1, streams: [stream(rows: 300, dead: 0, p99: 90)], consumers: [])
        let merged = PoolAggregation.mergeStatus(
            version: "v", uptimeSeconds: 2, processes: [(0, .running, first), (1, .running, second), (2, .restarting, nil)]
        )
        let figures = merged.streams[0]
        #expect(figures.totalRows == 890 && figures.totalDeadLetters == 10 && figures.failedAttempts == 2)
        #expect(abs(figures.rowsPerSecond - 890.0 / 60) < 1e-9)
        #expect(abs(figures.errorRate - 10.0 / 900) < 1e-9)
        #expect(figures.latencyP99Milliseconds == 90)
        #expect(figures.pending == 2)
        #expect(merged.consumers.map(\.state) == ["restarting"])
    }

    @Test func mergedHistoryLinesUpPointsByTimeSummingRates() {
        typealias Point = WorkerStatus.HistoryStreamPoint
        func snapshot(_ points: [(Double, Point)]) -> WorkerStatus.Snapshot {
            WorkerStatus.Snapshot(
                version: "v", uptimeSeconds: 1, streams: [], consumers: [],
                history: WorkerStatus.History(points: points.map { WorkerStatus.HistoryPoint(time: $0.0, streams: ["s": $0.1]) })
            )
        }
        let first = snapshot([(100, Point(rowsPerSecond: 10, lag: 3, latencyP99Milliseconds: 4)), (105, Point(rowsPerSecond: 20, lag: 0, latencyP99Milliseconds: 2))])
        let second = snapshot([(105, Point(rowsPerSecond: 5, lag: 0, latencyP99Milliseconds: 9)), (110, Point(rowsPerSecond: 1, lag: nil, latencyP99Milliseconds: nil))])
        let merged = PoolAggregation.mergeStatus(version: "v", uptimeSeconds: 2, processes: [(0, .running, first), (1, .running, second)])
        let points = merged.history?.points ?? []
        #expect(points.map(\.time) == [100, 105, 110])
        #expect(points.map { $0.streams["s"]!.rowsPerSecond } == [10, 25, 1])
        #expect(points.map { $0.streams["s"]!.latencyP99Milliseconds } == [4, 9, nil])
        #expect(points.map { $0.streams["s"]!.lag } == [3, 0, nil])
    }
}

import AdTelemetryRecords
@testable import AdWorkerCore
import AdWorkerPostgres
import Foundation
import Testing

@Suite struct WorkerStatusTests {
    /// /readyz once answered 200 between the probes' first success and the consumer name's lease
    /// (readyz-load saw "taking the consumer name" after a 200): not ready until the consumers start.
    @Test func aWorkerIsNotReadyBeforeItsConsumersStart() {
        let status = WorkerStatus(version: "test")
        #expect(status.notReadyReasons(probing: [], probeMaximumAge: .seconds(5)) == ["starting: the consumers have not started yet"])
        status.problem("lease", "taking the consumer name w")
        #expect(status.notReadyReasons(probing: [], probeMaximumAge: .seconds(5)) == ["taking the consumer name w"])
        status.problem("lease", nil)
        status.markStarted()
        #expect(status.notReadyReasons(probing: [], probeMaximumAge: .seconds(5)).isEmpty)
    }

    @Test func ratesInTheFirstMinuteArePerSecondOfUptimeNotOfTheWholeWindow() {
        let before = Timestamp.now()
        let status = WorkerStatus(version: "t", startedAt: Timestamp(millisecondsSinceEpoch: before.millisecondsSinceEpoch - 10_000))
        status.recordBatch(BatchReports.committed(1000), deadLetterCodes: [], insertDuration: .milliseconds(1))
        let rate = status.snapshot().streams[0].rowsPerSecond
        // 1000 rows in the 10 s the worker has been up: 100 rows/s (the whole window would say 16.7).
        #expect(rate > 98 && rate <= 100, "\(rate)")
    }

    @Test func aFullMinuteDividesByTheWindow() {
        let before = Timestamp.now()
        let status = WorkerStatus(version: "t", startedAt: Timestamp(millisecondsSinceEpoch: before.millisecondsSinceEpoch - 600_000))
        status.recordBatch(BatchReports.committed(600), deadLetterCodes: [], insertDuration: .milliseconds(1))
        #expect(status.snapshot().streams[0].rowsPerSecond == 10)
    }

    @Test func historyHasOnePointPerIntervalWithTheIntervalsRateLagAndLatency() {
        let status = WorkerStatus(version: "t")
        status.recordBatch(BatchReports.committed(500, latency: 7), deadLetterCodes: [], insertDuration: .milliseconds(1))
        status.recordQueue(stream: "training", length: 10, lag: 4, pending: 0)
        // Points cover completed seconds: ask one interval later, as the sampler would.
        let later = Timestamp(millisecondsSinceEpoch: Timestamp.now().millisecondsSinceEpoch + 5_000)
        status.recordHistory(now: later)
        status.recordHistory(now: later)  // within the same interval: no second point
        let points = status.snapshot().history?.points ?? []
        #expect(points.count == 1)
        let point = points.first?.streams["training"]
        #expect(point?.rowsPerSecond == 100)
        #expect(point?.lag == 4)
        #expect(point?.latencyP99Milliseconds == 7)
        #expect(Int64(points.first?.time ?? 0) % Int64(WorkerStatus.History.interval) == 0)
        #expect(status.snapshot().history?.intervalSeconds == WorkerStatus.History.interval)
    }

    @Test func historyKeepsItsCapacity() {
        let status = WorkerStatus(version: "t")
        let start = Timestamp.now().millisecondsSinceEpoch
        for step in 0..<(WorkerStatus.History.capacity + 7) {
            status.recordHistory(now: Timestamp(millisecondsSinceEpoch: start + Int64(step * WorkerStatus.History.interval * 1000)))
        }
        let points = status.snapshot().history?.points ?? []
        #expect(points.count == WorkerStatus.History.capacity)
        #expect(points == points.sorted { $0.time < $1.time })
    }

    @Test func aStreamIsStalledOnlyWhileEntriesWaitWithoutProgressAndWithoutACircuitToExplainIt() {
        let status = WorkerStatus(version: "t")
        let timeout: Duration = .seconds(120)
        let later = ContinuousClock.now + .seconds(200)
        status.recordQueue(stream: "training", length: 100, lag: 0, pending: 0)
        #expect(status.stalledStreams(after: timeout, now: later).isEmpty, "nothing waits")

        status.recordQueue(stream: "training", length: 100, lag: 40, pending: 10)
        #expect(status.stalledStreams(after: timeout, now: ContinuousClock.now).isEmpty, "within the timeout")
        let stalled = status.stalledStreams(after: timeout, now: later)
        #expect(stalled.count == 1 && stalled[0].hasPrefix("training: no batch committed"), "\(stalled)")

        status.circuit("postgres", role: "sink 1", of: "host-0", stream: "training", isOpen: true)
        #expect(status.stalledStreams(after: timeout, now: later).isEmpty, "an open circuit explains it")
        status.circuit("postgres", role: "sink 1", of: "host-0", stream: "training", isOpen: false)
        #expect(status.stalledStreams(after: timeout, now: later).count == 1)

        status.problem("group training", "cannot create consumer group")
        #expect(status.stalledStreams(after: timeout, now: later).isEmpty, "a raised problem explains it")
        status.problem("group training", nil)

        status.caughtUp(stream: "training")
        #expect(status.stalledStreams(after: timeout, now: ContinuousClock.now + .seconds(60)).isEmpty, "progress resets the clock")
        status.recordBatch(BatchReports.committed(1), deadLetterCodes: [], insertDuration: .milliseconds(1))
        #expect(status.stalledStreams(after: timeout, now: ContinuousClock.now + .seconds(60)).isEmpty)
        #expect(status.stalledStreams(after: timeout, now: ContinuousClock.now + .seconds(121)).count == 1)
    }

    @Test func helpLinesGoBeforeEachTypeLineOnce() {
        let exposition = """
            # TYPE adworker_rows_inserted_total counter
            adworker_rows_inserted_total{stream="training"} 3
            # HELP adworker_stream_length Already has one.
            # TYPE adworker_stream_length gauge
            adworker_stream_length{stream="training"} 9
            # TYPE something_else gauge
            something_else 1

            """
        // Only the family without HELP gains a line, right before its TYPE line.
        let help = "# HELP adworker_rows_inserted_total \(MetricHelp.texts["adworker_rows_inserted_total"]!)\n"
        #expect(MetricHelp.annotate(exposition) == help + exposition)
    }

    /// Every metric the sources create has HELP text: a new one without fails here.
    @Test func everyMetricInTheSourcesHasHelpText() throws {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources")
        var names: Set<String> = []
        let pattern = try Regex(#"label: "((?:adworker|adtelemetry)_[a-z_]+)""#)
        for case let file as URL in FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)! where file.pathExtension == "swift" {
            for match in try String(contentsOf: file, encoding: .utf8).matches(of: pattern) {
                names.insert(String(match.output[1].substring!))
            }
        }
        #expect(names.count > 15, "\(names)")
        #expect(names.subtracting(MetricHelp.texts.keys).isEmpty, "\(names.subtracting(MetricHelp.texts.keys))")
    }
}

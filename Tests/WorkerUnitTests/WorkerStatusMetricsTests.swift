import AdTelemetryRecords
@testable import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import Metrics
import MetricsTestKit
import Synchronization
import Testing

/// WorkerStatus's metrics, each test with a factory of its own: exact values, no process-global registry.
@Suite struct WorkerStatusMetricsTests {
    /// A TestMetrics that counts the handles asked for.
    final class CountingFactory: MetricsFactory {
        let metrics = TestMetrics()
        let made = Mutex(0)

        func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
            made.withLock { $0 += 1 }
            return metrics.makeCounter(label: label, dimensions: dimensions)
        }
        func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
            made.withLock { $0 += 1 }
            return metrics.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
        }
        func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
            made.withLock { $0 += 1 }
            return metrics.makeTimer(label: label, dimensions: dimensions)
        }
        func destroyCounter(_ handler: any CounterHandler) {}
        func destroyRecorder(_ handler: any RecorderHandler) {}
        func destroyTimer(_ handler: any TimerHandler) {}
    }

    static func batch(_ rows: Int) -> BatchReport { BatchReports.committed(rows, stream: "s") }

    @Test func aBatchCountsExactlyIntoItsStreamsSeriesAndMakesNoHandleOnceTheStreamHasThem() throws {
        let factory = CountingFactory()
        let status = WorkerStatus(version: "t", shards: ["s": 3], factory: factory)
        status.declare(stream: "s")
        status.recordBatch(Self.batch(10), deadLetterCodes: [.undecodable(.invalidJSON)], insertDuration: .milliseconds(4))
        let made = factory.made.withLock { $0 }
        status.recordBatch(Self.batch(5), deadLetterCodes: [.undecodable(.invalidJSON), .maxDeliveriesExceeded], insertDuration: .milliseconds(2))
        #expect(factory.made.withLock { $0 } == made, "the second batch reuses the stream's handles")

        let labels = [("stream", "s"), ("shard", "3")]
        let metrics = factory.metrics
        #expect(try metrics.expectCounter("adworker_entries_read_total", labels).totalValue == 15)
        #expect(try metrics.expectCounter("adworker_rows_inserted_total", labels).totalValue == 15)
        #expect(try metrics.expectCounter("adworker_entries_acknowledged_total", labels).totalValue == 15)
        #expect(try metrics.expectCounter("adworker_dead_letters_total", labels + [("reason", "invalid_json")]).totalValue == 2)
        #expect(try metrics.expectCounter("adworker_dead_letters_total", labels + [("reason", "max_deliveries_exceeded")]).totalValue == 1)
        #expect(try metrics.expectCounter("adworker_dead_letters_total", labels + [("reason", "nul_byte")]).values == [0], "declared at 0")
        #expect(try metrics.expectCounter("adworker_dead_letters_trimmed_total", labels).values == [0])
        #expect(try metrics.expectRecorder("adworker_batch_size", labels).values == [10, 5])
        #expect(try metrics.expectTimer("adworker_insert_duration_seconds", labels).values == [4_000_000, 2_000_000])
        #expect(try metrics.expectTimer("adworker_end_to_end_latency_seconds", labels).values.count == 15)
        #expect(try metrics.expectGauge("adworker_circuit_open", labels + [("target", "postgres")]).values == [0])
    }

    /// Maintenance counted trimmed dead letters under `stream` alone, a second series beside the
    /// declared `{stream, shard}` one on a sharded stream; they go to the stream's own handle now.
    @Test func trimmedDeadLettersCountInTheStreamsDeclaredSeries() throws {
        let metrics = TestMetrics()
        let status = WorkerStatus(version: "t", shards: ["s": 3], factory: metrics)
        status.declare(stream: "s")
        status.recordTrimmedDeadLetters(stream: "s", count: 4)
        #expect(try metrics.expectCounter("adworker_dead_letters_trimmed_total", [("stream", "s"), ("shard", "3")]).totalValue == 4)
        #expect(throws: (any Error).self) { try metrics.expectCounter("adworker_dead_letters_trimmed_total", [("stream", "s")]) }
    }

    @Test func seriesAppearWithTheirFirstFigureAsBefore() throws {
        let metrics = TestMetrics()
        let status = WorkerStatus(version: "t", factory: metrics)
        status.recordQueue(stream: "s", length: 9, lag: nil, pending: 2)
        let labels = [("stream", "s")]
        #expect(try metrics.expectGauge("adworker_stream_length", labels).values == [9])
        #expect(try metrics.expectGauge("adworker_pending_entries", labels).values == [2])
        #expect(throws: (any Error).self, "no lag reported: no lag series") { try metrics.expectGauge("adworker_consumer_group_lag", labels) }
        #expect(throws: (any Error).self) { try metrics.expectTimer("adworker_end_to_end_latency_seconds", labels) }
        #expect(throws: (any Error).self) { try metrics.expectGauge("adworker_workers_alive", labels) }
        status.recordQueue(stream: "s", length: 9, lag: 4, pending: 2, deadLetters: 1)
        #expect(try metrics.expectGauge("adworker_consumer_group_lag", labels).values == [4])
        #expect(try metrics.expectGauge("adworker_dead_letter_stream_length", labels).values == [1])
    }

    @Test func consumersCircuitsProbesAndPermanentFailuresSetTheirGauges() throws {
        let metrics = TestMetrics()
        let status = WorkerStatus(version: "t", factory: metrics)
        let labels = [("stream", "s")]
        status.consumer("a", stream: "s", state: .running)
        status.consumer("b", stream: "s", state: .running)
        status.consumer("a", stream: "s", state: .stopped)
        #expect(try metrics.expectGauge("adworker_workers_alive", labels).values == [1, 2, 1])

        status.circuit("redis", role: "reader", of: "a", stream: "s", isOpen: true)
        status.circuit("redis", role: "sink 1", of: "b", stream: "s", isOpen: true)
        status.circuit("redis", role: "reader", of: "a", stream: "s", isOpen: false)
        status.declare(stream: "s")
        #expect(try metrics.expectGauge("adworker_circuit_open", labels + [("target", "redis")]).values == [1, 1, 1], "declare leaves an open one alone")

        status.recordProbe("postgres", failure: "refused")
        status.recordProbe("postgres", failure: nil)
        #expect(try metrics.expectGauge("adworker_target_up", [("target", "postgres")]).values == [0, 1])

        status.permanentFailure("group s", target: "redis", PermanentFailure(RedisError(.outOfMemory, "OOM")))
        status.permanentFailure("group s", target: "redis", nil)
        #expect(try metrics.expectGauge("adworker_permanent_errors", [("target", "redis"), ("kind", "outOfMemory")]).values == [1, 0])

        status.recordFailure(stream: "s", target: "postgres", error: PostgresError(.serverError, "x", sqlState: "42P01"))
        let errors = labels + [("target", "postgres"), ("kind", "serverError"), ("sqlstate", "42P01")]
        #expect(try metrics.expectCounter("adworker_errors_total", errors).totalValue == 1)
    }
}

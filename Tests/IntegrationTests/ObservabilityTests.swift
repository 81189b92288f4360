import AdTelemetry
import AdWorkerTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import AdTelemetryRecords
import AdWorkerCore
import AdWorkerHTTP
import AdWorkerPostgres
import AdWorkerRedis
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import Testing

/// One Prometheus registry for the test process: swift-metrics can be bootstrapped only once.
enum TestMetrics {
    static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }()
}

@Suite("Metrics, /status and /readyz on a known workload", .timeLimit(.minutes(2)))
struct ObservabilityTests {
    @Test func figuresMatchTheWorkload() async throws {
        let registry = TestMetrics.registry
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres, concurrency: 2)
                configuration.kinds = [.inference]
                let stream = configuration.streams(for: .inference)[0]

                // 3,000 records through the producer, and 3 poison entries.
                // The producer's metrics in a registry of this test's own: other suites' producers
                // count into the process's, so there only a lower bound could be checked.
                let producerMetrics = PrometheusCollectorRegistry()
                let producer = TelemetryProducer(
                    configuration: TelemetryProducerConfiguration(redis: TestServers.redis, streamPrefix: prefix), logger: TestServers.logger,
                    metricsFactory: PrometheusMetricsFactory(registry: producerMetrics)
                )
                var telemetry = SyntheticTelemetry(seed: 11)
                let records = (0..<3000).map { TelemetryRecord.inference(telemetry.inference(model: "obs", requestID: "r-\($0)")) }
                let sent = try await withRunningService(producer) {
                    try await producer.send(records).count { (try? $0.get()) != nil }
                }
                #expect(sent == 3000)
                try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    let poison = [
                        StreamFields([("v", "1"), ("model", "obs"), ("request_id", "p1"), ("ts", "1"), ("prediction", "{")]),
                        StreamFields([("v", "9"), ("model", "obs"), ("request_id", "p2"), ("ts", "1"), ("prediction", "1")]),
                        StreamFields([("v", "1"), ("model", "obs"), ("ts", "1"), ("prediction", "1")]),
                    ]
                    _ = try await redis.add(poison.map { RedisCommand.streamAdd(to: stream, fields: $0) })
                }

                // Up for over a minute, so rates are per second of the whole window.
                let status = WorkerStatus(version: "test", startedAt: Timestamp(millisecondsSinceEpoch: Timestamp.now().millisecondsSinceEpoch - 120_000))
                let workerConfiguration = configuration
                let port = try TestPorts.free()
                let server = ObservabilityServer.application(
                    host: "127.0.0.1", port: port, status: status, registry: registry,
                    readiness: { Readiness.reasons(status: status) },
                    logger: TestServers.logger
                )
                let group = ServiceGroup(services: [server], logger: TestServers.logger)
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { try await group.run() }
                    defer { tasks.cancelAll() }
                    try await WorkerService(configuration: configuration, logger: TestServers.logger, status: status).run()

                    let base = "http://127.0.0.1:\(port)"
                    // The server starts in its own task: wait until it listens.
                    try await waitUntil("the endpoint answers") { (try? await Self.get(base + "/healthz")) != nil }
                    #expect(try await Self.get(base + "/readyz").status == 503, "not probed yet")
                    try await ReadinessProbe(
                        redis: workerConfiguration.redis, postgres: workerConfiguration.postgres, status: status, logger: TestServers.logger
                    ).probeOnce()
                    #expect(try await Self.get(base + "/healthz").status == 200)
                    #expect(try await Self.get(base + "/readyz").status == 200)

                    let snapshot = try JSONDecoder().decode(WorkerStatus.Snapshot.self, from: try await Self.get(base + "/status").body)
                    let figures = try #require(snapshot.streams.first { $0.stream == stream })
                    #expect(figures.totalEntries == 3003)
                    #expect(figures.deadLetterStreamLength == 3)
                    #expect(figures.totalRows == 3000)
                    #expect(figures.totalDeadLetters == 3)
                    #expect(abs(figures.errorRate - 3.0 / 3003.0) < 1e-9)
                    #expect(abs(figures.rowsPerSecond * Double(WorkerStatus.window) - 3000) < 1e-6)
                    #expect(figures.lag == 0)
                    #expect(figures.pending == 0)
                    #expect(figures.queueLength == 0)
                    #expect(figures.streamLength == 3003)
                    let p50 = try #require(figures.latencyP50Milliseconds)
                    let p95 = try #require(figures.latencyP95Milliseconds)
                    let p99 = try #require(figures.latencyP99Milliseconds)
                    #expect(p50 > 0 && p50 <= p95 && p95 <= p99)
                    #expect(snapshot.consumers.filter { $0.stream == stream }.map(\.state) == ["stopped", "stopped"])

                    let metrics = String(decoding: try await Self.get(base + "/metrics").body, as: UTF8.self)
                    let label = "{stream=\"\(stream)\"}"
                    let lines = metrics.split(separator: "\n")
                    for (index, line) in lines.enumerated() where line.hasPrefix("# TYPE ") {
                        let family = line.split(separator: " ")[2]
                        #expect(index > 0 && lines[index - 1].hasPrefix("# HELP \(family) "), "no HELP for \(family)")
                    }
                    #expect(PrometheusText.value(in: metrics, "adworker_rows_inserted_total" + label) == 3000)
                    #expect(PrometheusText.value(in: metrics, "adworker_entries_read_total" + label) == 3003)
                    #expect(PrometheusText.value(in: metrics, "adworker_entries_acknowledged_total" + label) == 3003)
                    #expect(PrometheusText.value(in: metrics, "adworker_end_to_end_latency_seconds_count" + label) == 3003)
                    #expect(PrometheusText.value(in: metrics, "adworker_consumer_group_lag" + label) == 0)
                    #expect(PrometheusText.value(in: metrics, "adworker_pending_entries" + label) == 0)
                    #expect(PrometheusText.value(in: metrics, "adworker_workers_alive" + label) == 0)
                    let dead = ["invalid_json", "unknown_version", "missing_field"].map {
                        PrometheusText.value(in: metrics, "adworker_dead_letters_total{stream=\"\(stream)\",reason=\"\($0)\"}")
                            ?? PrometheusText.value(in: metrics, "adworker_dead_letters_total{reason=\"\($0)\",stream=\"\(stream)\"}")
                    }
                    #expect(dead == [1, 1, 1])
                    // Series that never moved exist at 0, so a rule's increase() sees their first change.
                    #expect(PrometheusText.value(in: metrics, "adworker_dead_letters_total{stream=\"\(stream)\",reason=\"nul_byte\"}") == 0)
                    #expect(PrometheusText.value(in: metrics, "adworker_circuit_open{stream=\"\(stream)\",target=\"postgres\"}") == 0)
                    #expect(PrometheusText.value(in: metrics, "adworker_dead_letters_trimmed_total" + label) == 0)
                    var producerText: [UInt8] = []
                    producerMetrics.emit(into: &producerText)
                    #expect(PrometheusText.value(in: String(decoding: producerText, as: UTF8.self), "adtelemetry_sent_total") == 3000)
                    #expect(!metrics.contains("password"))
                    await group.triggerGracefulShutdown()
                }
            }
        }
    }

    static func get(_ address: String) async throws -> (status: Int, body: Data) {
        var request = URLRequest(url: URL(string: address)!)
        request.timeoutInterval = 5
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }

    /// The value of one sample line `name{labels} value` in Prometheus text.
}

import AdTelemetry
import AdTelemetryRecords
import AdWorkerRedis
import AdWorkerTestSupport
import Foundation
import Prometheus
import Synchronization
import Testing

/// The producer against a redis-server that is not there yet: records wait and are sent once it
/// answers, instead of failing. A real redis-server, started by the test on a free port.
@Suite("Producer retries what Redis certainly did not store", .timeLimit(.minutes(1)))
struct ProducerRetryTests {
    @Test func recordsSentWhileRedisIsDownArriveOnceItStarts() async throws {
        let port = try TestPorts.free()
        var redis = TestServers.redis
        redis.port = port
        redis.connectTimeout = .milliseconds(200)
        let producer = TelemetryProducer(configuration: TelemetryProducerConfiguration(redis: redis, streamPrefix: "retry:"), logger: TestServers.logger)
        var telemetry = SyntheticTelemetry(seed: 3)
        let records = (0..<500).map { TelemetryRecord.inference(telemetry.inference(model: "m", requestID: "r-\($0)")) }
        let server = try TestServers.privateRedisServer(port: port)
        defer { stop(server) }
        let results = try await withRunningService(producer) {
            async let sent = producer.send(records)
            // Nothing listens yet: every attempt is refused, and the records wait.
            try await waitUntil("the producer holds the 500 records") { await producer.bufferedCount == 500 }
            try server.run()
            return try await sent
        }
        #expect(results.count { (try? $0.get()) != nil } == 500)
        let length = try await RedisConnection.withConnection(redis, logger: TestServers.logger) { try await $0.streamLength("retry:inference") }
        #expect(length == 500)
    }

    @Test func recordsSubmittedWhileRedisIsAwayWaitOnDiskNotInMemory() async throws {
        let port = try TestPorts.free()
        var redis = TestServers.redis
        redis.port = port
        redis.connectTimeout = .milliseconds(200)
        let spool = FileManager.default.temporaryDirectory.appendingPathComponent("adworker-through-\(port)-\(UInt32.random(in: 0 ... .max))").path
        defer { try? FileManager.default.removeItem(atPath: spool) }
        var configuration = TelemetryProducerConfiguration(redis: redis, streamPrefix: "through:")
        configuration.spoolDirectory = spool
        configuration.maximumBufferedRecords = 1000
        let producer = TelemetryProducer(configuration: configuration, logger: TestServers.logger)
        let server = try TestServers.privateRedisServer(port: port)
        defer { stop(server) }
        var telemetry = SyntheticTelemetry(seed: 5)
        try await withRunningService(producer) {
            // 500 records, half what memory holds: Redis refuses the first pipeline, and from then
            // on every accepted record is on disk (a kill -9 of the service loses none).
            for number in 0..<250 {
                let (training, inference) = telemetry.request(number: number)
                try await producer.submit(training: training, inference: inference)
            }
            // (A batch read back from the spool to retry is counted in memory too: it stays on disk.)
            try await waitUntil("500 records on disk") { await producer.spooledCount == 500 }
            try server.run()
            try await waitUntil("nothing left on disk or in memory") {
                let (spooled, buffered) = (await producer.spooledCount, await producer.bufferedCount)
                return spooled == 0 && buffered == 0
            }
        }
        let lengths = try await RedisConnection.withConnection(redis, logger: TestServers.logger) {
            [try await $0.streamLength("through:training"), try await $0.streamLength("through:inference")]
        }
        #expect(lengths == [250, 250])
    }

    @Test func aRequestWithTwoRequestIDsIsAThrownError() async throws {
        let producer = TelemetryProducer(configuration: TelemetryProducerConfiguration(redis: TestServers.redis, streamPrefix: "unused:"), logger: TestServers.logger)
        var telemetry = SyntheticTelemetry(seed: 4)
        let (training, _) = telemetry.request(number: 1)
        let (_, inference) = telemetry.request(number: 2)
        let error = await #expect(throws: TelemetryProducerError.self) { try await producer.submit(training: training, inference: inference) }
        #expect(error?.code == .invalidRequest)
    }
}

/// Connections killed while pipelines are in flight (`CLIENT KILL`, as a proxy or a restart
/// would cut them): Redis ran part of each cut pipeline. The producer looks up which of its
/// records landed, by their origin field, and resends only the others.
@Suite("Producer resends a cut pipeline's records once", .timeLimit(.minutes(1)))
struct ProducerCutPipelineTests {
    @Test func recordsOfPipelinesCutMidWayAreStoredOnce() async throws {
        let port = try TestPorts.free()
        var redis = TestServers.redis
        redis.port = port
        let server = try TestServers.privateRedisServer(port: port)
        try server.run()
        defer { stop(server) }
        for _ in 0..<100 {
            if (try? await RedisConnection.withConnection(redis, logger: TestServers.logger) { try await $0.ping() }) != nil { break }
            try await Task.sleep(for: .milliseconds(20))
        }

        let metrics = PrometheusCollectorRegistry()
        let producer = TelemetryProducer(
            configuration: TelemetryProducerConfiguration(redis: redis, streamPrefix: "cut:"), logger: TestServers.logger,
            metricsFactory: PrometheusMetricsFactory(registry: metrics)
        )
        var telemetry = SyntheticTelemetry(seed: 5)
        let records = (0..<60_000).map { TelemetryRecord.inference(telemetry.inference(model: "m", requestID: "r-\($0)")) }
        let killed = KillTally()
        let target = redis
        let results = try await withRunningService(producer) {
            try await withThrowingTaskGroup(of: Void.self) { killer in
                // Once the records are queued: up to 20 kills 25 ms apart while some are unconfirmed,
                // until one has cut a pipeline Redis had run part of (a kill between two
                // pipelines, or before Redis read any of one, cuts nothing to look up).
                killer.addTask {
                    while await producer.bufferedCount == 0 { try await Task.sleep(for: .milliseconds(5)) }
                    try await RedisConnection.withConnection(target, logger: TestServers.logger) { admin in
                        for _ in 0..<20 {
                            try await Task.sleep(for: .milliseconds(25))
                            guard await producer.bufferedCount > 0, Self.foundStored(in: metrics) == 0 else { return }
                            let count = try await admin.send(RedisCommand("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")).integer ?? 0
                            killed.count.withLock { $0 += Int(count) }
                        }
                    }
                }
                defer { killer.cancelAll() }
                return try await producer.send(records)
            }
        }
        let kills = killed.count.withLock { $0 }
        print("connections killed: \(kills)")
        #expect(kills > 0)
        let ids = results.compactMap { try? $0.get() }
        #expect(ids.count == 60_000)
        #expect(Set(ids).count == 60_000)
        let length = try await RedisConnection.withConnection(redis, logger: TestServers.logger) { try await $0.streamLength("cut:inference") }
        #expect(length == 60_000)
        // Redis had run part of a cut pipeline, and the lookup found it.
        #expect(Self.foundStored(in: metrics) > 0)
    }

    private static func foundStored(in registry: PrometheusCollectorRegistry) -> Double {
        var text: [UInt8] = []
        registry.emit(into: &text)
        return PrometheusText.value(in: String(decoding: text, as: UTF8.self), #"adtelemetry_unknown_outcome_total{resolution="stored"}"#) ?? 0
    }
}

private final class KillTally: Sendable {
    let count = Mutex(0)
}


/// SIGKILL, not terminate(): the child inherits the test process's blocked signals, and a SIGTERM
/// it never received left these servers running after the tests.
private func stop(_ server: Process) {
    if server.processIdentifier > 0 { kill(server.processIdentifier, SIGKILL) }
}

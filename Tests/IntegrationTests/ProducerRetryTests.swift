import AdTelemetry
import Foundation
import Redis
import TelemetryRecords
import Testing

/// The producer against a redis-server that is not there yet: records wait and are sent once it
/// answers, instead of failing. A real redis-server, started by the test on a free port.
@Suite("Producer retries what Redis certainly did not store", .timeLimit(.minutes(1)))
struct ProducerRetryTests {
    @Test func recordsSentWhileRedisIsDownArriveOnceItStarts() async throws {
        let port = Int.random(in: 45_000...46_000)
        var redis = TestServers.redis
        redis.port = port
        redis.connectTimeout = .milliseconds(200)
        let producer = TelemetryProducer(configuration: TelemetryProducerConfiguration(redis: redis, streamPrefix: "retry:"), logger: TestServers.logger)
        var telemetry = SyntheticTelemetry(seed: 3)
        let records = (0..<500).map { TelemetryRecord.inference(telemetry.inference(model: "m", requestID: "r-\($0)")) }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("adworker-retry-\(port)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // In the foreground as this process's child, ended by SIGTERM: never waited for here
        // (Foundation's waitUntilExit hung from a test task).
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = ["redis-server", "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        defer { if server.isRunning { server.terminate() } }
        let results = try await EndToEndTests.withRunningProducer(producer) {
            async let sent = producer.send(records)
            // Nothing listens yet: every attempt is refused, and the records wait.
            try await Task.sleep(for: .milliseconds(700))
            #expect(await producer.bufferedCount == 500)
            try server.run()
            return try await sent
        }
        #expect(results.count { (try? $0.get()) != nil } == 500)
        let length = try await RedisConnection.withConnection(redis, logger: TestServers.logger) { try await $0.streamLength("retry:inference") }
        #expect(length == 500)
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

import AdTelemetryRecords
import AdWorkerCore
import AdWorkerRedis
import AdWorkerTestSupport
import ServiceLifecycle
import Testing

/// A configured stream whose key holds another type (a string someone SET by mistake) holds up
/// only its own consumers.
@Suite("A key that is not a stream, on real servers", .timeLimit(.minutes(2)))
struct StreamKeyTypeTests {
    @Test func aKeyThatIsNotAStreamStopsOnlyItsOwnConsumersAndTheyStartOnceItIsOne() async throws {
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres, concurrency: 1)
                configuration.drain = false
                // Queue sampling and trimming touch every stream too: neither may stall on this one.
                configuration.trimInterval = .milliseconds(100)
                let training = configuration.streams(for: .training)[0]
                let inference = configuration.streams(for: .inference)[0]
                try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    _ = try await redis.send(RedisCommand("SET", training, "not a stream"))
                }
                _ = try await TestServers.addInferenceEntries(500, to: inference)

                let status = WorkerStatus(version: "test")
                let worker = ServiceGroup(
                    services: [WorkerService(configuration: configuration, logger: TestServers.logger, status: status)], logger: TestServers.logger
                )
                func reasons() -> [String] { status.notReadyReasons(probing: [], probeMaximumAge: .seconds(5)) }
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { try await worker.run() }
                    try await waitUntil { try await TestServers.count(postgres, "inference_results") == 500 }
                    try await waitUntil { reasons().contains { $0.contains(training) && $0.contains("not a stream") } }
                    // The queues of the good stream are still sampled.
                    try await waitUntil { status.snapshot().streams.contains { $0.stream == inference && $0.lag == 0 } }

                    // The key is removed: the group is created and the stream's consumer starts.
                    var telemetry = SyntheticTelemetry(seed: 3)
                    try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                        try await redis.delete([training])
                        try await waitUntil { try await redis.groups(of: training).contains { $0.name == configuration.group } }
                        let commands = (0..<100).map { number -> RedisCommand in
                            var command = RedisCommand.streamAdd(to: training)
                            WireFormat.encode(telemetry.training(model: "m", requestID: "t-\(number)"), into: &command)
                            return command
                        }
                        _ = try await redis.add(commands).map { try $0.get() }
                    }
                    try await waitUntil { try await TestServers.count(postgres, "training_data") == 100 }
                    #expect(!reasons().contains { $0.contains(training) })
                    await worker.triggerGracefulShutdown()
                    try await tasks.waitForAll()
                }
            }
        }
    }

    /// The same for a dead-letter key: the stream's own queue figures are still sampled.
    @Test func aDeadLetterKeyThatIsNotAStreamLeavesTheStreamsQueueFiguresSampled() async throws {
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres, concurrency: 1)
                configuration.drain = false
                let inference = configuration.streams(for: .inference)[0]
                try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    _ = try await redis.send(RedisCommand("SET", DeadLetter.stream(for: inference), "not a stream"))
                }
                _ = try await TestServers.addInferenceEntries(50, to: inference)

                let status = WorkerStatus(version: "test")
                let worker = ServiceGroup(
                    services: [WorkerService(configuration: configuration, logger: TestServers.logger, status: status)], logger: TestServers.logger
                )
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { try await worker.run() }
                    try await waitUntil { try await TestServers.count(postgres, "inference_results") == 50 }
                    try await waitUntil {
                        status.snapshot().streams.contains { $0.stream == inference && $0.streamLength == 50 && $0.lag == 0 }
                    }
                    await worker.triggerGracefulShutdown()
                    try await tasks.waitForAll()
                }
            }
        }
    }
}

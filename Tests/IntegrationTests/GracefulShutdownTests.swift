import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import AdWorkerTestSupport
import ServiceLifecycle
import ServiceLifecycleTestKit
import Testing

/// Drain on SIGTERM: a worker told to shut down gracefully stops reading, commits and
/// acknowledges the batch in hand, and returns (what `adworker run` does when its service group
/// gets SIGTERM). ServiceLifecycleTestKit triggers the shutdown without a signal.
@Suite("Graceful shutdown, on real servers", .timeLimit(.minutes(1)))
struct GracefulShutdownTests {
    @Test func aWorkerShutDownGracefullyCommitsAndAcknowledgesTheBatchInHandBeforeItReturns() async throws {
        try await testGracefulShutdown { shutdown in
            try await TestServers.withTestSchema { postgres in
                try await TestServers.withTestStreams { prefix in
                    var configuration = TestServers.singleConsumerConfiguration(prefix: prefix, postgres: postgres)
                    configuration.drain = false
                    let running = configuration
                    let stream = configuration.streams(for: .inference)[0]
                    _ = try await TestServers.addInferenceEntries(300, to: stream)
                    // The table locked against inserts: the batch the worker reads stays in its
                    // hand, read and not acknowledged, until the shutdown has been asked for.
                    try await PostgresConnection.withConnection(postgres, logger: TestServers.logger) { locker in
                        _ = try await locker.execute("BEGIN")
                        _ = try await locker.execute("LOCK TABLE inference_results IN EXCLUSIVE MODE")
                        try await withThrowingTaskGroup(of: Void.self) { worker in
                            worker.addTask { try await WorkerService(configuration: running, logger: TestServers.logger).run() }
                            try await waitUntil("the worker holds all 300 entries") { try await TestServers.pending(stream) == 300 }
                            shutdown.triggerGracefulShutdown()
                            _ = try await locker.execute("COMMIT")
                            // Drain is off: only the shutdown ends the worker.
                            try await worker.waitForAll()
                        }
                    }
                    #expect(try await TestServers.count(postgres, "inference_results") == 300)
                    #expect(try await TestServers.pending(stream) == 0)
                }
            }
        }
    }
}

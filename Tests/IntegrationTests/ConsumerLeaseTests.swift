import AdWorkerCore
import AdWorkerRedis
import AdWorkerTestSupport
import Foundation
import Testing

@Suite("One live process per consumer name, on real servers", .timeLimit(.minutes(1)))
struct ConsumerLeaseTests {
    /// Two processes with one name would re-read each other's entries as their own pending ones.
    @Test func aSecondWorkerWithTheSameNameIsRefused() async throws {
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                var configuration = TestServers.singleConsumerConfiguration(prefix: prefix, postgres: postgres)
                // Renewed every second: the first holds it through a two-second stall of a loaded
                // test run (at one second, a CI run lost it once and the second worker ran on).
                configuration.consumerLease = .seconds(3)
                configuration.drain = false
                let running = configuration
                let first = Task { try await WorkerService(configuration: running, logger: TestServers.logger).run() }
                defer { first.cancel() }
                // Once the first holds the name, the second waits out one lease duration and refuses.
                let key = prefix + "consumer-lease:" + configuration.consumerPrefix
                try await waitUntil("the first worker holds the name") { try await Self.leaseHolder(key) != nil }
                let error = await #expect(throws: ConsumerNameInUse.self) {
                    try await WorkerService(configuration: configuration, logger: TestServers.logger).run()
                }
                #expect(error?.description.contains("--consumer-name") == true)
                #expect(try await Self.leaseHolder(key)?.contains("pid=\(ProcessInfo.processInfo.processIdentifier)") == true)
            }
        }
    }

    /// A holder killed with -9 on this host left its lease behind: a restart takes it at once
    /// instead of waiting for it to expire.
    @Test func aLeaseLeftByADeadProcessOnThisHostIsTakenAtOnce() async throws {
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                var configuration = TestServers.singleConsumerConfiguration(prefix: prefix, postgres: postgres)
                configuration.consumerLease = .seconds(30)
                let key = prefix + "consumer-lease:" + configuration.consumerPrefix
                let dead = "host=\(ProcessInfo.processInfo.hostName) pid=\(Int32.max) start=1 id=gone"
                try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    _ = try await redis.send(RedisCommand("SET", key, dead, "PX", "30000"))
                }
                let clock = ContinuousClock()
                let start = clock.now
                try await WorkerService(configuration: configuration, logger: TestServers.logger).run()
                #expect(start.duration(to: clock.now) < .seconds(10))
                // Released on the way out (it expires a millisecond later), long before its 30 s.
                try await waitUntil("the lease released", within: .seconds(5)) { try await Self.leaseHolder(key) == nil }
            }
        }
    }

    static func leaseHolder(_ key: String) async throws -> String? {
        try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
            try await redis.send(RedisCommand("GET", key)).string
        }
    }
}

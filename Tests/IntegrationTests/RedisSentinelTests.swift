import AdTelemetry
import AdTelemetryRecords
import AdWorkerCore
import AdWorkerRedis
import AdWorkerTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Against the primary, replica and three sentinels of `scripts/redis-sentinel.sh start` (master
/// `adworker`). Serialized: one test kills the primary.
@Suite("Redis under Sentinel", .serialized, .timeLimit(.minutes(3)))
struct RedisSentinelTests {
    let sentinel = TestServers.redisSentinel

    /// The port of the node the sentinels name, asked of a sentinel directly.
    func namedPrimaryPort() async throws -> Int? {
        var direct = TestServers.redis
        direct.host = sentinel.sentinel!.nodes[0].host
        direct.port = sentinel.sentinel!.nodes[0].port
        let reply = try await RedisConnection.withConnection(direct, logger: TestServers.logger) {
            try await $0.send(RedisCommand("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "adworker"))
        }
        return reply.array.flatMap { $0.count == 2 ? $0[1].string.flatMap { Int($0) } : nil }
    }

    static func serverField(_ name: String, of redis: RedisConnection) async throws -> String? {
        let info = try await redis.send(RedisCommand("INFO", "server")).string ?? ""
        return info.split(whereSeparator: \.isNewline).first { $0.hasPrefix(name + ":") }.map { String($0.dropFirst(name.count + 1)) }
    }

    @Test func aConnectionTalksToThePrimaryTheSentinelsName() async throws {
        let named = try #require(try await namedPrimaryPort())
        let (port, role) = try await RedisConnection.withConnection(sentinel, logger: TestServers.logger) { redis in
            (try await Self.serverField("tcp_port", of: redis), try await redis.send(RedisCommand("ROLE")).array?.first?.string)
        }
        #expect(port == String(named))
        #expect(role == "master")
    }

    @Test func aMasterNameTheSentinelsDoNotKnowIsSaidToBeOne() async throws {
        var configuration = sentinel
        configuration.sentinel?.masterName = "no-such-master"
        let error = await #expect(throws: RedisError.self) {
            try await RedisConnection.withConnection(configuration, logger: TestServers.logger) { try await $0.ping() }
        }
        #expect(error?.code == .unknownMaster)
        #expect(error?.message.contains("knows no master named no-such-master") == true)
    }

    /// The primary killed with -9 while the producer sends about 4,000 records/s and a worker
    /// stores them: the sentinels promote the replica, the producer and the worker ask them again
    /// and go on without a restart, and the killed node comes back as a replica. Replication is
    /// asynchronous, so a record the old primary confirmed but had not passed on can be lost (the
    /// WAIT option is what closes that); nothing is stored twice and nothing stays pending.
    @Test func aPrimaryKilledWithMinusNineIsFollowedWithoutARestart() async throws {
        let outcome = try await failover(sentinel, restartAfter: nil)
        #expect(outcome.confirmed == 8000, "every record confirmed, the failover within the producer's retries")
        // A row whose entry died with the old primary's unreplicated tail is one more than the
        // new primary holds; a record confirmed and lost there before it was stored has none.
        #expect(outcome.rows >= outcome.entries, "every entry of the new primary is a row")
        #expect(8000 - outcome.stored < 400, "confirmed records lost with the old primary's unreplicated tail: \(8000 - outcome.stored)")
    }

    /// The same with ADWORKER_REDIS_WAIT_REPLICAS=1, the killed node restarted 3 s later: confirmed
    /// means the replica had it, so every confirmed record survives the failover, each as one row.
    @Test func withWaitReplicasAPrimaryKilledWithMinusNineLosesNothingConfirmed() async throws {
        var configuration = sentinel
        configuration.replicaWait = RedisReplicaWait(replicas: 1, timeout: .milliseconds(500))
        let outcome = try await failover(configuration, restartAfter: .seconds(3))
        #expect(outcome.confirmed == 8000)
        #expect(outcome.stored == 8000, "confirmed records lost: \(8000 - outcome.stored)")
        #expect(outcome.rows == outcome.entries && outcome.rows == 8000, "rows \(outcome.rows), entries \(outcome.entries): each record once")
    }

    struct FailoverOutcome {
        var confirmed = 0, rows = 0, stored = 0, entries = 0
    }

    /// 8,000 records sent in chunks of 200 every 50 ms, the primary killed after the tenth chunk
    /// (and started again `restartAfter` later); a worker stores them throughout, and a draining
    /// run after it must find nothing pending.
    func failover(_ redis: RedisConfiguration, restartAfter: Duration?) async throws -> FailoverOutcome {
        let outcome = try await TestServers.withTestSchema { postgres in
            let prefix = TestServers.uniqueName("sentinel") + ":"
            var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres)
            configuration.redis = redis
            configuration.drain = false
            // Entries are counted with XLEN: nothing trimmed.
            configuration.trimInterval = nil
            let producer = TelemetryProducer(configuration: TelemetryProducerConfiguration(redis: redis, streamPrefix: prefix), logger: TestServers.logger)
            let before = try #require(try await namedPrimaryPort())
            var telemetry = SyntheticTelemetry(seed: 41)
            let worker = WorkerService(configuration: configuration, logger: TestServers.logger)
            var outcome = FailoverOutcome()
            outcome.confirmed = try await withRunningService(worker) {
                try await withRunningService(producer) {
                    var confirmed = 0
                    var restart: Task<String, any Error>?
                    for chunk in 0..<40 {
                        if chunk == 10 {
                            try await Self.killPrimary(of: redis)
                            if let restartAfter {
                                restart = Task {
                                    try await Task.sleep(for: restartAfter)
                                    return try await Scripts.run("redis-sentinel.sh", ["start"])
                                }
                            }
                        }
                        let records = (0..<100).flatMap { number -> [TelemetryRecord] in
                            let (training, inference) = telemetry.request(number: chunk * 100 + number)
                            return [.training(training), .inference(inference)]
                        }
                        confirmed += try await producer.send(records).map { try $0.get() }.count
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    _ = try await restart?.value
                    return confirmed
                }
            }
            #expect(try await namedPrimaryPort() != before, "the sentinels promoted the replica")
            // The worker that lived through the failover stored what the new primary holds; a
            // run after it finds nothing pending.
            configuration.drain = true
            try await WorkerService(configuration: configuration, logger: TestServers.logger).run()
            outcome.rows = try await TestServers.count(postgres, "training_data") + TestServers.count(postgres, "inference_results")
            let pending: Int
            let dead: Int
            (outcome.entries, pending, dead) = try await RedisConnection.withConnection(sentinel, logger: TestServers.logger) { redis in
                var (entries, pending, dead) = (0, 0, 0)
                for stream in configuration.allStreams {
                    entries += try await redis.streamLength(stream)
                    pending += try await redis.pendingCount(stream, group: "adworker")
                    dead += try await redis.streamLength(stream + ":dead")
                }
                _ = try await redis.delete(configuration.allStreams + configuration.allStreams.map { $0 + ":dead" })
                return (entries, pending, dead)
            }
            #expect(pending == 0)
            // Good entries only: none may end as a dead letter (one that waited out a failover
            // must not count as a failed delivery).
            #expect(dead == 0)
            let requests = try await TestServers.query(
                postgres, "SELECT (SELECT count(DISTINCT request_id) FROM training_data) + (SELECT count(DISTINCT request_id) FROM inference_results)")
            outcome.stored = try #require(requests.first?.first.flatMap { $0.flatMap { Int($0) } })
            print("sentinel failover (wait \(redis.replicaWait?.replicas ?? 0)): \(outcome.confirmed) confirmed, \(outcome.rows) rows of \(outcome.stored) records, \(outcome.entries) entries on the new primary")
            return outcome
        }
        try await Scripts.run("redis-sentinel.sh", ["start"])
        return outcome
    }

    static func killPrimary(of configuration: RedisConfiguration) async throws {
        let pid = try await RedisConnection.withConnection(configuration, logger: TestServers.logger) { try await serverField("process_id", of: $0) }
        kill(try #require(pid.flatMap { Int32($0) }), SIGKILL)
    }
}

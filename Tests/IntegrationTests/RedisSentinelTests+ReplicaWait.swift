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

/// ADWORKER_REDIS_WAIT_REPLICAS against the Sentinel primary and its one replica: confirmed
/// means the replica holds it. In the Sentinel suite, which runs its tests one at a time: these
/// stop and kill its nodes.
extension RedisSentinelTests {
    var waiting: RedisConfiguration {
        var configuration = sentinel
        configuration.replicaWait = RedisReplicaWait(replicas: 1, timeout: .milliseconds(300))
        return configuration
    }

    /// The data node the sentinels do not name: the replica.
    func replicaPort() async throws -> Int {
        let primary = try #require(try await namedPrimaryPort())
        return primary == 6400 ? 6401 : 6400
    }

    func onNode(_ port: Int, _ command: RedisCommand) async throws -> RedisValue {
        var direct = TestServers.redis
        direct.port = port
        return try await RedisConnection.withConnection(direct, logger: TestServers.logger) { try await $0.send(command) }
    }

    func records(_ count: Int, seed: UInt64) -> [TelemetryRecord] {
        var telemetry = SyntheticTelemetry(seed: seed)
        return (0..<count).map { .inference(telemetry.request(number: $0).1) }
    }

    @Test func aConfirmedRecordIsOnTheReplicaAlready() async throws {
        let prefix = TestServers.uniqueName("wait") + ":"
        let producer = TelemetryProducer(configuration: TelemetryProducerConfiguration(redis: waiting, streamPrefix: prefix), logger: TestServers.logger)
        let replica = try await replicaPort()
        try await withRunningService(producer) {
            for round in 0..<20 {
                let ids = try await producer.send(records(100, seed: UInt64(round))).map { try $0.get() }
                // Asked of the replica itself, right after the confirmation: there already.
                let last = try await onNode(replica, RedisCommand("XRANGE", prefix + "inference", ids.last!.description, "+", "COUNT", "1"))
                #expect(last.array?.count == 1, "round \(round): the replica lacks \(ids.last!)")
            }
        }
        _ = try await onNode(try #require(try await namedPrimaryPort()), RedisCommand("DEL", prefix + "inference"))
    }

    /// The replica stopped (SIGSTOP): WAIT falls short, so nothing is confirmed, and the records
    /// the primary holds are looked for, not sent twice; once it runs again they are confirmed.
    @Test func whileTheReplicaIsStoppedNothingIsConfirmedAndNothingIsSentTwice() async throws {
        let prefix = TestServers.uniqueName("wait") + ":"
        let producer = TelemetryProducer(configuration: TelemetryProducerConfiguration(redis: waiting, streamPrefix: prefix), logger: TestServers.logger)
        let replica = try await replicaPort()
        let pid = try #require(Int32(try await onNode(replica, RedisCommand("INFO", "server")).string.flatMap(Self.processID) ?? ""))
        try await withRunningService(producer) {
            _ = try await producer.send(records(10, seed: 1)).map { try $0.get() }
            kill(pid, SIGSTOP)
            // Whatever happens here, the suite's replica runs again after it.
            defer { kill(pid, SIGCONT) }
            let sending = Task { try await producer.send(records(500, seed: 2)).map { try $0.get() } }
            try await Task.sleep(for: .seconds(2))
            let heldWhileStopped = await producer.bufferedCount
            kill(pid, SIGCONT)
            let ids = try await sending.value
            #expect(ids.count == 500)
            #expect(heldWhileStopped == 500, "records confirmed while the replica was stopped: \(500 - heldWhileStopped)")
        }
        let primary = try #require(try await namedPrimaryPort())
        #expect(try await onNode(primary, RedisCommand("XLEN", prefix + "inference")).integer == 510, "each record once")
        _ = try await onNode(primary, RedisCommand("DEL", prefix + "inference"))
    }

    /// The worker stores an entry only once the replica holds it: with the replica stopped, entries
    /// added while the worker blocks in XREADGROUP get no row; once it runs again, all of them do.
    /// (A read's WAIT alone would not say so: Redis moves a client's WAIT offset with its own
    /// replicated writes, and a blocked read answered later is none.)
    @Test func theWorkerStoresNothingTheReplicaDoesNotHold() async throws {
        try await TestServers.withTestSchema { postgres in
            let prefix = TestServers.uniqueName("waitworker") + ":"
            var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres, concurrency: 1)
            configuration.redis = waiting
            configuration.kinds = [.inference]
            configuration.drain = false
            let replica = try await replicaPort()
            let pid = try #require(Int32(try await onNode(replica, RedisCommand("INFO", "server")).string.flatMap(Self.processID) ?? ""))
            let producer = TelemetryProducer(configuration: TelemetryProducerConfiguration(redis: sentinel, streamPrefix: prefix), logger: TestServers.logger)
            let worker = WorkerService(configuration: configuration, logger: TestServers.logger)
            try await withRunningService(worker) {
                try await withRunningService(producer) {
                    _ = try await producer.send(records(10, seed: 3)).map { try $0.get() }
                    try await waitUntil("the first 10 rows") { try await TestServers.count(postgres, "inference_results") == 10 }
                    kill(pid, SIGSTOP)
                    defer { kill(pid, SIGCONT) }
                    _ = try await producer.send(records(100, seed: 4)).map { try $0.get() }
                    try await Task.sleep(for: .seconds(2))
                    let rowsWhileStopped = try await TestServers.count(postgres, "inference_results")
                    kill(pid, SIGCONT)
                    try await waitUntil("110 rows") { try await TestServers.count(postgres, "inference_results") == 110 }
                    #expect(rowsWhileStopped == 10, "rows stored while the replica was stopped: \(rowsWhileStopped - 10)")
                }
            }
            let primary = try #require(try await namedPrimaryPort())
            _ = try await onNode(primary, RedisCommand("DEL", prefix + "inference", prefix + "inference:dead"))
        }
    }

    static func processID(_ info: String) -> String? {
        info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("process_id:") }.map { String($0.dropFirst("process_id:".count)) }
    }
}

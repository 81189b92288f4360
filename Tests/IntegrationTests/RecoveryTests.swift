import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import AdWorkerTestSupport
import Logging
import Testing

/// Entries left behind by consumers that died, entries delivered too often, and bounded stream
/// memory: each against the real servers, each ending in exact accounting.
@Suite("Recovery and stream maintenance, on real servers", .timeLimit(.minutes(3)))
struct RecoveryTests {
    @Test func entriesLeftByADeadConsumerAreClaimedAndStoredOnce() async throws {
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                let configuration = TestServers.singleConsumerConfiguration(prefix: prefix, postgres: postgres)
                let stream = configuration.streams(for: .inference)[0]
                let ids = try await TestServers.addInferenceEntries(500, to: stream)
                // A consumer under another name reads 300 entries, stores 100 of them, and dies;
                // then one of its pending entries is deleted from the stream by someone else.
                try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    try await redis.createGroupIfMissing("adworker", on: stream)
                    let taken = try await redis.readGroup("adworker", consumer: "ghost", from: stream, count: 300)
                    #expect(taken.count == 300)
                    var rows = BinaryCopyRows(reservingBytes: 0)
                    let decoder = WireDecoder()
                    for entry in taken.prefix(100) { RowEncoder.append(try decoder.decode(entry, as: .inference), id: entry.id, to: &rows) }
                    try await PostgresConnection.withConnection(postgres, logger: TestServers.logger) { connection in
                        _ = try await connection.insert(rows, into: RowEncoder.inferenceTarget, path: .fast)
                    }
                    #expect(try await redis.deleteEntries([ids[299]], from: stream) == 1)
                }
                // The ghost's entries become claimable once idle for claimIdle.
                try await waitUntil("the ghost's entries idle for \(configuration.claimIdle)") {
                    try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                        let all = StreamEntryID(milliseconds: 0, sequence: 0)...StreamEntryID(milliseconds: .max, sequence: .max)
                        return try await redis.pendingEntries(stream, group: "adworker", in: all, count: 300, consumer: "ghost")
                            .allSatisfy { $0.idle >= configuration.claimIdle }
                    }
                }

                let reports = ReportLog()
                try await WorkerService(configuration: configuration, logger: TestServers.logger, onBatch: reports.append).run()

                #expect(try await TestServers.count(postgres, "inference_results") == 499)
                #expect(try await TestServers.pending(stream) == 0)
                let duplicates = try await TestServers.query(
                    postgres, "SELECT count(*) FROM (SELECT request_id FROM inference_results GROUP BY request_id HAVING count(*) > 1) d"
                )
                #expect(duplicates == [["0"]])
                #expect(reports.all.reduce(0) { $0 + $1.duplicateRows } == 100)
                // The deleted one is accounted for as a dead letter without fields.
                let dead = try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    try await redis.range(DeadLetter.stream(for: stream), count: 10)
                }
                #expect(dead.count == 1)
                #expect(dead.first?.fields.value(of: DeadLetter.Field.entryID).map { Array($0) } == Array(ids[299].description.utf8))
                #expect(dead.first?.fields.value(of: DeadLetter.Field.reason).map { Array($0) } == Array("empty_entry".utf8))
            }
        }
    }

    @Test func anEntryDeliveredTooOftenIsDeadLetteredWithItsCount() async throws {
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                var configuration = TestServers.singleConsumerConfiguration(prefix: prefix, postgres: postgres)
                configuration.maximumDeliveries = 3
                let stream = configuration.streams(for: .inference)[0]
                let ids = try await TestServers.addInferenceEntries(10, to: stream)
                // Entries 0...4 were in flight on this consumer name three times already (three
                // crashes); the next delivery is the fourth.
                try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    try await redis.createGroupIfMissing("adworker", on: stream)
                    _ = try await redis.readGroup("adworker", consumer: "test-0", from: stream, count: 5)
                    _ = try await redis.send(RedisCommand(["XCLAIM", stream, "adworker", "test-0", "0"] + ids[0..<5].map(\.description) + ["RETRYCOUNT", "3"]))
                }

                try await WorkerService(configuration: configuration, logger: TestServers.logger).run()

                #expect(try await TestServers.count(postgres, "inference_results") == 5)
                #expect(try await TestServers.pending(stream) == 0)
                let dead = try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    try await redis.range(DeadLetter.stream(for: stream), count: 100)
                }
                #expect(dead.count == 5)
                for letter in dead {
                    #expect(letter.fields.value(of: DeadLetter.Field.reason).map { Array($0) } == Array("max_deliveries_exceeded".utf8))
                    #expect(letter.fields.value(of: DeadLetter.Field.deliveries).map { Array($0) } == Array("4".utf8))
                }
                let deadIDs = Set(dead.compactMap { $0.fields.value(of: DeadLetter.Field.entryID).flatMap { StreamEntryID(utf8: $0) } })
                #expect(deadIDs == Set(ids[0..<5]))
            }
        }
    }

    @Test func trimmingKeepsEverythingALaggingGroupHasNotRead() async throws {
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                let configuration = TestServers.singleConsumerConfiguration(prefix: prefix, postgres: postgres)
                let stream = configuration.streams(for: .inference)[0]
                let ids = try await TestServers.addInferenceEntries(1000, to: stream)
                // A second group (another application) has read 400 entries and acknowledged 300.
                try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    _ = try await redis.send(RedisCommand("XGROUP", "CREATE", stream, "analytics", "0"))
                    let read = try await redis.readGroup("analytics", consumer: "a", from: stream, count: 400)
                    try await redis.acknowledge(read.prefix(300).map(\.id), in: stream, group: "analytics")
                }
                try await WorkerService(configuration: configuration, logger: TestServers.logger).run()

                let maintenance = StreamMaintenance(stream: stream, group: "adworker", consumerExpiry: .seconds(3600), keepRecent: nil)
                let outcome = try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    try await maintenance.run(redis, logger: TestServers.logger)
                }
                #expect(outcome.trimmedEntries == 300)
                let remaining = try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    try await redis.range(stream, count: 2000).map(\.id)
                }
                #expect(remaining == Array(ids[300...]))

                // Once the lagging group has caught up, everything goes.
                try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    let pending = try await redis.readGroup("analytics", consumer: "a", from: stream, position: .pending(after: StreamEntryID(milliseconds: 0, sequence: 0)), count: 1000)
                    try await redis.acknowledge(pending.map(\.id), in: stream, group: "analytics")
                    let rest = try await redis.readGroup("analytics", consumer: "a", from: stream, count: 1000)
                    try await redis.acknowledge(rest.map(\.id), in: stream, group: "analytics")
                    #expect(try await maintenance.run(redis, logger: TestServers.logger).trimmedEntries == 700)
                    #expect(try await redis.streamLength(stream) == 0)
                }
                #expect(try await TestServers.count(postgres, "inference_results") == 1000)
            }
        }
    }

    /// Acknowledged entries within the keep window of the stream's newest id stay, for producers
    /// that look for the records of a cut pipeline: entries written before an outage stay until
    /// newer ones arrive, however old they are by the clock.
    @Test func trimmingKeepsEntriesNearTheNewest() async throws {
        try await TestServers.withTestStreams { prefix in
            let stream = prefix + "inference"
            try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                let now = UInt64(Timestamp.now().millisecondsSinceEpoch)
                for age: UInt64 in [60_000, 50_000] {
                    _ = try await redis.send(RedisCommand("XADD", stream, StreamEntryID(milliseconds: now - age, sequence: 0).description, "v", "1"))
                }
                try await redis.createGroupIfMissing("adworker", on: stream)
                let keeping = StreamMaintenance(stream: stream, group: "adworker", consumerExpiry: .seconds(3600), keepRecent: .seconds(30))
                let beforeOutage = try await redis.readGroup("adworker", consumer: "c", from: stream, count: 10)
                try await redis.acknowledge(beforeOutage.map(\.id), in: stream, group: "adworker")
                #expect(try await keeping.run(redis, logger: TestServers.logger).trimmedEntries == 0)

                _ = try await redis.send(RedisCommand("XADD", stream, "*", "v", "1"))
                let afterOutage = try await redis.readGroup("adworker", consumer: "c", from: stream, count: 10)
                try await redis.acknowledge(afterOutage.map(\.id), in: stream, group: "adworker")
                #expect(try await keeping.run(redis, logger: TestServers.logger).trimmedEntries == 2)
                #expect(try await redis.range(stream, count: 10).map(\.id) == afterOutage.map(\.id))
                let trimmingAll = StreamMaintenance(stream: stream, group: "adworker", consumerExpiry: .seconds(3600), keepRecent: nil)
                #expect(try await trimmingAll.run(redis, logger: TestServers.logger).trimmedEntries == 1)
            }
        }
    }

    /// Ids above 2^53 are not exact as Lua numbers: 9007199254740995 rounds up to ...996, and a
    /// MINID computed from it would trim the pending entries at ...995.
    @Test func trimmingIsExactForIDsBeyondDoublePrecision() async throws {
        try await TestServers.withTestStreams { prefix in
            let stream = prefix + "inference"
            try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                for id in ["9007199254740995-0", "9007199254740995-1", "9007199254740997-0"] {
                    _ = try await redis.send(RedisCommand("XADD", stream, id, "v", "1"))
                }
                try await redis.createGroupIfMissing("adworker", on: stream)
                let read = try await redis.readGroup("adworker", consumer: "c", from: stream, count: 10)
                #expect(read.count == 3)
                let maintenance = StreamMaintenance(stream: stream, group: "adworker", consumerExpiry: .seconds(3600), keepRecent: nil)
                #expect(try await maintenance.run(redis, logger: TestServers.logger).trimmedEntries == 0)
                try await redis.acknowledge([read[0].id], in: stream, group: "adworker")
                #expect(try await maintenance.run(redis, logger: TestServers.logger).trimmedEntries == 1)
                #expect(try await redis.range(stream, count: 10).map(\.id.description) == ["9007199254740995-1", "9007199254740997-0"])
                try await redis.acknowledge(read[1...].map(\.id), in: stream, group: "adworker")
                #expect(try await maintenance.run(redis, logger: TestServers.logger).trimmedEntries == 2)
            }
        }
    }

    @Test func deadLetterStreamsKeepTheNewestUpToTheirLimit() async throws {
        try await TestServers.withTestStreams { prefix in
            let stream = prefix + "inference"
            let dead = DeadLetter.stream(for: stream)
            try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                for number in 0..<30 { _ = try await redis.send(RedisCommand("XADD", dead, "*", "n", String(number))) }
                let maintenance = StreamMaintenance(stream: stream, group: "adworker", consumerExpiry: .seconds(3600), deadLetterLimit: 10)
                #expect(try await maintenance.run(redis, logger: TestServers.logger).trimmedDeadLetters == 20)
                let kept = try await redis.range(dead, count: 100).compactMap { $0.fields.value(of: "n").map { String(decoding: $0, as: UTF8.self) } }
                #expect(kept == (20..<30).map(String.init))
                #expect(try await maintenance.run(redis, logger: TestServers.logger).trimmedDeadLetters == 0)
            }
        }
    }

    /// A dead-letter key of another type (a string SET by mistake) is skipped: the stream itself is
    /// still trimmed and its idle consumers removed.
    @Test func aDeadLetterKeyThatIsNotAStreamLeavesTheStreamsOwnMaintenanceRunning() async throws {
        try await TestServers.withTestStreams { prefix in
            let stream = prefix + "inference"
            _ = try await TestServers.addInferenceEntries(3, to: stream)
            try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                _ = try await redis.send(RedisCommand("SET", DeadLetter.stream(for: stream), "not a stream"))
                try await redis.createGroupIfMissing("adworker", on: stream)
                let read = try await redis.readGroup("adworker", consumer: "idle", from: stream, count: 10)
                try await redis.acknowledge(read.map(\.id), in: stream, group: "adworker")
                let maintenance = StreamMaintenance(
                    stream: stream, group: "adworker", consumerExpiry: .milliseconds(50), deadLetterLimit: 10, keepRecent: nil
                )
                try await waitUntil("the consumer idle past its expiry") {
                    try await redis.consumers(of: stream, group: "adworker").allSatisfy { $0.idle > .milliseconds(50) }
                }
                let outcome = try await maintenance.run(redis, logger: TestServers.logger)
                #expect(outcome.trimmedEntries == 3)
                #expect(outcome.removedConsumers == ["idle"])
            }
        }
    }

    @Test func idleConsumersAreRemovedOnlyWithoutPendingEntries() async throws {
        try await TestServers.withTestStreams { prefix in
            let stream = prefix + "inference"
            _ = try await TestServers.addInferenceEntries(3, to: stream)
            try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                try await redis.createGroupIfMissing("adworker", on: stream)
                let idle = try await redis.readGroup("adworker", consumer: "idle-with-nothing", from: stream, count: 1)
                try await redis.acknowledge(idle.map(\.id), in: stream, group: "adworker")
                _ = try await redis.readGroup("adworker", consumer: "idle-with-pending", from: stream, count: 1)
                let maintenance = StreamMaintenance(stream: stream, group: "adworker", consumerExpiry: .milliseconds(50))
                try await waitUntil("both consumers idle past their expiry") {
                    try await redis.consumers(of: stream, group: "adworker").allSatisfy { $0.idle > .milliseconds(50) }
                }
                let outcome = try await maintenance.run(redis, logger: TestServers.logger)
                #expect(outcome.removedConsumers == ["idle-with-nothing"])
                #expect(try await redis.consumers(of: stream, group: "adworker").map(\.name) == ["idle-with-pending"])
                #expect(try await redis.pendingCount(stream, group: "adworker") == 1)
            }
        }
    }
}

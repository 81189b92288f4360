import AdTelemetryRecords
import AdWorkerRedis
import AdWorkerTestSupport
import Logging
import Testing

@Suite("Redis streams client against a real redis-server", .timeLimit(.minutes(1)))
struct RedisConnectionTests {
    @Test func aPendingEntryDeletedFromTheStreamComesBackWithoutFields() async throws {
        try await TestServers.withTestStreams { prefix in
            let stream = prefix + "s"
            try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                try await redis.createGroupIfMissing("g", on: stream)
                let ids = try await redis.add([
                    .streamAdd(to: stream, fields: StreamFields([("a", "1")])), .streamAdd(to: stream, fields: StreamFields([("b", "2")])),
                ]).map { try $0.get() }
                #expect(try await redis.readGroup("g", consumer: "c", from: stream, count: 10).count == 2)
                #expect(try await redis.deleteEntries([ids[0]], from: stream) == 1)
                let pending = try await redis.readGroup(
                    "g", consumer: "c", from: stream, position: .pending(after: StreamEntryID(milliseconds: 0, sequence: 0)), count: 10
                )
                #expect(pending.map(\.id) == ids)
                #expect(pending.map(\.fields.count) == [0, 1])
                #expect(pending[1].fields.value(of: "b").map { Array($0) } == Array("2".utf8))
            }
        }
    }

    @Test func valuesAreBinarySafeThroughXADDAndXREADGROUP() async throws {
        try await TestServers.withTestStreams { prefix in
            let stream = prefix + "binary"
            try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                #expect(try await redis.createGroupIfMissing("g", on: stream))
                #expect(try await !redis.createGroupIfMissing("g", on: stream))
                let value: [UInt8] = [0x00, 0xFF, 0x0D, 0x0A, 0x41, 0x00]
                var command = RedisCommand.streamAdd(to: stream)
                command.writeField("blob", value)
                let ids = try await redis.add([command]).map { try $0.get() }
                let entries = try await redis.readGroup("g", consumer: "c", from: stream, count: 10)
                #expect(entries.map(\.id) == ids)
                #expect(Array(try #require(entries.first?.fields.value(of: "blob"))) == value)
                #expect(try await redis.pendingCount(stream, group: "g") == 1)
                #expect(try await redis.acknowledge(ids, in: stream, group: "g") == 1)
                #expect(try await redis.pendingCount(stream, group: "g") == 0)
            }
        }
    }

    @Test func aBlockingReadThatTimesOutReturnsNoEntries() async throws {
        try await TestServers.withTestStreams { prefix in
            let stream = prefix + "empty"
            try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                try await redis.createGroupIfMissing("g", on: stream)
                let entries = try await redis.readGroup("g", consumer: "c", from: stream, count: 10, block: .milliseconds(20))
                #expect(entries.isEmpty)
            }
        }
    }

    @Test func readingAMissingGroupIsClassifiedAsNoGroup() async throws {
        try await TestServers.withTestStreams { prefix in
            try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                let error = await #expect(throws: RedisError.self) {
                    try await redis.readGroup("missing", consumer: "c", from: prefix + "nothing", count: 1)
                }
                #expect(error?.code == .noGroup)
            }
        }
    }

    @Test func aLongPipelineKeepsRepliesInOrder() async throws {
        try await TestServers.withTestStreams { prefix in
            let stream = prefix + "pipeline"
            try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                let commands = (0..<5000).map { number -> RedisCommand in
                    var command = RedisCommand.streamAdd(to: stream)
                    command.writeField("n", String(number).utf8)
                    return command
                }
                let ids = try await redis.add(commands).map { try $0.get() }
                #expect(ids == ids.sorted())
                #expect(Set(ids).count == 5000)
                let stored = try await redis.range(stream, count: 10_000)
                #expect(stored.map { String(decoding: $0.fields.value(of: "n") ?? [], as: UTF8.self) } == (0..<5000).map(String.init))
            }
        }
    }

    @Test func aRefusedConnectionIsAClearError() async throws {
        let closedPort = RedisConfiguration(host: "127.0.0.1", port: 1, connectTimeout: .seconds(1))
        let error = await #expect(throws: RedisError.self) {
            try await RedisConnection.withConnection(closedPort, logger: TestServers.logger) { _ in }
        }
        #expect(error?.code == .connectionFailed)
        #expect(error?.isTransient == true)
    }
}

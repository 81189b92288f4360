import AdTelemetryRecords
import AdWorkerCore
import AdWorkerRedis
import Testing

/// Dead letters are written once per entry and replayed once per letter, whatever else runs at
/// the same time or whatever happened to the consumer group.
@Suite("Dead letters, exactly once, on real servers", .timeLimit(.minutes(3)))
struct DeadLetterTests {
    /// Two `dlq replay` at once, both having selected every letter before either changed
    /// anything: each letter goes back to its stream once, and the two counts add up to the letters.
    @Test func twoReplaysAtOnceReAddEachLetterOnce() async throws {
        try await TestServers.withTestStreams { prefix in
            let stream = prefix + "inference"
            let deadStream = DeadLetter.stream(for: stream)
            let letters = try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                let commands = (0..<600).map { number -> RedisCommand in
                    var fields = StreamFields()
                    for (name, value) in [("v", "1"), ("model", "m"), ("request_id", "poison-\(number)"), ("ts", "1"), ("prediction", "{")] {
                        fields.append(name: name.utf8, value: value.utf8)
                    }
                    let entry = StreamEntry(id: StreamEntryID(milliseconds: 1, sequence: UInt64(number)), fields: fields)
                    let letter = DeadLetter(entry: entry, reason: "invalid_json: prediction", code: "invalid_json")
                    return RedisCommand.streamAdd(to: deadStream, fields: letter.fields(from: stream, at: .now()))
                }
                _ = try await redis.add(commands).map { try $0.get() }
                return try await redis.range(deadStream, count: 1000)
            }
            #expect(letters.count == 600)

            async let first = RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                try await DeadLetter.replay(letters, from: deadStream, on: redis)
            }
            async let second = RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                try await DeadLetter.replay(letters, from: deadStream, on: redis)
            }
            let replayed = try await (first, second)
            #expect(replayed.0 + replayed.1 == 600)

            let (readded, remaining) = try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                (try await redis.range(stream, count: 2000), try await redis.streamLength(deadStream))
            }
            #expect(remaining == 0)
            #expect(readded.count == 600)
            let requestIDs = Set(readded.compactMap { $0.fields.value(of: "request_id").map { Array($0) } })
            #expect(requestIDs.count == 600)
        }
    }
}

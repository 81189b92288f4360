import AdTelemetryRecords
import AdWorkerCore
import AdWorkerRedis
import AdWorkerTestSupport
import Testing

/// What `adworker dlq list|replay|purge --reason <code>` selects, on a real Redis.
@Suite("Dead letters selected by code", .timeLimit(.minutes(1)))
struct DeadLetterSelectionTests {
    /// Letters with `dead.code` and letters an older version wrote (only `dead.reason`) are both
    /// selected by their code; `invalid_json` is not a prefix match (it never selects `invalid_utf8`).
    @Test func aCodeSelectsNewAndOlderLettersWithIt() async throws {
        try await TestServers.withTestStreams { prefix in
            let stream = prefix + "inference"
            let deadStream = DeadLetter.stream(for: stream)
            let ids = try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                var commands: [RedisCommand] = []
                for (number, (reason, code)) in [
                    ("invalid_json: prediction", DeadLetterCode.undecodable(.invalidJSON)), ("invalid_utf8: meta", .undecodable(.invalidUTF8)),
                    ("rejected_by_database: sqlstate 22021", .rejectedByDatabase),
                ].enumerated() {
                    let entry = StreamEntry(id: StreamEntryID(milliseconds: 1, sequence: UInt64(number)), fields: StreamFields([("v", "1")]))
                    commands.append(.streamAdd(to: deadStream, fields: DeadLetter(entry: entry, reason: reason, code: code).fields(from: stream, at: .now())))
                }
                for reason in ["invalid_json: input", "invalid_utf8: model", "rejected_by_database: sqlstate 23502", "from a later version"] {
                    commands.append(RedisCommand("XADD", deadStream, "*", DeadLetter.Field.reason, reason, DeadLetter.Field.entryID, "2-0", "v", "1"))
                }
                return try await redis.add(commands).map { try $0.get() }
            }
            try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis async throws in
                func selected(_ code: DeadLetterCode?, ids: Set<StreamEntryID>? = nil) async throws -> [StreamEntryID] {
                    try await DeadLetter.letters(in: deadStream, on: redis, code: code, ids: ids).map(\.id)
                }
                #expect(try await selected(.undecodable(.invalidJSON)) == [ids[0], ids[3]])
                #expect(try await selected(.undecodable(.invalidUTF8)) == [ids[1], ids[4]])
                #expect(try await selected(.rejectedByDatabase) == [ids[2], ids[5]])
                #expect(try await selected(.maxDeliveriesExceeded).isEmpty)
                // Without a code every letter is listed, the one whose code this version does not know too.
                #expect(try await selected(nil) == ids)
                #expect(try await selected(.undecodable(.invalidJSON), ids: [ids[3], ids[1]]) == [ids[3]])
            }
        }
    }
}

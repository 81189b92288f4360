import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import AdWorkerTestSupport
import ServiceLifecycle
import Testing

/// Dead letters are written once per entry and replayed once per letter, whatever else runs at
/// the same time or whatever happened to the consumer group.
@Suite("Dead letters, exactly once, on real servers", .timeLimit(.minutes(3)))
struct DeadLetterTests {
    /// Adds inference entries, every `poisonEvery`-th one poison (a prediction that is not JSON);
    /// returns the poison entries' ids.
    static func addEntries(_ count: Int, to stream: String, poisonEvery: Int, seed: UInt64) async throws -> [StreamEntryID] {
        var telemetry = SyntheticTelemetry(seed: seed)
        let commands = (0..<count).map { number -> RedisCommand in
            if number % poisonEvery == 0 {
                return RedisCommand("XADD", stream, "*", "v", "1", "model", "m", "request_id", "poison-\(seed)-\(number)", "ts", "1", "prediction", "{")
            }
            var command = RedisCommand.streamAdd(to: stream)
            WireFormat.encode(telemetry.inference(model: "m", requestID: "r-\(seed)-\(number)"), into: &command)
            return command
        }
        let ids = try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
            try await redis.add(commands).map { try $0.get() }
        }
        return ids.enumerated().filter { $0.offset % poisonEvery == 0 }.map(\.element)
    }

    /// Every letter in `stream`'s dead-letter stream, by the entry it came from.
    static func letters(of stream: String) async throws -> [StreamEntryID] {
        try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
            try await redis.range(DeadLetter.stream(for: stream), count: 100_000).compactMap {
                $0.fields.value(of: DeadLetter.Field.entryID).flatMap { StreamEntryID(utf8: $0) }
            }
        }
    }

    /// The ledger's lookup returns only each letter's entry id, and a page of large letters (they
    /// carry their entry's fields whole) ends at its byte bound, not at its count.
    @Test func aLookupPageOfLargeLettersEndsAtItsByteBound() async throws {
        try await TestServers.withTestStreams { prefix in
            let stream = "\(prefix)large:dead"
            let large = String(repeating: "x", count: 400_000)
            try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                let commands = (0..<5).map { RedisCommand("XADD", stream, "*", DeadLetter.Field.entryID, "\($0 + 1)-0", "prediction", large) }
                let ids = try await redis.add(commands).map { try $0.get() }
                var pages: [[String]] = []
                var start = ids[0]
                while true {
                    let page = try await redis.field(DeadLetter.Field.entryID, ofEntriesIn: stream, from: start, count: 200, maximumBytes: 1_000_000)
                    pages.append(page.entries.map { String(decoding: $0.value ?? [], as: UTF8.self) })
                    guard page.more, let next = page.entries.last?.id.successor else { break }
                    start = next
                }
                // Three letters come to 1.2 MB: the third ends the page.
                #expect(pages == [["1-0", "2-0", "3-0"], ["4-0", "5-0"]])

                // Small letters: the count ends a page; the stream's end says no more.
                let first = try await redis.field(DeadLetter.Field.entryID, ofEntriesIn: stream, from: ids[0], count: 2, maximumBytes: .max)
                #expect(first.entries.map(\.id) == Array(ids[0..<2]) && first.more)
                let last = try await redis.field(DeadLetter.Field.entryID, ofEntriesIn: stream, from: ids[3], count: 2, maximumBytes: .max)
                #expect(last.entries.map(\.id) == Array(ids[3..<5]) && last.more)
                let none = try await redis.field(DeadLetter.Field.entryID, ofEntriesIn: stream, from: ids[4].successor!, count: 2, maximumBytes: .max)
                #expect(none.entries.isEmpty && !none.more)
            }
        }
    }

    /// The group is destroyed (or lost with Redis's state) after its poison entries were dead
    /// lettered: the worker recreates it at 0 and reads every entry again. Rows are idempotent;
    /// letters must be too.
    @Test func aRecreatedConsumerGroupWritesNoSecondLetterForAnEntry() async throws {
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                let configuration = TestServers.singleConsumerConfiguration(prefix: prefix, postgres: postgres)
                let stream = configuration.streams(for: .inference)[0]
                let firstPoison = try await Self.addEntries(400, to: stream, poisonEvery: 4, seed: 1)
                try await WorkerService(configuration: configuration, logger: TestServers.logger).run()
                #expect(try await Self.letters(of: stream).count == 100)

                try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    _ = try await redis.send(RedisCommand("XGROUP", "DESTROY", stream, configuration.group))
                }
                // New entries, poison among them, arrive after the group was lost.
                let laterPoison = try await Self.addEntries(200, to: stream, poisonEvery: 4, seed: 2)
                let reports = ReportLog()
                try await WorkerService(configuration: configuration, logger: TestServers.logger, onBatch: reports.append).run()
                // Entries whose letters were there already count as acknowledged, not as dead lettered.
                #expect(reports.all.reduce(0) { $0 + $1.deadLettered } == 50)
                #expect(reports.all.reduce(0) { $0 + $1.entries } == 600)

                let letters = try await Self.letters(of: stream)
                #expect(letters.count == 150)
                #expect(Set(letters) == Set(firstPoison + laterPoison))
                #expect(try await TestServers.count(postgres, "inference_results") == 450)
                #expect(try await TestServers.pending(stream) == 0)
            }
        }
    }

    /// The same, with the group destroyed under a running worker: its reader meets NOGROUP,
    /// recreates the group at 0 and reads everything again.
    @Test func aConsumerGroupDestroyedUnderARunningWorkerWritesNoSecondLetter() async throws {
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                var configuration = TestServers.singleConsumerConfiguration(prefix: prefix, postgres: postgres)
                configuration.drain = false
                let stream = configuration.streams(for: .inference)[0]
                let firstPoison = try await Self.addEntries(400, to: stream, poisonEvery: 4, seed: 3)
                let worker = ServiceGroup(services: [WorkerService(configuration: configuration, logger: TestServers.logger)], logger: TestServers.logger)
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { try await worker.run() }
                    var seen = (letters: 0, rows: 0)
                    try await waitUntil("100 letters and 300 rows (saw \(seen))") {
                        seen = (try await Self.letters(of: stream).count, try await TestServers.count(postgres, "inference_results"))
                        return seen == (100, 300)
                    }
                    try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                        _ = try await redis.send(RedisCommand("XGROUP", "DESTROY", stream, configuration.group))
                    }
                    let laterPoison = try await Self.addEntries(200, to: stream, poisonEvery: 4, seed: 4)
                    // Done when the recreated group has delivered the last entry and nothing is pending.
                    let last = try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                        try await redis.range(stream, from: laterPoison[laterPoison.count - 1], count: 1000).last?.id
                    }
                    var group: ConsumerGroupInfo?
                    try await waitUntil("the recreated group past \(String(describing: last)) with nothing pending (saw \(String(describing: group)))") {
                        group = try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                            try await redis.groups(of: stream).first { $0.name == configuration.group }
                        }
                        return group?.lastDeliveredID == last && group?.pending == 0
                    }
                    await worker.triggerGracefulShutdown()
                    try await tasks.waitForAll()
                    let letters = try await Self.letters(of: stream)
                    #expect(letters.count == 150)
                    #expect(Set(letters) == Set(firstPoison + laterPoison))
                    #expect(try await TestServers.count(postgres, "inference_results") == 450)
                }
            }
        }
    }

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
                    let letter = DeadLetter(entry: entry, reason: "invalid_json: prediction", code: .undecodable(.invalidJSON))
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

extension DeadLetterTests {
    /// The worker writes every letter's code in `dead.code`, apart from its reason's text.
    @Test func everyLetterTheWorkerWritesCarriesItsCode() async throws {
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                let configuration = TestServers.singleConsumerConfiguration(prefix: prefix, postgres: postgres)
                let stream = configuration.streams(for: .inference)[0]
                let poison = try await Self.addEntries(40, to: stream, poisonEvery: 4, seed: 5)
                try await WorkerService(configuration: configuration, logger: TestServers.logger).run()
                let codes = try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    try await redis.range(DeadLetter.stream(for: stream), count: 1000).map {
                        ($0.fields.value(of: DeadLetter.Field.code).map { String(decoding: $0, as: UTF8.self) }, DeadLetter.code(of: $0.fields))
                    }
                }
                #expect(codes.map(\.0) == Array(repeating: "invalid_json", count: poison.count))
                #expect(codes.map(\.1) == Array(repeating: .undecodable(.invalidJSON), count: poison.count))
            }
        }
    }
}

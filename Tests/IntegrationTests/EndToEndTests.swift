import AdTelemetry
import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import AdWorkerTestSupport
import Logging
import ServiceLifecycle
import Testing

@Suite("Producer → Redis → worker → PostgreSQL, on real servers", .timeLimit(.minutes(3)))
struct EndToEndTests {
    /// Entries no row can come from, each with the reason the worker must give.
    static let trainingPoison: [(fields: StreamFields, reason: String)] = {
        func entry(_ pairs: [(String, [UInt8])]) -> StreamFields {
            var fields = StreamFields()
            for (name, value) in pairs { fields.append(name: Array(name.utf8), value: value) }
            return fields
        }
        func valid(replacing name: String, with value: [UInt8]?) -> StreamFields {
            var pairs: [(String, [UInt8])] = [
                ("v", Array("1".utf8)), ("model", Array("m".utf8)), ("request_id", Array("poison".utf8)),
                ("ts", Array("1700000000000".utf8)), ("input", Array(#"{"a":1}"#.utf8)),
            ]
            pairs.removeAll { $0.0 == name }
            if let value { pairs.append((name, value)) }
            return entry(pairs)
        }
        return [
            (valid(replacing: "input", with: Array(#"{"a":"#.utf8)), "invalid_json: input"),
            (valid(replacing: "request_id", with: nil), "missing_field: request_id"),
            (valid(replacing: "ts", with: Array("yesterday".utf8)), "invalid_number: ts"),
            (valid(replacing: "model", with: [0x6D, 0x00, 0x6D]), "nul_byte: model"),
            (valid(replacing: "request_id", with: [0x72, 0xC3, 0x28]), "invalid_utf8: request_id"),
            (valid(replacing: "input", with: Array(#"{"blob":""#.utf8) + Array(repeating: 0x78, count: 2 << 20) + Array(#""}"#.utf8)), "entry_too_large"),
            (valid(replacing: "v", with: Array("2".utf8)), "unknown_version: v"),
            (entry([("unrelated", Array("x".utf8))]), "missing_field: v"),
        ]
    }()

    @Test func everyEntryBecomesExactlyOneRowOrOneDeadLetter() async throws {
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                let configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres)
                let trainingStream = configuration.streams(for: .training)[0]
                let inferenceStream = configuration.streams(for: .inference)[0]

                // 10,000 complete API requests through the producer library.
                var telemetry = SyntheticTelemetry(seed: 99)
                var requests: [(TrainingRecord, InferenceRecord)] = []
                for number in 0..<10_000 { requests.append(telemetry.request(number: number)) }
                let producer = TelemetryProducer(
                    configuration: TelemetryProducerConfiguration(redis: TestServers.redis, streamPrefix: prefix), logger: TestServers.logger
                )
                let ids = try await withRunningService(producer) {
                    var ids: [(StreamEntryID, StreamEntryID)] = []
                    for chunk in stride(from: 0, to: requests.count, by: 1000) {
                        let records = requests[chunk..<chunk + 1000].flatMap { [TelemetryRecord.training($0.0), .inference($0.1)] }
                        let results = try await producer.send(records).map { try $0.get() }
                        for pair in stride(from: 0, to: results.count, by: 2) { ids.append((results[pair], results[pair + 1])) }
                    }
                    // One complete request through the single-request API as well.
                    let (training, inference) = telemetry.request(number: 10_000)
                    let sent = try await producer.send(training: training, inference: inference)
                    requests.append((training, inference))
                    ids.append(sent)
                    return ids
                }

                // Poison mixed in, plus an entry written by hand as `redis-cli XADD` would.
                let poisonIDs = try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    var commands = Self.trainingPoison.map { RedisCommand.streamAdd(to: trainingStream, fields: $0.fields) }
                    commands.append(.streamAdd(to: inferenceStream, fields: StreamFields([
                        ("v", "1"), ("model", "m"), ("request_id", "bad-confidence"), ("ts", "1700000000000"), ("prediction", "1"),
                        ("confidence", "high"),
                    ])))
                    commands.append(.streamAdd(to: inferenceStream, fields: StreamFields([
                        ("v", "1"), ("model", "hand_written"), ("request_id", "cli-1"), ("ts", "1700000000000"), ("prediction", "0.7"),
                        ("is_anomaly", "1"),
                    ])))
                    return try await redis.add(commands).map { try $0.get() }
                }

                let reports = ReportLog()
                try await WorkerService(configuration: configuration, logger: TestServers.logger, onBatch: reports.append).run()

                // Exact accounting.
                #expect(try await TestServers.count(postgres, "training_data") == 10_001)
                #expect(try await TestServers.count(postgres, "inference_results") == 10_002)
                let (deadTraining, deadInference, pendingTraining, pendingInference) = try await RedisConnection.withConnection(
                    TestServers.redis, logger: TestServers.logger
                ) { redis in
                    (
                        try await redis.range(DeadLetter.stream(for: trainingStream), count: 100),
                        try await redis.range(DeadLetter.stream(for: inferenceStream), count: 100),
                        try await redis.pendingCount(trainingStream, group: "adworker"),
                        try await redis.pendingCount(inferenceStream, group: "adworker")
                    )
                }
                #expect(pendingTraining == 0)
                #expect(pendingInference == 0)
                let reasons = Dictionary(uniqueKeysWithValues: deadTraining.map {
                    (String(decoding: $0.fields.value(of: DeadLetter.Field.entryID) ?? [], as: UTF8.self),
                     String(decoding: $0.fields.value(of: DeadLetter.Field.reason) ?? [], as: UTF8.self))
                })
                #expect(reasons.count == Self.trainingPoison.count)
                for (index, poison) in Self.trainingPoison.enumerated() {
                    #expect(reasons[poisonIDs[index].description] == poison.reason)
                }
                #expect(deadInference.count == 1)
                #expect(deadInference.first?.fields.value(of: "request_id").map { Array($0) } == Array("bad-confidence".utf8))
                // Dead letters keep the original fields, byte for byte.
                let nulLetter = try #require(deadTraining.first { $0.fields.value(of: DeadLetter.Field.entryID).map { Array($0) } == Array(poisonIDs[3].description.utf8) })
                #expect(nulLetter.fields.value(of: "model").map { Array($0) } == [0x6D, 0x00, 0x6D])

                let reported = reports.all
                #expect(reported.reduce(0) { $0 + $1.insertedRows } == 20_003)
                #expect(reported.reduce(0) { $0 + $1.deadLettered } == 9)

                // Every field of a sample of rows round-trips.
                for index in [0, 1, 4_999, 9_999, 10_000] {
                    try await Self.expectStored(requests[index], ids: ids[index], in: postgres)
                }
                let handWritten = try await TestServers.query(
                    postgres, "SELECT prediction::text, is_anomaly::text, confidence FROM inference_results WHERE request_id = 'cli-1'"
                )
                #expect(handWritten == [["0.7", "true", nil]])
            }
        }
    }

    static func expectStored(_ request: (TrainingRecord, InferenceRecord), ids: (StreamEntryID, StreamEntryID), in postgres: PostgresConfiguration) async throws {
        let (training, inference) = request
        let trainingRow = try await TestServers.query(
            postgres,
            """
            SELECT model_name, request_id, (extract(epoch FROM event_time) * 1000)::bigint::text,
                   (extract(epoch FROM enqueued_at) * 1000)::bigint::text, input_data = $2::jsonb, metadata = $3::jsonb, host(source_ip)
            FROM training_data WHERE stream_id = $1
            """,
            [ids.0.description, training.input.description, training.metadata?.description]
        )
        #expect(trainingRow == [[
            training.model, training.requestID, String(training.eventTime.millisecondsSinceEpoch), String(ids.0.milliseconds), "t", "t",
            training.sourceIP?.description,
        ]])
        let inferenceRow = try await TestServers.query(
            postgres,
            """
            SELECT model_name, request_id, prediction = $2::jsonb, confidence::text, anomaly_score::text, is_anomaly::text,
                   processing_time_ms::text, metadata = $3::jsonb
            FROM inference_results WHERE stream_id = $1
            """,
            [ids.1.description, inference.prediction.description, inference.metadata?.description]
        )
        let row = try #require(inferenceRow.first)
        #expect(row[0] == inference.model)
        #expect(row[1] == inference.requestID)
        #expect(row[2] == "t")
        #expect(row[3].flatMap(Double.init) == inference.confidence)
        #expect(row[4].flatMap(Double.init) == inference.anomalyScore)
        #expect(row[5] == inference.isAnomaly.map { $0 ? "true" : "false" })
        #expect(row[6] == inference.processingTime.map { String($0.wholeMilliseconds) })
        #expect(row[7] == "t")
    }

    @Test func aDatabaseThatIsDownGetsRetriesAndNoAcknowledgements() async throws {
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres, concurrency: 1)
                configuration.kinds = [.inference]
                let stream = configuration.streams(for: .inference)[0]
                var telemetry = SyntheticTelemetry(seed: 5)
                let commands = (0..<300).map { number -> RedisCommand in
                    var command = RedisCommand.streamAdd(to: stream)
                    WireFormat.encode(telemetry.inference(model: "m", requestID: "r-\(number)"), into: &command)
                    return command
                }
                try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    _ = try await redis.add(commands)
                }

                // PostgreSQL unreachable: the worker reads, fails to insert, backs off, acknowledges nothing.
                var unreachable = configuration
                unreachable.drain = false
                unreachable.postgres.port = 1
                unreachable.postgres.connectTimeout = .seconds(1)
                let down = ServiceGroup(services: [WorkerService(configuration: unreachable, logger: TestServers.logger)], logger: TestServers.logger)
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { try await down.run() }
                    try await waitUntil { try await TestServers.pending(stream) == 300 }
                    await down.triggerGracefulShutdown()
                    tasks.cancelAll()
                    try? await tasks.waitForAll()
                }
                #expect(try await TestServers.pending(stream) == 300)
                #expect(try await TestServers.count(postgres, "inference_results") == 0)

                // The database is back: the same consumer re-reads its pending entries and commits them once.
                let reports = ReportLog()
                try await WorkerService(configuration: configuration, logger: TestServers.logger, onBatch: reports.append).run()
                #expect(try await TestServers.count(postgres, "inference_results") == 300)
                #expect(try await TestServers.pending(stream) == 0)
                #expect(reports.all.allSatisfy { $0.path == .idempotent })
            }
        }
    }

    @Test func aCancelledWorkerReturnsAndLeavesItsEntriesPending() async throws {
        try await TestServers.withTestSchema { postgres in
            try await TestServers.withTestStreams { prefix in
                var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres, concurrency: 1)
                configuration.kinds = [.inference]
                configuration.drain = false
                configuration.postgres.port = 1
                configuration.postgres.connectTimeout = .seconds(1)
                let stream = configuration.streams(for: .inference)[0]
                var telemetry = SyntheticTelemetry(seed: 6)
                var command = RedisCommand.streamAdd(to: stream)
                WireFormat.encode(telemetry.inference(model: "m", requestID: "r"), into: &command)
                try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
                    _ = try await redis.add([command])
                }
                // Cancelled (not gracefully shut down) while its sink retries an unreachable database:
                // the worker must return, not keep reading, and must not acknowledge.
                let worker = Task { try await WorkerService(configuration: configuration, logger: TestServers.logger).run() }
                try await waitUntil { try await TestServers.pending(stream) == 1 }
                worker.cancel()
                await #expect(throws: CancellationError.self) { try await worker.value }
                #expect(try await TestServers.pending(stream) == 1)
            }
        }
    }
}

import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import AdWorkerTestSupport
import Foundation
import ServiceLifecycle
import Synchronization
import Testing

/// What the reader asks Redis for, and what it does when a reply is lost, against a redis-server
/// of each test's own: MONITOR there shows only the test's worker, and CLIENT KILL reaches only it.
@Suite("The reader's reads, claims and lost replies, on a private Redis", .timeLimit(.minutes(5)))
struct ReaderTests {
    /// Entries of about 0.9 MiB (a 900 KiB string in `metadata`): four fit the default 4 MiB batch.
    static let padBytes = 900 << 10

    static func configuration(prefix: String, redis: RedisConfiguration, postgres: PostgresConfiguration) -> WorkerConfiguration {
        var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres, concurrency: 1)
        configuration.kinds = [.inference]
        configuration.redis = redis
        configuration.batchSize = WorkerConfiguration.defaultBatchSize
        configuration.maximumBatchBytes = WorkerConfiguration.defaultMaximumBatchBytes
        configuration.claimIdle = .milliseconds(100)
        configuration.trimInterval = nil
        return configuration
    }

    static func largeEntries(_ count: Int, padBytes: Int = padBytes, to stream: String, redis: RedisConfiguration) async throws {
        var telemetry = SyntheticTelemetry(seed: 9)
        let pad = String(repeating: "x", count: padBytes)
        try await RedisConnection.withConnection(redis, logger: TestServers.logger) { connection in
            for start in stride(from: 0, to: count, by: 20) {
                let commands = (start..<min(count, start + 20)).map { number -> RedisCommand in
                    var record = telemetry.inference(model: "m", requestID: "r-\(number)")
                    record.metadata = JSONText(["pad": .string(pad)])
                    var command = RedisCommand.streamAdd(to: stream)
                    WireFormat.encode(record, into: &command)
                    return command
                }
                for result in try await connection.add(commands) { _ = try result.get() }
            }
        }
    }

    /// 100 large entries pending on a consumer that died: every claim asks for what fits
    /// `--max-batch-bytes` (plus one entry), not `--batch-size` entries (5000: the whole 90 MB).
    @Test func claimsOfLargeEntriesLeftByADeadConsumerAskForWhatFitsTheByteBound() async throws {
        try await PrivateRedis.with { redis in
            try await TestServers.withTestSchema { postgres in
                let configuration = Self.configuration(prefix: "big:", redis: redis, postgres: postgres)
                let stream = configuration.streams(for: .inference)[0]
                try await Self.largeEntries(100, to: stream, redis: redis)
                try await RedisConnection.withConnection(redis, logger: TestServers.logger) { connection in
                    try await connection.createGroupIfMissing("adworker", on: stream)
                    var taken = 0
                    while taken < 100 {
                        taken += try await connection.readGroup("adworker", consumer: "ghost", from: stream, count: 10).count
                    }
                }
                let asked = try await PrivateRedis.monitoring(redis) {
                    try await WorkerService(configuration: configuration, logger: TestServers.logger).run()
                }
                try Self.expectBounded(asked, configuration: configuration)
                #expect(asked.contains { $0.command == "XAUTOCLAIM" })
                #expect(try await TestServers.count(postgres, "inference_results") == 100)
            }
        }
    }

    /// A fresh group over 100 large entries: the first read cannot know what they weigh, so it
    /// asks for what fits at the most an entry may weigh; later ones at what they weighed.
    @Test func readsOfLargeEntriesByAFreshGroupAskForWhatFitsTheByteBound() async throws {
        try await PrivateRedis.with { redis in
            try await TestServers.withTestSchema { postgres in
                let configuration = Self.configuration(prefix: "big:", redis: redis, postgres: postgres)
                let stream = configuration.streams(for: .inference)[0]
                try await Self.largeEntries(100, to: stream, redis: redis)
                let asked = try await PrivateRedis.monitoring(redis) {
                    try await WorkerService(configuration: configuration, logger: TestServers.logger).run()
                }
                try Self.expectBounded(asked, configuration: configuration)
                #expect(asked.contains { $0.command == "XREADGROUP" && $0.count > 1 })
                #expect(try await TestServers.count(postgres, "inference_results") == 100)
            }
        }
    }

    /// What `bench` reads: every batch reaches each stage boundary once, in order, from the
    /// reader and then one sink, and its last call carries its report.
    @Test func aStageObserverSeesEveryBatchPassEachBoundaryInOrder() async throws {
        try await PrivateRedis.with { redis in
            try await TestServers.withTestSchema { postgres in
                var configuration = Self.configuration(prefix: "stages:", redis: redis, postgres: postgres)
                configuration.batchSize = 50
                let stream = configuration.streams(for: .inference)[0]
                try await Self.largeEntries(500, padBytes: 10, to: stream, redis: redis)
                let observer = BoundaryLog()
                try await WorkerService(configuration: configuration, logger: TestServers.logger, stageObserver: observer).run()
                let (boundaries, entries) = observer.seen.withLock { ($0.boundaries, $0.acknowledgedEntries) }
                #expect(boundaries.count >= 10)
                #expect(boundaries.values.allSatisfy { $0 == ["handedOver", "taken", "prepared", "committed", "acknowledged"] })
                #expect(entries == 500)
                #expect(try await TestServers.count(postgres, "inference_results") == 500)
            }
        }
    }

    final class BoundaryLog: BatchStageObserver {
        struct Seen {
            var boundaries: [BatchStageKey: [String]] = [:]
            var acknowledgedEntries = 0
        }

        let seen = Mutex(Seen())

        func batch(_ batch: BatchStageKey, reached boundary: BatchStageBoundary, at instant: ContinuousClock.Instant) {
            seen.withLock { seen in
                let name: String
                switch boundary {
                case .handedOver: name = "handedOver"
                case .taken: name = "taken"
                case .prepared: name = "prepared"
                case .committed: name = "committed"
                case .acknowledged(let report):
                    name = "acknowledged"
                    seen.acknowledgedEntries += report.entries
                }
                seen.boundaries[batch, default: []].append(name)
            }
        }
    }

    static func expectBounded(_ asked: [PrivateRedis.Read], configuration: WorkerConfiguration) throws {
        try #require(!asked.isEmpty, "MONITOR saw no read")
        // Entries weigh a little more than their pad: at most this many fit, plus one.
        let bound = configuration.maximumBatchBytes / padBytes + 1
        let over = asked.filter { $0.count > bound }
        #expect(over.isEmpty, "asked for more than \(bound) entries of 0.9 MiB: \(over.prefix(5))")
    }

    /// The reader's connection is killed right after Redis delivered entries to it (CLIENT KILL
    /// ID in the same pipeline as the XADDs that woke its blocked XREADGROUP): the entries are in
    /// its pending list and their reply is gone. They are stored at once, not after `--claim-idle`.
    @Test func entriesOfAReadWhoseReplyWasLostAreStoredLongBeforeTheClaimIdleTime() async throws {
        try await PrivateRedis.with { redis in
            try await TestServers.withTestSchema { postgres in
                var configuration = Self.configuration(prefix: "lost:", redis: redis, postgres: postgres)
                configuration.drain = false
                configuration.claimIdle = .seconds(60)
                let stream = configuration.streams(for: .inference)[0]
                let group = ServiceGroup(
                    services: [WorkerService(configuration: configuration, logger: TestServers.logger)], logger: TestServers.logger
                )
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { try await group.run() }
                    defer { tasks.cancelAll() }
                    var telemetry = SyntheticTelemetry(seed: 10)
                    var added = 0
                    var lost = 0
                    try await RedisConnection.withConnection(redis, logger: TestServers.logger) { connection in
                        // Once a reader waits, the worker has made the group.
                        _ = try await Self.blockedReader(connection)
                        // The kill may miss (the reader between two reads): then nothing was lost; again.
                        for _ in 0..<20 where lost == 0 {
                            // Whatever an earlier attempt added is stored: pending counts only this attempt's.
                            try await waitUntil("nothing pending") { try await connection.pendingCount(stream, group: "adworker") == 0 }
                            let reader = try await Self.blockedReader(connection)
                            var commands = [RedisCommand("MULTI")]
                            for _ in 0..<20 {
                                var command = RedisCommand.streamAdd(to: stream)
                                WireFormat.encode(telemetry.inference(model: "m", requestID: "r-\(added)"), into: &command)
                                commands.append(command)
                                added += 1
                            }
                            commands += [
                                RedisCommand("EXEC"), RedisCommand("XPENDING", stream, "adworker"), RedisCommand("CLIENT", "KILL", "ID", reader),
                            ]
                            let replies = try await connection.pipeline(commands)
                            #expect(replies.last?.integer == 1, "the reader's connection was not killed")
                            lost = Int(replies[replies.count - 2].array?.first?.integer ?? 0)
                        }
                    }
                    try #require(lost > 0, "no kill hit a read that delivered entries")
                    try await waitUntil("\(lost) entries of a lost reply stored", within: .seconds(15)) {
                        try await TestServers.count(postgres, "inference_results") >= added
                    }
                    #expect(try await TestServers.count(postgres, "inference_results") == added)
                    await group.triggerGracefulShutdown()
                    try await tasks.waitForAll()
                }
                let pending = try await RedisConnection.withConnection(redis, logger: TestServers.logger) {
                    try await $0.pendingCount(stream, group: "adworker")
                }
                #expect(pending == 0)
            }
        }
    }

    /// The id of the worker's reader once it waits in a blocking XREADGROUP.
    static func blockedReader(_ connection: RedisConnection) async throws -> String {
        var reader: String?
        try await waitUntil("a reader waiting in XREADGROUP") {
            let clients = try await connection.send(RedisCommand("CLIENT", "LIST")).string ?? ""
            reader = clients.split(separator: "\n").lazy.compactMap { line -> String? in
                let fields = Dictionary(
                    line.split(separator: " ").compactMap { field -> (Substring, Substring)? in
                        guard let equals = field.firstIndex(of: "=") else { return nil }
                        return (field[..<equals], field[field.index(after: equals)...])
                    },
                    uniquingKeysWith: { first, _ in first }
                )
                guard fields["cmd"] == "xreadgroup", fields["flags"]?.contains("b") == true, let id = fields["id"] else { return nil }
                return String(id)
            }.first
            return reader != nil
        }
        return reader!
    }
}

/// A redis-server of one test's own, on a free port outside the ephemeral range, killed afterwards.
enum PrivateRedis {
    /// One XREADGROUP or XAUTOCLAIM as MONITOR showed it: the command and its COUNT.
    struct Read: CustomStringConvertible {
        var command: String
        var count: Int
        var description: String { "\(command) COUNT \(count)" }
    }

    static func with<Result>(_ body: (RedisConfiguration) async throws -> Result) async throws -> Result {
        let port = try TestPorts.free()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("adworker-reader-\(port)").path
        let server = try TestServers.privateRedisServer(port: port, directoryPrefix: "adworker-reader-")
        try server.run()
        defer {
            // SIGKILL, not terminate(): the child inherits the test process's blocked signals.
            kill(server.processIdentifier, SIGKILL)
            try? FileManager.default.removeItem(atPath: directory)
        }
        var redis = TestServers.redis
        redis.port = port
        redis.connectTimeout = .milliseconds(200)
        try await waitUntil("the private redis-server answers") {
            (try? await RedisConnection.withConnection(redis, logger: TestServers.logger) { try await $0.ping() }) != nil
        }
        return try await body(redis)
    }

    /// Runs `body` under `redis-cli monitor`; returns every XREADGROUP and XAUTOCLAIM it saw.
    static func monitoring(_ redis: RedisConfiguration, _ body: () async throws -> Void) async throws -> [Read] {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("adworker-monitor-\(redis.port).log")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let handle = try FileHandle(forWritingTo: output)
        let monitor = Process()
        monitor.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        monitor.arguments = ["redis-cli", "-p", "\(redis.port)", "monitor"]
        monitor.standardOutput = handle
        monitor.standardError = FileHandle.nullDevice
        try monitor.run()
        defer {
            kill(monitor.processIdentifier, SIGKILL)
            try? handle.close()
            try? FileManager.default.removeItem(at: output)
        }
        // MONITOR answers OK once it is on: the monitor is in CLIENT LIST as cmd=monitor.
        try await RedisConnection.withConnection(redis, logger: TestServers.logger) { connection in
            try await waitUntil("MONITOR is on") { try await (connection.send(RedisCommand("CLIENT", "LIST")).string ?? "").contains("cmd=monitor") }
        }
        try await body()
        // A marker through the same server: once MONITOR printed it, everything before is in the file.
        let marker = "adworker-monitor-end-\(UUID().uuidString)"
        try await RedisConnection.withConnection(redis, logger: TestServers.logger) { connection in
            _ = try await connection.send(RedisCommand("ECHO", marker))
        }
        try await waitUntil("MONITOR printed the marker") { try String(contentsOf: output, encoding: .utf8).contains(marker) }
        return reads(in: try String(contentsOf: output, encoding: .utf8))
    }

    /// `1700000000.000000 [0 127.0.0.1:5555] "XREADGROUP" "GROUP" "g" "c" "COUNT" "4" …`
    static func reads(in monitorOutput: String) -> [Read] {
        monitorOutput.split(separator: "\n").compactMap { line -> Read? in
            let arguments = line.split(separator: "\"").enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) }
            guard let command = arguments.first.map({ $0.uppercased() }), command == "XREADGROUP" || command == "XAUTOCLAIM",
                let countIndex = arguments.firstIndex(where: { $0.uppercased() == "COUNT" }), countIndex + 1 < arguments.count,
                let count = Int(arguments[countIndex + 1])
            else { return nil }
            return Read(command: command, count: count)
        }
    }

}

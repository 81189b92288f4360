public import AdTelemetryRecords
public import AdWorkerCore
public import AdWorkerPostgres
public import AdWorkerRedis
public import Foundation
public import Logging

/// The Redis and PostgreSQL that `scripts/dev-services.sh` starts; the environment may point
/// elsewhere with the same variables the daemon reads. A missing server fails the test: CI
/// always starts them, so a skip would only hide a broken setup.
public enum TestServers {
    public static let environment = ProcessInfo.processInfo.environment
    public static let logger: Logger = {
        var logger = Logger(label: "adworker.tests")
        logger.logLevel = ProcessInfo.processInfo.environment["ADWORKER_TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        return logger
    }()

    public static var redis: RedisConfiguration {
        RedisConfiguration(
            host: environment["REDIS_HOST"] ?? "127.0.0.1",
            port: Int(environment["REDIS_PORT"] ?? "") ?? 6379,
            username: environment["REDIS_USERNAME"],
            password: environment["REDIS_PASSWORD"]
        )
    }

    /// The cluster `scripts/redis-cluster.sh start` makes (REDIS_CLUSTER_NODES may point elsewhere).
    public static var redisCluster: RedisConfiguration {
        var configuration = redis
        let seeds = environment["REDIS_CLUSTER_NODES"] ?? (30001...30006).map { "127.0.0.1:\($0)" }.joined(separator: ",")
        configuration.clusterNodes = seeds.split(separator: ",").compactMap { RedisNodeAddress($0) }
        configuration.host = configuration.clusterNodes[0].host
        configuration.port = configuration.clusterNodes[0].port
        return configuration
    }

    /// The primary and replica under the three sentinels `scripts/redis-sentinel.sh start` makes.
    public static var redisSentinel: RedisConfiguration {
        var configuration = redis
        let sentinels = environment["REDIS_SENTINELS"] ?? (26400...26402).map { "127.0.0.1:\($0)" }.joined(separator: ",")
        configuration.sentinel = RedisSentinel(
            nodes: sentinels.split(separator: ",").compactMap { RedisNodeAddress($0) }, masterName: environment["REDIS_SENTINEL_MASTER"] ?? "adworker")
        return configuration
    }

    public static var postgres: PostgresConfiguration {
        PostgresConfiguration(
            host: environment["DATABASE_HOST"] ?? "127.0.0.1",
            port: Int(environment["DATABASE_PORT"] ?? "") ?? 5432,
            database: environment["DATABASE_NAME"] ?? "adworker",
            user: environment["DATABASE_USER"] ?? "adworker",
            password: environment["DATABASE_PASSWORD"] ?? "adworker"
        )
    }

    /// The repository's `schema/` directory.
    public static var schemaDirectory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("schema").path
    }

    public static func uniqueName(_ prefix: String) -> String {
        "\(prefix)_\(UUID().uuidString.prefix(8).lowercased())"
    }

    /// Runs `body` with a PostgreSQL configuration whose `search_path` is a fresh, migrated
    /// schema, dropped afterwards. The schema is made through `direct` (migrations need a session
    /// of their own); `body` gets `servedBy` (a pooler in front of the same database, say).
    public static func withTestSchema<Result>(
        direct: PostgresConfiguration = postgres, servedBy: PostgresConfiguration? = nil,
        _ body: (PostgresConfiguration) async throws -> Result
    ) async throws -> Result {
        let schema = uniqueName("test")
        var configuration = direct
        configuration.searchPath = schema
        let migrations = try Migration.load(from: schemaDirectory)
        try await PostgresConnection.withConnection(configuration, logger: logger) { connection in
            try await connection.execute("CREATE SCHEMA \(schema)")
            _ = try await connection.migrate(migrations)
        }
        var served = servedBy ?? direct
        served.searchPath = schema
        do {
            let result = try await body(served)
            _ = try await query(direct, "DROP SCHEMA IF EXISTS \(schema) CASCADE")
            return result
        } catch {
            _ = try? await query(direct, "DROP SCHEMA IF EXISTS \(schema) CASCADE")
            throw error
        }
    }

    /// Runs `body` with a unique stream prefix; every stream under it is deleted afterwards.
    /// XDEL of single entries (what a test wrote to shared stream names). - Returns: how many existed.
    public static func removeEntries(_ entries: [String: StreamEntryID]) async throws -> Int {
        try await RedisConnection.withConnection(redis, logger: logger) { connection in
            var removed = 0
            for (stream, id) in entries { removed += Int(try await connection.send(RedisCommand("XDEL", stream, id.description)).integer ?? 0) }
            return removed
        }
    }

    public static func withTestStreams<Result>(_ body: (String) async throws -> Result) async throws -> Result {
        let prefix = uniqueName("test") + ":"
        do {
            let result = try await body(prefix)
            try await deleteStreams(prefix)
            return result
        } catch {
            try? await deleteStreams(prefix)
            throw error
        }
    }

    private static func deleteStreams(_ prefix: String) async throws {
        try await RedisConnection.withConnection(redis, logger: logger) { connection in
            let keys = try await connection.send(RedisCommand("KEYS", prefix + "*")).array?.compactMap(\.string) ?? []
            try await connection.delete(keys)
        }
    }

    public static func query(_ configuration: PostgresConfiguration, _ sql: String, _ parameters: [String?] = []) async throws -> [[String?]] {
        try await PostgresConnection.withConnection(configuration, logger: logger) { connection in
            try await connection.query(sql, parameters)
        }
    }

    public static func count(_ configuration: PostgresConfiguration, _ table: String) async throws -> Int {
        Int(try await query(configuration, "SELECT count(*) FROM \(table)")[0][0] ?? "") ?? -1
    }

    /// A redis-server of the test's own on `port`, not started yet: in the foreground as this
    /// process's child, never waited for (Foundation's waitUntilExit hung from a test task).
    public static func privateRedisServer(port: Int, directoryPrefix: String = "adworker-redis-") throws -> Process {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(directoryPrefix)\(port)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = ["redis-server", "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        return server
    }
}

extension TestServers {
    /// A worker on the test's streams and schema that drains them and stops.
    public static func workerConfiguration(prefix: String, postgres: PostgresConfiguration, concurrency: Int = 2) -> WorkerConfiguration {
        WorkerConfiguration(
            streamPrefix: prefix, group: "adworker", consumerPrefix: "test", concurrency: concurrency, batchSize: 500,
            maximumWait: .milliseconds(50), drain: true, redis: redis, postgres: postgres
        )
    }

    /// One consumer on the inference stream, claiming after 100 ms and trimming only when a test asks.
    public static func singleConsumerConfiguration(prefix: String, postgres: PostgresConfiguration) -> WorkerConfiguration {
        var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres, concurrency: 1)
        configuration.kinds = [.inference]
        configuration.claimIdle = .milliseconds(100)
        // Trimming runs where a test asks for it, not at a moment the test cannot predict.
        configuration.trimInterval = nil
        return configuration
    }

    /// Adds `count` valid inference entries; returns their ids.
    public static func addInferenceEntries(_ count: Int, to stream: String, seed: UInt64 = 1) async throws -> [StreamEntryID] {
        var telemetry = SyntheticTelemetry(seed: seed)
        let commands = (0..<count).map { number -> RedisCommand in
            var command = RedisCommand.streamAdd(to: stream)
            WireFormat.encode(telemetry.inference(model: "m", requestID: "r-\(number)"), into: &command)
            return command
        }
        return try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
            try await redis.add(commands).map { try $0.get() }
        }
    }

    /// Entries delivered and not acknowledged; 0 before the worker has created the group.
    public static func pending(_ stream: String) async throws -> Int {
        try await RedisConnection.withConnection(redis, logger: logger) { redis in
            do {
                return try await redis.pendingCount(stream, group: "adworker")
            } catch let error as RedisError where error.code == .noGroup {
                return 0
            }
        }
    }
}

import AdTelemetryRecords
@testable import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import AdWorkerTestSupport
import Testing

/// A configuration that cannot work ends `adworker run` at once with what to change, instead of
/// retrying forever; the codes come from the servers (SQLSTATE, Redis's reply prefix).
@Suite("Refusals at start-up, on real servers", .timeLimit(.minutes(1)))
struct StartupRefusalTests {
    static func configuration(redis: RedisConfiguration = TestServers.redis, postgres: PostgresConfiguration) -> WorkerConfiguration {
        WorkerConfiguration(
            kinds: [.training], streamPrefix: TestServers.uniqueName("refusal") + ":", group: "g", consumerPrefix: "refusal",
            redis: redis, postgres: postgres
        )
    }

    static func refusal(_ configuration: WorkerConfiguration) async throws -> String {
        do {
            try await WorkerService(configuration: configuration, logger: TestServers.logger).run()
        } catch let error as StartupRefused {
            return error.description
        }
        Issue.record("the worker started")
        return ""
    }

    @Test func aFailedLoginCarriesItsSQLState() async throws {
        var wrongPassword = TestServers.postgres
        wrongPassword.password = "not-the-password"
        await #expect(throws: PostgresError.self) { try await PostgresConnection.withConnection(wrongPassword, logger: TestServers.logger) { _ in } }
        do {
            try await PostgresConnection.withConnection(wrongPassword, logger: TestServers.logger) { _ in }
        } catch let error as PostgresError {
            #expect(error.sqlState == "28P01", "\(error)")
        }
        var missingDatabase = TestServers.postgres
        missingDatabase.database = TestServers.uniqueName("nodb")
        do {
            try await PostgresConnection.withConnection(missingDatabase, logger: TestServers.logger) { _ in }
            Issue.record("connected to a database that does not exist")
        } catch let error as PostgresError {
            #expect(error.sqlState == "3D000", "\(error)")
        }
        var unreachable = TestServers.postgres
        unreachable.port = 1
        do {
            try await PostgresConnection.withConnection(unreachable, logger: TestServers.logger) { _ in }
        } catch let error as PostgresError {
            #expect(error.sqlState == nil, "no server, no SQLSTATE: \(error)")
        }
    }

    @Test func aWrongDatabasePasswordRefusesToStart() async throws {
        var postgres = TestServers.postgres
        postgres.password = "not-the-password"
        let reason = try await Self.refusal(Self.configuration(postgres: postgres))
        #expect(reason.contains("28P01") && reason.contains("DATABASE_PASSWORD"), "\(reason)")
    }

    @Test func aMissingTableRefusesToStart() async throws {
        // A schema of its own, never migrated: no tables on the search path.
        let schema = TestServers.uniqueName("empty")
        try await PostgresConnection.withConnection(TestServers.postgres, logger: TestServers.logger) { try await $0.execute("CREATE SCHEMA \(schema)") }
        defer {
            Task { try? await PostgresConnection.withConnection(TestServers.postgres, logger: TestServers.logger) { try await $0.execute("DROP SCHEMA \(schema)") } }
        }
        var postgres = TestServers.postgres
        postgres.searchPath = schema
        let reason = try await Self.refusal(Self.configuration(postgres: postgres))
        #expect(reason == "table training_data does not exist in database \(postgres.database): run adworker migrate")
    }

    @Test func aWrongRedisPasswordRefusesToStart() async throws {
        let user = TestServers.uniqueName("refused")
        try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
            _ = try await redis.send(RedisCommand("ACL", "SETUSER", user, "on", ">secret", "+@all", "~*"))
        }
        defer {
            Task { try? await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { _ = try await $0.send(RedisCommand("ACL", "DELUSER", user)) } }
        }
        var redis = TestServers.redis
        redis.username = user
        redis.password = "wrong"
        let reason = try await Self.refusal(Self.configuration(redis: redis, postgres: TestServers.postgres))
        #expect(reason.hasPrefix("Redis refuses the credentials") && reason.contains("REDIS_PASSWORD"), "\(reason)")
    }

    /// With ADWORKER_REDIS_WAIT_REPLICAS, an ACL user without `+wait` is refused at start-up,
    /// not at the first entry it reads.
    @Test func anACLWithoutWaitRefusesToStartWhenWaitingForReplicas() async throws {
        let user = TestServers.uniqueName("nowait")
        try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
            _ = try await redis.send(RedisCommand("ACL", "SETUSER", user, "on", ">secret", "+@all", "-wait", "~*"))
        }
        defer {
            Task { try? await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { _ = try await $0.send(RedisCommand("ACL", "DELUSER", user)) } }
        }
        var redis = TestServers.redis
        redis.username = user
        redis.password = "secret"
        redis.replicaWait = RedisReplicaWait(replicas: 1, timeout: .milliseconds(100))
        let reason = try await Self.refusal(Self.configuration(redis: redis, postgres: TestServers.postgres))
        #expect(reason.hasPrefix("Redis's ACL denies a command") && reason.contains("wait"), "\(reason)")
    }
}

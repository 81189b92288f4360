import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerTestSupport
import Foundation
import Testing

/// Through the PgBouncer of `scripts/pgbouncer.sh start`: transaction mode on its port, session
/// mode under the alias `<database>_session`, its database's default `synchronous_commit = off`.
/// Serialized: the tests rely on PgBouncer handing the session one client released to the next
/// client that asks, and look at every temporary table of the database.
@Suite("Through PgBouncer in transaction mode", .serialized, .timeLimit(.minutes(2)))
struct PgBouncerTests {
    static let target = RowEncoder.inferenceTarget

    /// Two clients taking turns, so that each transaction of one is served by the session the
    /// other just released: nothing may depend on a session outliving its transaction.
    static func takingTurns(
        _ pooled: PostgresConfiguration, _ turns: [(client: Int, rows: BinaryCopyRows, path: InsertPath)]
    ) async throws -> [InsertOutcome] {
        var first = pooled
        first.applicationName = "client-0"
        var second = pooled
        second.applicationName = "client-1"
        return try await PostgresConnection.withConnection(first, logger: TestServers.logger) { zero in
            try await PostgresConnection.withConnection(second, logger: TestServers.logger) { one in
                var outcomes: [InsertOutcome] = []
                for turn in turns {
                    outcomes.append(try await (turn.client == 0 ? zero : one).insert(turn.rows, into: target, path: turn.path))
                }
                return outcomes
            }
        }
    }

    static func direct(_ pooled: PostgresConfiguration) -> PostgresConfiguration {
        var direct = TestServers.pgbouncerDatabaseDirect
        direct.searchPath = pooled.searchPath
        return direct
    }

    @Test func fastIdempotentAndBisectingInsertsStoreExactRows() async throws {
        try await TestServers.withPooledTestSchema { pooled in
            let outcomes = try await Self.takingTurns(
                pooled,
                [
                    (0, TestRows.inference(1...100), .fast),
                    (1, TestRows.inference(51...150), .fast),
                    (0, TestRows.inference(1...150), .idempotent),
                    (1, TestRows.inference(151...250, badValueAt: [160, 222]), .fast),
                    (0, TestRows.inference(241...300, badValueAt: [270]), .idempotent),
                ]
            )
            #expect(outcomes.map(\.insertedRows) == [100, 50, 0, 98, 49])
            #expect(outcomes.map(\.duplicateRows) == [0, 50, 150, 0, 10])
            #expect(outcomes.map { $0.rejectedRows.map(\.index) } == [[], [], [], [9, 71], [29]])
            #expect(outcomes.map(\.fellBackToIdempotentPath) == [false, true, false, false, false])
            #expect(try await TestServers.count(Self.direct(pooled), "inference_results") == 297)
        }
    }

    /// The database's default is `off`; a trigger records the setting in force in each transaction
    /// that stores rows (the fast path's COPY, the idempotent path's INSERT), with the backend that
    /// ran it and the client it ran for.
    @Test func everyTransactionCommitsSynchronouslyThoughTheDatabaseDefaultIsOff() async throws {
        try await TestServers.withPooledTestSchema { pooled in
            var pooled = pooled
            pooled.statementTimeout = .seconds(42)
            let serverDefault = try await TestServers.query(pooled, "SELECT reset_val FROM pg_settings WHERE name = 'synchronous_commit'")
            try #require(serverDefault == [["off"]], "scripts/pgbouncer.sh sets the database's default to off")
            try await PostgresConnection.withConnection(Self.direct(pooled), logger: TestServers.logger) { connection in
                try await connection.execute(
                    """
                CREATE TABLE observed (backend int, client text, synchronous_commit text, statement_timeout text);
                CREATE FUNCTION observe() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                    INSERT INTO observed VALUES (pg_backend_pid(), current_setting('application_name'),
                        current_setting('synchronous_commit'), current_setting('statement_timeout'));
                    RETURN NULL;
                END $$;
                CREATE TRIGGER observe AFTER INSERT ON inference_results FOR EACH STATEMENT EXECUTE FUNCTION observe()
                """
                )
            }
            let outcomes = try await Self.takingTurns(
                pooled,
                [
                    (0, TestRows.inference(1...10), .fast), (1, TestRows.inference(11...20), .fast),
                    (0, TestRows.inference(5...30), .idempotent), (1, TestRows.inference(31...38, badValueAt: [33]), .fast),
                ]
            )
            #expect(outcomes.map(\.insertedRows) == [10, 10, 10, 7])
            let observed = try await TestServers.query(Self.direct(pooled), "SELECT backend, client, synchronous_commit, statement_timeout FROM observed")
            // One per committed transaction: 1 + 1 + 1, and the bisection's 3 (rows 31-32, 34, 35-38).
            #expect(observed.count == 6)
            #expect(observed.allSatisfy { $0[2] == "on" && $0[3] == "42s" }, "\(observed)")
            let clientsPerBackend = Dictionary(grouping: observed, by: { $0[0] }).mapValues { Set($0.map { $0[1] }) }
            #expect(clientsPerBackend.values.contains { $0 == ["client-0", "client-1"] }, "the clients shared a server session: \(observed)")
        }
    }

    /// The idempotent path's staging table goes with its transaction: none stays in any session
    /// of the pool, where the next client's transactions would find it.
    @Test func theStagingTableDoesNotOutliveItsTransaction() async throws {
        try await TestServers.withPooledTestSchema { pooled in
            let outcomes = try await Self.takingTurns(
                pooled,
                [
                    (0, TestRows.inference(1...50), .idempotent), (1, TestRows.inference(1...80), .idempotent),
                    (0, TestRows.inference(70...90, badValueAt: [85]), .idempotent),
                ]
            )
            #expect(outcomes.map(\.insertedRows) == [50, 30, 9])
            let temporary = try await TestServers.query(
                TestServers.pgbouncerDatabaseDirect,
                "SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND relname LIKE 'adworker\\_txn\\_staging\\_%'"
            )
            #expect(temporary == [["0"]])
        }
    }

    @Test func aWorkerDrainsItsStreamsThroughTheTransactionPool() async throws {
        try await TestServers.withPooledTestSchema { pooled in
            try await TestServers.withTestStreams { prefix in
                var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: pooled, concurrency: 3)
                configuration.kinds = [.inference]
                let stream = configuration.streams(for: .inference)[0]
                _ = try await TestServers.addInferenceEntries(3000, to: stream)
                try await WorkerService(configuration: configuration, logger: TestServers.logger).run()
                #expect(try await TestServers.count(Self.direct(pooled), "inference_results") == 3000)
                #expect(try await TestServers.pending(stream) == 0)
            }
        }
    }

    @Test func eachWayToTheServerIsToldApart() async throws {
        #expect(try await ServerSession.detect(TestServers.pgbouncerDatabaseDirect, logger: TestServers.logger) == .direct)
        #expect(try await ServerSession.detect(TestServers.pgbouncerSession, logger: TestServers.logger) == .pinnedByPooler)
        #expect(try await ServerSession.detect(TestServers.pgbouncer, logger: TestServers.logger) == .sharedByPooler)
    }

    /// `adworker migrate` refuses the transaction pool before it applies anything (exit 4, the
    /// start-up refusal's status), and migrates through the session pool. In the database's
    /// public schema, which only these tests use.
    @Test func migrateRefusesTheTransactionPoolAndRunsThroughTheSessionPool() async throws {
        let direct = TestServers.pgbouncerDatabaseDirect
        try await PostgresConnection.withConnection(direct, logger: TestServers.logger) { connection in
            try await connection.execute("SET LOCAL client_min_messages = warning; DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
        }
        let emptyEnvironment = FileManager.default.temporaryDirectory.appendingPathComponent(TestServers.uniqueName("env")).path
        _ = FileManager.default.createFile(atPath: emptyEnvironment, contents: Data())
        defer { try? FileManager.default.removeItem(atPath: emptyEnvironment) }
        func migrate(database: String) async throws -> (status: Int32, output: String) {
            try await Scripts.adworker(
                ["migrate", "--env-file", emptyEnvironment, "--schema-dir", TestServers.schemaDirectory],
                environment: [
                    "DATABASE_HOST": "127.0.0.1", "DATABASE_PORT": String(TestServers.pgbouncerPort), "DATABASE_NAME": database,
                    "DATABASE_USER": TestServers.postgres.user, "DATABASE_PASSWORD": TestServers.postgres.password ?? "",
                ]
            )
        }
        let migrationsTable = "SELECT to_regclass('public.adworker_schema_migrations') IS NOT NULL"
        let refused = try await migrate(database: TestServers.pgbouncerDatabase)
        #expect(refused.status == 4, "\(refused.output)")
        #expect(refused.output.contains("needs a direct connection to PostgreSQL or a session-mode pool"), "\(refused.output)")
        #expect(try await TestServers.query(direct, migrationsTable) == [["f"]], "nothing applied")
        let migrated = try await migrate(database: TestServers.pgbouncerDatabase + "_session")
        #expect(migrated.status == 0, "\(migrated.output)")
        let versions = try await TestServers.query(direct, "SELECT count(*) FROM public.adworker_schema_migrations")
        #expect(versions == [[String(try Migration.load(from: TestServers.schemaDirectory).count)]])
    }
}

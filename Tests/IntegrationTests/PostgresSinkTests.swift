import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerTestSupport
import Logging
import Testing

@Suite("PostgreSQL sink against a real server", .timeLimit(.minutes(1)))
struct PostgresSinkTests {
    @Test func fastPathFallsBackToIdempotentOnDuplicates() async throws {
        try await TestServers.withTestSchema { configuration in
            try await PostgresConnection.withConnection(configuration, logger: TestServers.logger) { connection in
                let first = try await connection.insert(TestRows.inference(1...10), into: RowEncoder.inferenceTarget, path: .fast)
                #expect(first.insertedRows == 10)
                #expect(!first.fellBackToIdempotentPath)
                let again = try await connection.insert(TestRows.inference(5...15), into: RowEncoder.inferenceTarget, path: .fast)
                #expect(again.fellBackToIdempotentPath)
                #expect(again.insertedRows == 5)
                #expect(again.duplicateRows == 6)
                let redelivered = try await connection.insert(TestRows.inference(1...15), into: RowEncoder.inferenceTarget, path: .idempotent)
                #expect(redelivered.insertedRows == 0)
                #expect(redelivered.duplicateRows == 15)
            }
            #expect(try await TestServers.count(configuration, "inference_results") == 15)
        }
    }

    /// Citus re-raises an error a worker node gave during a COPY with its message but without its
    /// SQLSTATE (XX000, `ReportCopyError` in its multi_copy.c), a duplicate included. A trigger
    /// does the same here for a COPY of a row that exists; the INSERT of the idempotent path,
    /// which Citus runs with the codes kept, is left to the primary key.
    @Test func anErrorWithoutItsCodeOnTheFastPathIsRetriedOnTheIdempotentPath() async throws {
        try await TestServers.withTestSchema { configuration in
            try await PostgresConnection.withConnection(configuration, logger: TestServers.logger) { connection in
                try await connection.execute(
                    """
                    CREATE FUNCTION raise_like_citus() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                        IF current_query() LIKE '%COPY inference_results%'
                           AND EXISTS (SELECT 1 FROM inference_results WHERE stream_id = NEW.stream_id) THEN
                            RAISE 'duplicate key value violates unique constraint' USING ERRCODE = 'XX000';
                        END IF;
                        RETURN NEW;
                    END $$;
                    CREATE TRIGGER raise_like_citus BEFORE INSERT ON inference_results FOR EACH ROW EXECUTE FUNCTION raise_like_citus();
                    """
                )
                _ = try await connection.insert(TestRows.inference(1...10), into: RowEncoder.inferenceTarget, path: .fast)
                let again = try await connection.insert(TestRows.inference(5...15), into: RowEncoder.inferenceTarget, path: .fast)
                #expect(again.fellBackToIdempotentPath)
                #expect(again.insertedRows == 5)
                #expect(again.duplicateRows == 6)
                #expect(again.rejectedRows.isEmpty)
            }
            #expect(try await TestServers.count(configuration, "inference_results") == 15)
        }
    }

    @Test func aDataErrorIsBisectedToTheBadRowsAndTheRestCommitted() async throws {
        try await TestServers.withTestSchema { configuration in
            try await PostgresConnection.withConnection(configuration, logger: TestServers.logger) { connection in
                let outcome = try await connection.insert(TestRows.inference(1...100, badValueAt: [7, 64]), into: RowEncoder.inferenceTarget, path: .fast)
                #expect(outcome.insertedRows == 98)
                #expect(outcome.rejectedRows.map(\.index) == [6, 63])
                #expect(outcome.rejectedRows.allSatisfy { $0.error.sqlState == "22021" && $0.error.code == .dataError })
            }
            let missing = try await TestServers.query(
                configuration, "SELECT stream_id FROM inference_results WHERE stream_id IN ('1700000000000-7', '1700000000000-64')"
            )
            #expect(missing.isEmpty)
            #expect(try await TestServers.count(configuration, "inference_results") == 98)
        }
    }

    @Test func errorsCarryTheirSQLState() async throws {
        try await PostgresConnection.withConnection(TestServers.postgres, logger: TestServers.logger) { connection in
            let badCast = await #expect(throws: PostgresError.self) { try await connection.execute("SELECT 'x'::int") }
            #expect(badCast?.sqlState == "22P02")
            #expect(badCast?.code == .dataError)
            let missing = await #expect(throws: PostgresError.self) { try await connection.execute("SELECT * FROM no_such_table") }
            #expect(missing?.sqlState == "42P01")
            // The connection is still usable after both errors.
            let sum = try await connection.query("SELECT 1 + 1")
            #expect(sum == [["2"]])
        }
    }

    @Test func migrateIsIdempotent() async throws {
        try await TestServers.withTestSchema { configuration in
            let migrations = try Migration.load(from: TestServers.schemaDirectory)
            let applied = try await PostgresConnection.withConnection(configuration, logger: TestServers.logger) { connection in
                try await connection.migrate(migrations)
            }
            #expect(applied.isEmpty)
            let recorded = try await TestServers.query(configuration, "SELECT version FROM adworker_schema_migrations ORDER BY version")
            #expect(recorded.map { $0[0] } == migrations.map { String($0.version) })
        }
    }

    /// Migration 4 on a schema that already holds rows and a granted view: the identifier columns
    /// compare byte by byte afterwards, and rows, view and grant are still there.
    @Test func identifierCollationMigrationKeepsRowsViewAndGrants() async throws {
        let schema = TestServers.uniqueName("test")
        var configuration = TestServers.postgres
        configuration.searchPath = schema
        let migrations = try Migration.load(from: TestServers.schemaDirectory)
        let collationMigration = try #require(migrations.first { $0.name == "identifier_collation" })
        do {
            try await PostgresConnection.withConnection(configuration, logger: TestServers.logger) { connection in
                try await connection.execute("CREATE SCHEMA \(schema)")
                _ = try await connection.migrate(migrations.filter { $0.version < collationMigration.version })
                try await connection.execute(
                    """
                    INSERT INTO inference_results (stream_id, enqueued_at, event_time, model_name, request_id, prediction)
                    VALUES ('1-0', now(), now(), 'ctr', 'r-1', '{"p": 1}'), ('1-1', now(), now(), 'ctr', 'r-2', '{"p": 0}');
                    GRANT SELECT ON model_performance_hourly TO PUBLIC
                    """
                )
                let applied = try await connection.migrate(migrations.filter { $0.version <= collationMigration.version })
                #expect(applied.map(\.version) == [collationMigration.version])
            }
            let collations = try await TestServers.query(
                configuration,
                """
                SELECT table_name || '.' || column_name, collation_name FROM information_schema.columns
                WHERE table_schema = $1 AND column_name IN ('stream_id', 'model_name', 'request_id')
                  AND table_name IN ('training_data', 'inference_results')
                """,
                [schema]
            )
            #expect(collations.count == 6)
            #expect(collations.allSatisfy { $0[1] == "C" }, "\(collations)")
            #expect(try await TestServers.count(configuration, "inference_results") == 2)
            #expect(try await TestServers.query(configuration, "SELECT model_name, inferences FROM model_performance_hourly") == [["ctr", "2"]])
            let grants = try await TestServers.query(
                configuration, "SELECT has_table_privilege('public', $1 || '.model_performance_hourly', 'SELECT')", [schema]
            )
            #expect(grants == [["t"]])
        } catch {
            _ = try? await TestServers.query(TestServers.postgres, "DROP SCHEMA IF EXISTS \(schema) CASCADE")
            throw error
        }
        _ = try await TestServers.query(TestServers.postgres, "DROP SCHEMA IF EXISTS \(schema) CASCADE")
    }

    @Test func aWrongPasswordIsRefusedWithoutEchoingIt() async throws {
        var configuration = TestServers.postgres
        configuration.password = "definitely-wrong-\(UInt32.random(in: 0...UInt32.max))"
        let error = await #expect(throws: PostgresError.self) {
            try await PostgresConnection.withConnection(configuration, logger: TestServers.logger) { _ in }
        }
        #expect(error?.code == .connectionFailed)
        #expect(error.map { !$0.description.contains(configuration.password!) } == true)
    }
}

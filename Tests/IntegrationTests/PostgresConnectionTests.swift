import AdWorkerPostgres
import AdWorkerTestSupport
import Foundation
import Testing

@Suite("PostgreSQL connection settings against a real server", .timeLimit(.minutes(1)))
struct PostgresConnectionTests {
    /// With `synchronous_commit = off` as the default, COMMIT returns before the WAL is flushed; the
    /// worker XACKs after COMMIT, so its transactions must commit synchronously whatever the default.
    @Test func transactionsCommitSynchronouslyWhenTheServerDefaultIsOff() async throws {
        let configuration = TestServers.postgres
        try await PostgresConnection.withConnection(configuration, logger: TestServers.logger) { connection in
            try await connection.execute("ALTER ROLE CURRENT_USER SET synchronous_commit = off")
        }
        do {
            let (roleDefault, session) = try await PostgresConnection.withConnection(configuration, logger: TestServers.logger) {
                connection in
                let roleDefault = try await connection.query(
                    "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting WHERE setrole = (SELECT oid FROM pg_roles WHERE rolname = current_user) AND setdatabase = 0"
                )
                return (roleDefault.first?.first ?? nil, try await connection.query("SHOW synchronous_commit")[0][0])
            }
            #expect(roleDefault?.contains("synchronous_commit=off") == true)
            #expect(session == "on")
        }
        try await PostgresConnection.withConnection(configuration, logger: TestServers.logger) { connection in
            try await connection.execute("ALTER ROLE CURRENT_USER RESET synchronous_commit")
        }
    }

    /// A DATABASE_URL is expanded by libpq (not taken as a database name), and wins over the fields.
    @Test func connectsThroughADatabaseURL() async throws {
        let server = TestServers.postgres
        let url = "postgresql://\(server.user):\(server.password ?? "")@\(server.host):\(server.port)/\(server.database)"
        let configuration = PostgresConfiguration(host: "unused.invalid", database: "unused", user: "unused", url: url)
        let row = try await PostgresConnection.withConnection(configuration, logger: TestServers.logger) { connection in
            try await connection.query("SELECT current_user, current_database(), inet_server_addr() IS NOT NULL")[0]
        }
        #expect(row == [server.user, server.database, "t"])
    }

    /// A server that stops answering (here: busy for longer than the bound) is given up after
    /// `replyTimeout`, with a timeout error, instead of waiting as long as TCP would.
    @Test func aReplyThatNeverComesIsBounded() async throws {
        var configuration = TestServers.postgres
        configuration.replyTimeout = .milliseconds(500)
        let clock = ContinuousClock()
        let start = clock.now
        let (error, afterwards) = try await PostgresConnection.withConnection(configuration, logger: TestServers.logger) { connection in
            let error = await #expect(throws: PostgresError.self) { try await connection.execute("SELECT pg_sleep(20)") }
            // The connection was given up; the next statement reconnects.
            return (error, try await connection.query("SELECT 1")[0][0])
        }
        #expect(error?.code == .timeout)
        #expect(afterwards == "1")
        #expect(start.duration(to: clock.now) < .seconds(15))
    }

    /// Cancellation (a shutdown whose budget ran out) interrupts a statement the server is still
    /// running, and the server stops it.
    @Test func cancellationStopsAStatementInProgress() async throws {
        let configuration = TestServers.postgres
        let marker = TestServers.uniqueName("cancelme")
        let statement = Task {
            try await PostgresConnection.withConnection(configuration, logger: TestServers.logger) { connection in
                try await connection.execute("SELECT pg_sleep(30) /* \(marker) */")
            }
        }
        try await PostgresConnection.withConnection(configuration, logger: TestServers.logger) { observer in
            func running() async throws -> Int {
                Int(
                    try await observer.query(
                        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1", ["%" + marker + "%"]
                    )[0][0] ?? "") ?? -1
            }
            try await waitUntil("the statement running") { try await running() > 0 }
            statement.cancel()
            let error = await #expect(throws: PostgresError.self) { try await statement.value }
            #expect(error?.code == .cancelled)
            // Long before its 30 s were up.
            try await waitUntil("the server stopped the statement", within: .seconds(10)) { try await running() == 0 }
        }
    }
}

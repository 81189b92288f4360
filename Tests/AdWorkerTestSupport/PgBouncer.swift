public import AdWorkerPostgres
import Foundation

/// The PgBouncer of `scripts/pgbouncer.sh start` (port ADWORKER_PGBOUNCER_PORT, default 6432) in
/// front of a database of its own (ADWORKER_PGBOUNCER_DATABASE, default adworker_pgbouncer), so
/// that nothing here meets the other suites' rows. A missing PgBouncer fails the test.
extension TestServers {
    public static var pgbouncerDatabase: String { environment["ADWORKER_PGBOUNCER_DATABASE"] ?? "adworker_pgbouncer" }
    public static var pgbouncerPort: Int { Int(environment["ADWORKER_PGBOUNCER_PORT"] ?? "") ?? 6432 }

    /// Through PgBouncer in transaction mode.
    public static var pgbouncer: PostgresConfiguration {
        var configuration = postgres
        configuration.port = pgbouncerPort
        configuration.host = "127.0.0.1"
        configuration.database = pgbouncerDatabase
        return configuration
    }

    /// Through PgBouncer in session mode: the script's alias `<database>_session`.
    public static var pgbouncerSession: PostgresConfiguration {
        var configuration = pgbouncer
        configuration.database = pgbouncerDatabase + "_session"
        return configuration
    }

    /// The same database, straight to PostgreSQL.
    public static var pgbouncerDatabaseDirect: PostgresConfiguration {
        var configuration = postgres
        configuration.database = pgbouncerDatabase
        return configuration
    }

    /// Runs `body` with the transaction pool's configuration whose `search_path` is a fresh,
    /// migrated schema (made directly, as migrate must be), dropped afterwards.
    public static func withPooledTestSchema<Result>(_ body: (PostgresConfiguration) async throws -> Result) async throws -> Result {
        try await withTestSchema(direct: pgbouncerDatabaseDirect, servedBy: pgbouncer, body)
    }
}

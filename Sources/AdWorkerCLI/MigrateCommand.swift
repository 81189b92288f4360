import AdWorkerPostgres
import ArgumentParser
import Foundation
import Logging

struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Applies the SQL migrations in schema/ that the database does not have yet; safe to run again.",
        discussion: "Needs a server session of its own: directly to PostgreSQL, or through a pooler in session mode. Through a pooler in transaction mode (PgBouncer pool_mode = transaction) it exits 4 before applying anything."
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Directory of NNN_name.sql files (env ADWORKER_SCHEMA_DIR; default ./schema, then <binary>/../share/adworker/schema).")
    var schemaDir: String?

    @Option(help: "TimescaleDB or Citus: compress chunks (columnar partitions on Citus) older than this many days (0: never).")
    var compressAfterDays = 0

    @Option(help: "TimescaleDB or Citus: drop chunks (partitions on Citus) older than this many days (0: keep everything).")
    var retainDays = 0

    func validate() throws {
        guard compressAfterDays >= 0, retainDays >= 0 else { throw ValidationError("day counts must not be negative") }
        if compressAfterDays > 0 && retainDays > 0 && retainDays <= compressAfterDays {
            throw ValidationError("--retain-days must be longer than --compress-after-days")
        }
    }

    func run() async throws {
        let settings = try connection.settings()
        let logger = try connection.bootstrap(settings, label: "adworker.migrate")
        let migrations = try Migration.load(from: try Self.schemaDirectory(schemaDir ?? settings.string("ADWORKER_SCHEMA_DIR")))
        let postgres = try connection.postgres(settings)
        try await refuseATransactionPool(postgres, logger: logger)
        let (applied, citus, timescale) = try await PostgresConnection.withConnection(postgres, logger: logger) { connection in
            let applied = try await connection.migrate(migrations)
            // Citus first: tables it has distributed are never made hypertables too.
            let citus = try await setUpCitus(connection, hypertables: try await timescaleFacts(connection).hypertables, logger: logger)
            let timescale = citus.distributed
                ? "TimescaleDB: not used, the tables are Citus distributed tables, and a table cannot be both"
                : try await setUpTimescale(connection, logger: logger)
            return (applied, citus.message, timescale)
        }
        print(applied.isEmpty ? "schema is up to date (\(migrations.count) migrations)" : "applied \(applied.map { "\($0.version)_\($0.name)" }.joined(separator: ", "))")
        if let citus { print(citus) }
        print(timescale)
    }

    static let tables = ["training_data", "inference_results"]

    /// Migrations run in one server session of their own: through a pooler in transaction mode
    /// whatever a migration sets for its session would stay in a pooled session and reach other
    /// clients' transactions. Refused before anything is applied, with the start-up refusal's status.
    private func refuseATransactionPool(_ postgres: PostgresConfiguration, logger: Logger) async throws {
        let session = try await ServerSession.detect(postgres, logger: logger)
        guard session == .sharedByPooler else {
            if session == .pinnedByPooler { logger.info("migrating through a pooler that keeps one server session for it") }
            return
        }
        logger.critical(
            "cannot migrate: \(postgres) is a connection pooler in transaction mode (PgBouncer pool_mode = transaction), which serves each transaction from whichever server session is free; migrate needs a direct connection to PostgreSQL or a session-mode pool: point DATABASE_HOST and DATABASE_PORT (or DATABASE_URL) at PostgreSQL itself, or at a pool with pool_mode = session, for migrate only (the worker runs through the transaction pool)"
        )
        throw ExitCode(RunCommand.startupRefusedExitCode)
    }

    /// TimescaleDB after the versioned migrations, on every run (``TimescaleSetup``): creates the
    /// extension when the server preloads it, converts the tables that are not hypertables yet
    /// (`migrate_data`, rows kept), then the compression and retention policies.
    private func setUpTimescale(_ connection: PostgresConnection, logger: Logger) async throws -> String {
        var setup = TimescaleSetup.decide(try await timescaleFacts(connection), tables: Self.tables)
        if case .createExtension = setup {
            do {
                try await connection.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            } catch {
                // execute throws PostgresError only (typed throws).
                guard error.sqlState == "42501" else { throw error }
                return "TimescaleDB: preloaded, but this role may not create the extension, so tables stay plain: run CREATE EXTENSION timescaledb as a superuser in this database, then adworker migrate again"
            }
            setup = TimescaleSetup.decide(try await timescaleFacts(connection), tables: Self.tables)
        }
        guard case .convert(let tables) = setup else {
            guard case .stayPlain(let message) = setup else { return "TimescaleDB: the extension could not be created" }
            let ignored = compressAfterDays > 0 || retainDays > 0 ? "; compression and retention flags ignored" : ""
            return message + ignored
        }
        var converted: [String] = []
        for table in tables {
            let rows = try await connection.query("SELECT count(*) FROM \(table)").first?.first.flatMap { $0 } ?? "0"
            logger.notice("converting to a hypertable", metadata: ["table": "\(table)", "rows": "\(rows)"])
            _ = try await connection.query(
                "SELECT create_hypertable($1::regclass, 'enqueued_at', if_not_exists => true, migrate_data => true)", [table]
            )
            converted.append("\(table) (\(rows) rows kept)")
        }
        var done = converted.isEmpty ? [] : ["converted " + converted.joined(separator: ", ")]
        for table in Self.tables {
            if compressAfterDays > 0 {
                _ = try await connection.execute(
                    "ALTER TABLE \(table) SET (timescaledb.compress, timescaledb.compress_segmentby = 'model_name')"
                )
                _ = try await connection.query(
                    "SELECT add_compression_policy($1::regclass, make_interval(days => $2::int), if_not_exists => true)",
                    [table, String(compressAfterDays)]
                )
            }
            if retainDays > 0 {
                _ = try await connection.query(
                    "SELECT add_retention_policy($1::regclass, make_interval(days => $2::int), if_not_exists => true)",
                    [table, String(retainDays)]
                )
            }
        }
        if compressAfterDays > 0 { done.append("compression after \(compressAfterDays) days") }
        if retainDays > 0 { done.append("retention \(retainDays) days") }
        return "TimescaleDB: \(Self.tables.count) hypertables" + (done.isEmpty ? "" : ", " + done.joined(separator: ", "))
    }

    /// Whether the server has an extension's files, this database has it, and the server preloads
    /// its library. shared_preload_libraries is readable by superusers only; the settings a loaded
    /// library defines (`name.%`) are readable by anyone (placeholders for unloaded ones are not in
    /// pg_settings), and before any call into the extension only preloading has loaded it.
    static func extensionPresence(_ name: String, on connection: PostgresConnection) async throws
        -> (available: Bool, installed: Bool, preloaded: Bool)
    {
        let row = try await connection.query(
            """
            SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = $1),
                EXISTS (SELECT 1 FROM pg_extension WHERE extname = $1),
                EXISTS (SELECT 1 FROM pg_settings WHERE name LIKE $1 || '.%')
            """,
            [name]
        ).first ?? []
        return (row.first == "t", row.count > 1 && row[1] == "t", row.count > 2 && row[2] == "t")
    }

    func timescaleFacts(_ connection: PostgresConnection) async throws -> TimescaleSetup.Facts {
        let (available, installed, preloaded) = try await Self.extensionPresence("timescaledb", on: connection)
        // The information schema exists only with the extension, and is usable only once it is loaded.
        let hypertables = installed && preloaded
            ? Set(try await connection.query(
                "SELECT hypertable_name FROM timescaledb_information.hypertables WHERE hypertable_schema = current_schema()"
            ).compactMap { $0.first ?? nil })
            : []
        return TimescaleSetup.Facts(available: available, preloaded: preloaded, installed: installed, hypertables: hypertables)
    }

    /// The first directory that exists among the one given and the usual places.
    static func schemaDirectory(_ explicit: String?) throws -> String {
        if let explicit { return explicit }
        var candidates = ["schema"]
        if let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            let binDirectory = (executable as NSString).deletingLastPathComponent
            candidates.append(binDirectory + "/../share/adworker/schema")
        }
        for candidate in candidates {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), isDirectory.boolValue {
                return candidate
            }
        }
        throw ValidationError("no schema directory found (looked in \(candidates.joined(separator: ", "))); pass --schema-dir")
    }
}

import ArgumentParser
import Foundation
import Logging
import Postgres

struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Applies the SQL migrations in schema/ that the database does not have yet; safe to run again."
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Directory of NNN_name.sql files (env ADWORKER_SCHEMA_DIR; default ./schema, then <binary>/../share/adworker/schema).")
    var schemaDir: String?

    @Option(help: "TimescaleDB only: compress chunks older than this many days (0: no compression policy).")
    var compressAfterDays = 0

    @Option(help: "TimescaleDB only: drop chunks older than this many days (0: keep everything).")
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
        let (applied, timescale) = try await PostgresConnection.withConnection(postgres, logger: logger) { connection in
            let applied = try await connection.migrate(migrations)
            return (applied, try await applyTimescalePolicies(connection))
        }
        print(applied.isEmpty ? "schema is up to date (\(migrations.count) migrations)" : "applied \(applied.map { "\($0.version)_\($0.name)" }.joined(separator: ", "))")
        print(timescale)
    }

    static let tables = ["training_data", "inference_results"]

    /// Compression and retention policies on the hypertables, when TimescaleDB is in use.
    private func applyTimescalePolicies(_ connection: PostgresConnection) async throws -> String {
        let installed = try await connection.query("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
        // Only with the extension present may the query name its schema.
        let hypertables = installed.first?.first == "1"
            ? try await connection.query(
                "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = ANY($1::text[])",
                ["{\(Self.tables.joined(separator: ","))}"]
            ).first?.first.flatMap { $0 }.flatMap { Int($0) } ?? 0
            : 0
        guard hypertables > 0 else {
            let wanted = compressAfterDays > 0 || retainDays > 0 ? "; compression and retention flags ignored" : ""
            return "TimescaleDB: not installed in this database, skipped hypertables\(wanted)"
        }
        var done: [String] = []
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
        return "TimescaleDB: \(hypertables) hypertables" + (done.isEmpty ? "" : ", " + done.joined(separator: ", "))
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

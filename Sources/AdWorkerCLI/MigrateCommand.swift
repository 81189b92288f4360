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

    func run() async throws {
        let settings = try connection.settings()
        let logger = try connection.bootstrap(settings, label: "adworker.migrate")
        let migrations = try Migration.load(from: try Self.schemaDirectory(schemaDir ?? settings.string("ADWORKER_SCHEMA_DIR")))
        let postgres = try connection.postgres(settings)
        let applied = try await PostgresConnection.withConnection(postgres, logger: logger) { connection in
            try await connection.migrate(migrations)
        }
        print(applied.isEmpty ? "schema is up to date (\(migrations.count) migrations)" : "applied \(applied.map { "\($0.version)_\($0.name)" }.joined(separator: ", "))")
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

import Foundation
import Logging

/// One versioned SQL file from `schema/`: `NNN_name.sql`.
public struct Migration: Sendable, Equatable {
    public var version: Int
    public var name: String
    public var sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    /// Reads every `NNN_name.sql` in `directory`, sorted by version.
    public static func load(from directory: String) throws -> [Migration] {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".sql") }
        var migrations: [Migration] = []
        for file in files {
            let stem = file.dropLast(4)
            guard let underscore = stem.firstIndex(of: "_"), let version = Int(stem[..<underscore]) else {
                throw PostgresError(.serverError, "migration file \(file) is not named NNN_name.sql")
            }
            let sql = try String(contentsOfFile: directory + "/" + file, encoding: .utf8)
            migrations.append(Migration(version: version, name: String(stem[stem.index(after: underscore)...]), sql: sql))
        }
        migrations.sort { $0.version < $1.version }
        for (previous, next) in zip(migrations, migrations.dropFirst()) where previous.version == next.version {
            throw PostgresError(.serverError, "two migrations have version \(next.version)")
        }
        return migrations
    }
}

extension PostgresConnection {
    /// Applies the migrations not yet recorded in `adworker_schema_migrations`, each in its own
    /// transaction under an advisory lock, so concurrent `migrate` runs apply each one once.
    /// - Returns: the migrations applied now (empty when the schema was up to date).
    public func migrate(_ migrations: [Migration]) throws(PostgresError) -> [Migration] {
        try execute(
            """
            CREATE TABLE IF NOT EXISTS adworker_schema_migrations (
                version int PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        var applied: [Migration] = []
        for migration in migrations {
            let didApply = try transaction { connection throws(PostgresError) -> Bool in
                try connection.execute("SELECT pg_advisory_xact_lock(hashtext('adworker_schema_migrations'))")
                let existing = try connection.query("SELECT 1 FROM adworker_schema_migrations WHERE version = $1", [String(migration.version)])
                guard existing.isEmpty else { return false }
                try connection.execute(migration.sql)
                _ = try connection.query(
                    "INSERT INTO adworker_schema_migrations (version, name) VALUES ($1, $2)", [String(migration.version), migration.name]
                )
                return true
            }
            if didApply {
                applied.append(migration)
                logger.info("migration applied", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
            }
        }
        return applied
    }
}

/// What `adworker migrate` does about TimescaleDB after the versioned migrations, on every run:
/// a database that gets the extension later is converted then, keeping its rows. Decided from
/// what the server says of itself (``Facts``), so it is the same on every run until that changes.
public enum TimescaleSetup: Equatable, Sendable {
    /// The tables stay plain; the message says why and what would change it.
    case stayPlain(String)
    /// The extension is preloaded and not yet created in this database: create it, then convert.
    case createExtension
    /// The extension is in use: convert the tables that are not hypertables yet (maybe none).
    case convert([String])

    public struct Facts: Equatable, Sendable {
        /// The server has the extension's files (`pg_available_extensions`).
        public var available: Bool
        /// `shared_preload_libraries` names it: without that, creating it fails and the server
        /// drops the connection.
        public var preloaded: Bool
        /// This database has it (`pg_extension`).
        public var installed: Bool
        /// Which of the tables are hypertables already.
        public var hypertables: Set<String>

        public init(available: Bool, preloaded: Bool, installed: Bool, hypertables: Set<String>) {
            self.available = available
            self.preloaded = preloaded
            self.installed = installed
            self.hypertables = hypertables
        }
    }

    public static func decide(_ facts: Facts, tables: [String]) -> TimescaleSetup {
        if !facts.available && !facts.installed {
            return .stayPlain(
                "TimescaleDB: not installed on this server, tables stay plain PostgreSQL tables (for hypertables install the timescaledb package for this PostgreSQL, add timescaledb to shared_preload_libraries, restart PostgreSQL and run adworker migrate again)"
            )
        }
        guard facts.preloaded else {
            return .stayPlain(
                "TimescaleDB: installed on this server but not preloaded, so tables stay plain: add timescaledb to shared_preload_libraries in postgresql.conf (ALTER SYSTEM SET shared_preload_libraries = 'timescaledb'), restart PostgreSQL, then run adworker migrate again to make both tables hypertables (their rows are kept)"
            )
        }
        guard facts.installed else { return .createExtension }
        return .convert(tables.filter { !facts.hypertables.contains($0) })
    }
}

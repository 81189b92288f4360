internal import CAdWorkerLibPQ
public import Logging

/// Whether a connection's transactions all run in one server session: what `adworker migrate`
/// asks before it changes the schema. The worker itself needs no session (every transaction
/// carries its settings), so only migrate refuses a pooler in transaction mode.
public enum ServerSession: Sendable, Equatable {
    /// libpq talks to PostgreSQL itself.
    case direct
    /// A pooler in between keeps one server session for this client (PgBouncer `pool_mode = session`).
    case pinnedByPooler
    /// A pooler in between hands server sessions out per transaction (PgBouncer `pool_mode =
    /// transaction` or `statement`): another client can be served by this client's session.
    case sharedByPooler

    /// Finds out with two connections to `configuration`, from backend process ids only.
    ///
    /// A pooler announces a backend key of its own at login (it answers cancel requests itself),
    /// so the process id libpq was given differs from `pg_backend_pid()`; PostgreSQL announces its
    /// own. Through a pooler, the first connection's session is its own only if a second
    /// connection, holding a transaction open, is served by another backend, and the first is
    /// still served by the same one afterwards. PgBouncer hands out the session released last
    /// first (unless `server_round_robin = 1`), so in transaction mode the second connection gets
    /// the first one's.
    public static func detect(_ configuration: PostgresConfiguration, logger: Logger) async throws -> ServerSession {
        try await PostgresConnection.withConnection(configuration, logger: logger) { first in
            let announced = try await first.announcedBackendPID()
            let served = try await first.servingBackendPID()
            guard announced != served else { return .direct }
            let keptItsOwn = try await PostgresConnection.withConnection(configuration, logger: logger) { second in
                try await second.execute("BEGIN")
                // The first connection is asked again while the second holds its transaction (and
                // so its session), and only if that is another session: with a pool of one session
                // it would wait for the second's transaction to end.
                let other = try await second.servingBackendPID()
                let again = other == served ? nil : try await first.servingBackendPID()
                try await second.execute("ROLLBACK")
                return again == served
            }
            return keptItsOwn ? .pinnedByPooler : .sharedByPooler
        }
    }
}

extension PostgresConnection {
    /// The backend process id in the login's BackendKeyData: PostgreSQL's own, or a pooler's.
    func announcedBackendPID() throws(PostgresError) -> Int32 {
        PQbackendPID(try liveConnection())
    }

    /// The process id of the backend that runs this statement.
    func servingBackendPID() throws(PostgresError) -> Int32 {
        guard let text = try query("SELECT pg_backend_pid()").first?.first ?? nil, let pid = Int32(text) else {
            throw PostgresError(.unexpectedResult, "pg_backend_pid() gave no process id")
        }
        return pid
    }
}

/// An error from the Postgres module, classified once from its SQLSTATE so the sink can switch
/// on ``code``: bisect a data error, take the idempotent path on a unique violation (or an error
/// the server did not name), back off and retry anything else.
///
/// ``description`` carries the code and SQLSTATE only; the server's message (which may quote a
/// row's value) is kept apart in ``serverMessage``.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case connectionFailed
        /// The connection broke (SQLSTATE class 08, server shutting down, socket error).
        case connectionLost
        /// statement_timeout or a cancel (57014).
        case timeout
        /// Deadlock, serialization failure, out of resources: retrying may help.
        case transient
        /// 23505: the row exists already.
        case uniqueViolation
        /// Class 22: a value the column type refuses.
        case dataError
        /// Class 23 other than 23505: NOT NULL, CHECK, foreign key.
        case constraintViolation
        /// Anything else the server refused (missing table, permissions, syntax).
        case serverError
        /// XX000: the server did not name the error. Citus raises every error a worker node gave
        /// during a COPY so (a unique or NOT NULL violation included): it keeps the message and
        /// drops the code. The fast path retries such rows on the idempotent path, whose INSERT
        /// Citus runs with the codes kept.
        case unnamed
        /// A result libpq should not have given.
        case unexpectedResult
        /// The task was cancelled while waiting for the server; the connection was given up.
        case cancelled
        /// A setting that cannot work (a malformed DATABASE_URL); refused before connecting.
        case invalidConfiguration
        /// TLS was required (sslmode require, verify-ca, verify-full) and the server's certificate
        /// did not verify: untrusted, expired, or issued for another name.
        case tlsCertificateRejected
        /// TLS was required and the server declined it (ssl = off).
        case tlsNotOffered
        /// The server ended the TLS session with an alert: it refuses the client's certificate.
        case tlsHandshakeFailed
    }

    public var code: Code
    public var sqlState: String?
    /// Our own short message, or the server's primary message when ``code`` is not about row data.
    public var message: String
    /// The server's text, which may contain row values: for debug logs only.
    public var serverMessage: String?
    public var file: String
    public var line: Int

    public init(
        _ code: Code, _ message: String, sqlState: String? = nil, serverMessage: String? = nil,
        file: String = #fileID, line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
        self.serverMessage = serverMessage
        self.file = file
        self.line = line
    }

    /// A value in the rows caused it: isolate those rows instead of retrying the batch.
    public var isDataError: Bool { code == .dataError || code == .constraintViolation }

    public var description: String {
        "PostgresError(\(code)\(sqlState.map { ", sqlstate \($0)" } ?? "")): \(message)"
    }

    /// Maps a SQLSTATE to a code (PostgreSQL Appendix A).
    static func code(forSQLState state: String) -> Code {
        switch state {
        case "23505": return .uniqueViolation
        case "57014": return .timeout
        case "57P01", "57P02", "57P03": return .connectionLost
        case "40001", "40P01": return .transient
        case "XX000": return .unnamed
        default: break
        }
        switch state.prefix(2) {
        case "08": return .connectionLost
        case "22": return .dataError
        case "23": return .constraintViolation
        case "53", "58": return .transient
        default: return .serverError
        }
    }
}

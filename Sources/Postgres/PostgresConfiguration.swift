import Foundation
import TelemetryRecords

/// How to reach PostgreSQL; turned into a libpq conninfo string.
public struct PostgresConfiguration: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var database: String
    public var user: String
    public var password: String?
    /// libpq `sslmode` (disable, prefer, require, verify-ca, verify-full); `nil` leaves libpq's default.
    public var sslMode: String?
    /// A full libpq URL or conninfo (`DATABASE_URL`); when set it wins over the fields above.
    public var url: String?
    /// `search_path` for the session; tests use it to give each run its own schema.
    public var searchPath: String?
    public var applicationName: String
    public var connectTimeout: Duration
    /// Bounds every statement, so a blocked libpq call always returns.
    public var statementTimeout: Duration

    public init(
        host: String = "127.0.0.1", port: Int = 5432, database: String = "adworker", user: String = "adworker",
        password: String? = nil, sslMode: String? = nil, url: String? = nil, searchPath: String? = nil,
        applicationName: String = "adworker", connectTimeout: Duration = .seconds(5), statementTimeout: Duration = .seconds(60)
    ) {
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        self.password = password
        self.sslMode = sslMode
        self.url = url
        self.searchPath = searchPath
        self.applicationName = applicationName
        self.connectTimeout = connectTimeout
        self.statementTimeout = statementTimeout
    }

    /// The conninfo string given to `PQconnectdb`; contains the password, so never log it.
    var connectionInfo: String {
        var options = "-c statement_timeout=\(statementTimeout.wholeMilliseconds)"
        if let searchPath { options += " -c search_path=\(searchPath)" }
        var parts: [(String, String)] = [
            ("connect_timeout", String(max(1, connectTimeout.components.seconds))),
            ("application_name", applicationName),
            ("options", options),
        ]
        if let url {
            // libpq accepts a URL or conninfo as `dbname`; keywords after it add to it.
            parts.insert(("dbname", url), at: 0)
        } else {
            parts.insert(contentsOf: [("host", host), ("port", String(port)), ("dbname", database), ("user", user)], at: 0)
            if let password { parts.append(("password", password)) }
            if let sslMode { parts.append(("sslmode", sslMode)) }
        }
        return parts.map { "\($0.0)='\(Self.escape($0.1))'" }.joined(separator: " ")
    }

    private static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'")
    }

    /// Never shows the password or a URL (which may carry one).
    public var description: String {
        if url != nil { return "postgres (DATABASE_URL)" }
        return "postgres://\(user)@\(host):\(port)/\(database)\(password == nil ? "" : " (password set)")"
    }
}

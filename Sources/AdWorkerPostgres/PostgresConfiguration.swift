import AdTelemetryRecords
internal import CAdWorkerLibPQ
import Foundation

/// How to reach PostgreSQL; turned into libpq connection parameters.
public struct PostgresConfiguration: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var database: String
    public var user: String
    public var password: String?
    /// libpq `sslmode` (disable, prefer, require, verify-ca, verify-full); `nil` leaves libpq's default.
    public var sslMode: String?
    /// libpq `sslrootcert`: the CA certificates that sign the server's (verify-ca, verify-full).
    public var sslRootCertificate: String?
    /// libpq `sslcert` and `sslkey`: a client certificate and its key, for a server that asks for
    /// one (`clientcert=verify-full`, or `cert` authentication, where it is the login).
    public var sslCertificate: String?
    public var sslKey: String?
    /// A libpq URL or conninfo string (`DATABASE_URL`). When set it is the base, and only the
    /// fields named in ``urlOverrides`` (explicit flags) and a ``password`` the URL lacks apply on top.
    public var url: String?
    /// Fields that override the URL's: the ones given as flags.
    public var urlOverrides: Set<Field> = []
    /// `search_path` for every transaction; tests use it to give each run its own schema.
    public var searchPath: String?
    public var applicationName: String
    public var connectTimeout: Duration
    /// Bounds every statement on the server, so a slow statement always ends with an error.
    public var statementTimeout: Duration
    /// How long the client waits for any reply before it gives the connection up: the bound for a
    /// server that vanished without closing the socket (no RST), where libpq would wait for TCP's
    /// keepalive, about two hours. Longer than ``statementTimeout``, which ends every healthy wait.
    public var replyTimeout: Duration

    public enum Field: Sendable, Hashable {
        case host, port, database, user
    }

    public init(
        host: String = "127.0.0.1", port: Int = 5432, database: String = "adworker", user: String = "adworker",
        password: String? = nil, sslMode: String? = nil, url: String? = nil, searchPath: String? = nil,
        applicationName: String = "adworker", connectTimeout: Duration = .seconds(5), statementTimeout: Duration = .seconds(60),
        replyTimeout: Duration? = nil
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
        self.replyTimeout = replyTimeout ?? statementTimeout + .seconds(5)
    }

    /// What a URL carries, checked by libpq's own parser (a malformed URL is refused before any
    /// connection attempt, with the part at fault named but not quoted: see ``ConnectionStringFault``).
    public struct URLContents: Sendable, Equatable {
        public var hasPassword: Bool
        public var hasHost: Bool
    }

    public static func inspect(url: String) throws(PostgresError) -> URLContents {
        guard let options = libpqOptions(url) else {
            throw PostgresError(.invalidConfiguration, ConnectionStringFault.refusal(of: url, keywords: keywords).description)
        }
        var values: [String: String] = [:]
        for case (let keyword, let value?) in options where !value.isEmpty { values[keyword] = value }
        if let fault = ConnectionStringFault.mangledCredentials(in: url, host: values["host"], port: values["port"]) {
            throw PostgresError(.invalidConfiguration, fault.description)
        }
        return URLContents(hasPassword: values["password"] != nil, hasHost: values["host"] != nil || values["hostaddr"] != nil)
    }

    /// libpq's reading of a URL or conninfo string: every keyword it knows, with the value given
    /// for it; nil when libpq refuses the text. Its reason is not asked for: it can quote the password.
    static func libpqOptions(_ text: String) -> [(keyword: String, value: String?)]? {
        guard let options = PQconninfoParse(text, nil) else { return nil }
        defer { PQconninfoFree(options) }
        var result: [(keyword: String, value: String?)] = []
        var option = options
        while let keyword = option.pointee.keyword {
            result.append((String(cString: keyword), option.pointee.val.map { String(cString: $0) }))
            option += 1
        }
        return result
    }

    /// libpq's connection option keywords: those of an empty conninfo string, which libpq parses
    /// without reading the environment or any file.
    static let keywords = Set(libpqOptions("")?.map(\.keyword) ?? [])

    /// The session settings, as the first statements of every transaction: no startup `options`,
    /// which PgBouncer refuses (08P01) and a pooler in transaction mode could not keep for a
    /// session anyway, and nothing the next transaction relies on.
    /// - Important: The XACK after a commit is an action outside the database that relies on the
    ///   commit, so every transaction commits synchronously whatever the server's default
    ///   (`synchronous_commit = off` would acknowledge entries whose rows a crash can still lose).
    var transactionSettings: String {
        var settings = "SET LOCAL statement_timeout = \(statementTimeout.wholeMilliseconds); SET LOCAL synchronous_commit = on; "
        // A client that went away mid-statement (a reply overdue, a shutdown) is noticed by the
        // server within a second, not when the statement ends.
        settings += "SET LOCAL client_connection_check_interval = 1000; "
        if let searchPath { settings += "SET LOCAL search_path = \(searchPath); " }
        return settings
    }

    /// Keyword/value pairs for `PQconnectdbParams` with `expand_dbname`: a URL goes first as
    /// `dbname` (libpq expands it), and later pairs override what it says. Contains the password:
    /// never log it.
    var connectionParameters: [(String, String)] {
        var parameters: [(String, String)] = []
        let fields: Set<Field>
        if let url {
            parameters.append(("dbname", url))
            fields = urlOverrides
            if let password, (try? Self.inspect(url: url).hasPassword) != true { parameters.append(("password", password)) }
        } else {
            fields = [.host, .port, .database, .user]
            if let password { parameters.append(("password", password)) }
        }
        if fields.contains(.host) { parameters.append(("host", host)) }
        if fields.contains(.port) { parameters.append(("port", String(port))) }
        if fields.contains(.database) { parameters.append(("dbname", database)) }
        if fields.contains(.user) { parameters.append(("user", user)) }
        if let sslMode { parameters.append(("sslmode", sslMode)) }
        if let sslRootCertificate { parameters.append(("sslrootcert", sslRootCertificate)) }
        if let sslCertificate { parameters.append(("sslcert", sslCertificate)) }
        if let sslKey { parameters.append(("sslkey", sslKey)) }
        parameters += [
            ("connect_timeout", String(max(1, connectTimeout.components.seconds))),
            ("application_name", applicationName),
            // A peer that disappears is noticed by the kernel: idle connections through keepalives,
            // unacknowledged writes through the user timeout. Replies are bounded by replyTimeout.
            ("keepalives", "1"),
            ("keepalives_idle", "10"),
            ("keepalives_interval", "5"),
            ("keepalives_count", "3"),
            ("tcp_user_timeout", String(max(1000, replyTimeout.wholeMilliseconds))),
        ]
        return parameters
    }

    /// Never shows the password or a URL (which may carry one).
    public var description: String {
        if url != nil { return "postgres (DATABASE_URL)" }
        return "postgres://\(user)@\(host):\(port)/\(database)\(password == nil ? "" : " (password set)")"
    }
}

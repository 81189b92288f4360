internal import CLibPQ
internal import ConnectionThread
public import Logging

#if canImport(Glibc)
import Glibc
#endif

/// One libpq connection, confined to its own thread.
///
/// - Important: The actor's executor is a dedicated ``ThreadExecutor``, so every isolated method
///   (and every blocking libpq call in it) runs on the connection's thread, never on Swift's
///   cooperative pool. The `PGconn` pointer never leaves this actor. A transaction is one
///   synchronous closure on that thread: no suspension point can interleave other work into it.
///
/// After the connection breaks, the next call reconnects; callers own the backoff.
public actor PostgresConnection {
    public let configuration: PostgresConfiguration
    let logger: Logger
    private let executor: ThreadExecutor
    private var connection: OpaquePointer?

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    private init(configuration: PostgresConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.executor = ThreadExecutor(name: "postgres \(configuration.host):\(configuration.port)")
    }

    /// Opens a connection, runs `body` with it, and closes it (and its thread) however `body` ends.
    /// - Parameters:
    ///   - configuration: Where and how to connect.
    ///   - logger: Receives connection lifecycle messages.
    ///   - connectImmediately: Connect before `body` runs and throw if that fails; with `false` the
    ///     first command connects, so a long-running caller can retry with its own backoff.
    ///   - body: Uses the connection; it must not escape.
    public static func withConnection<Result>(
        _ configuration: PostgresConfiguration, logger: Logger, connectImmediately: Bool = true,
        _ body: (PostgresConnection) async throws -> sending Result
    ) async throws -> sending Result {
        let connection = PostgresConnection(configuration: configuration, logger: logger)
        do {
            if connectImmediately {
                try await connection.connect()
            }
            let result = try await body(connection)
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }

    private func connect() throws(PostgresError) {
        if let connection {
            PQfinish(connection)
            self.connection = nil
        }
        guard let newConnection = PQconnectdb(configuration.connectionInfo) else {
            throw PostgresError(.connectionFailed, "libpq could not allocate a connection")
        }
        guard PQstatus(newConnection) == CONNECTION_OK else {
            let message = Self.errorMessage(newConnection)
            PQfinish(newConnection)
            throw PostgresError(.connectionFailed, "\(configuration): \(message)")
        }
        // Notices ("relation exists, skipping") would go to stderr; the caller logs what matters.
        PQsetNoticeProcessor(newConnection, { _, _ in }, nil)
        connection = newConnection
        logger.debug("postgres connected", metadata: ["postgres": "\(configuration)"])
    }

    private func close() {
        if let connection {
            PQfinish(connection)
            self.connection = nil
        }
        executor.shutdown()
    }

    /// The live connection, reconnecting first if the last one broke.
    private func liveConnection() throws(PostgresError) -> OpaquePointer {
        if let connection, PQstatus(connection) == CONNECTION_OK {
            return connection
        }
        try connect()
        guard let connection else { throw PostgresError(.connectionFailed, "no connection") }
        return connection
    }

    /// Runs one or more statements without parameters. - Returns: rows affected by the last one.
    @discardableResult
    public func execute(_ sql: String) throws(PostgresError) -> Int {
        let connection = try liveConnection()
        let result = PQexec(connection, sql)
        defer { PQclear(result) }
        try check(result, connection: connection)
        return Int(String(cString: PQcmdTuples(result))) ?? 0
    }

    /// Runs a query with text parameters (`$1`, `$2`, …; `nil` is SQL NULL) and returns every row
    /// as text. For small results: migrations, stats, tests.
    public func query(_ sql: String, _ parameters: [String?] = []) throws(PostgresError) -> [[String?]] {
        let connection = try liveConnection()
        var cStrings: [UnsafeMutablePointer<CChar>?] = parameters.map { $0.flatMap { strdup($0) } }
        defer { cStrings.forEach { free($0) } }
        let result = cStrings.withUnsafeMutableBufferPointer { buffer in
            buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { values in
                PQexecParams(connection, sql, Int32(parameters.count), nil, values.baseAddress, nil, nil, 0)
            }
        }
        defer { PQclear(result) }
        try check(result, connection: connection)
        let rowCount = PQntuples(result)
        let columnCount = PQnfields(result)
        var rows: [[String?]] = []
        rows.reserveCapacity(Int(rowCount))
        for row in 0..<rowCount {
            var values: [String?] = []
            for column in 0..<columnCount {
                values.append(PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column)))
            }
            rows.append(values)
        }
        return rows
    }

    /// Runs `body` inside BEGIN … COMMIT on the connection's thread; rolls back if it throws.
    public func transaction<Result>(
        _ body: (isolated PostgresConnection) throws(PostgresError) -> Result
    ) throws(PostgresError) -> Result {
        try execute("BEGIN")
        do {
            let result = try body(self)
            try execute("COMMIT")
            return result
        } catch {
            if let connection, PQstatus(connection) == CONNECTION_OK {
                PQclear(PQexec(connection, "ROLLBACK"))
            }
            throw error
        }
    }

    /// `COPY … FROM STDIN` with `chunks` as the data, sent in order without joining them.
    /// A failure ends the COPY with CopyFail so the connection stays usable.
    /// - Returns: rows copied.
    public func copy(_ copyStatement: String, chunks: [ArraySlice<UInt8>]) throws(PostgresError) -> Int {
        let connection = try liveConnection()
        let start = PQexec(connection, copyStatement)
        guard PQresultStatus(start) == PGRES_COPY_IN else {
            defer { PQclear(start) }
            try check(start, connection: connection)
            throw PostgresError(.unexpectedResult, "COPY did not enter COPY IN state")
        }
        PQclear(start)
        for chunk in chunks where !chunk.isEmpty {
            let sent = chunk.withUnsafeBytes { bytes in
                PQputCopyData(connection, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(bytes.count))
            }
            if sent != 1 {
                throw lostConnection(connection, "sending COPY data")
            }
        }
        guard PQputCopyEnd(connection, nil) == 1 else {
            throw lostConnection(connection, "ending COPY")
        }
        var rows = 0
        var firstError: PostgresError?
        // libpq requires reading results until it returns NULL before the next command.
        while let result = PQgetResult(connection) {
            defer { PQclear(result) }
            do {
                try check(result, connection: connection)
                rows += Int(String(cString: PQcmdTuples(result))) ?? 0
            } catch {
                firstError = firstError ?? error
            }
        }
        if let firstError { throw firstError }
        return rows
    }

    private func check(_ result: OpaquePointer?, connection: OpaquePointer) throws(PostgresError) {
        guard let result else {
            throw lostConnection(connection, "no result")
        }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_COPY_IN, PGRES_EMPTY_QUERY:
            return
        default:
            // PG_DIAG_SQLSTATE and PG_DIAG_MESSAGE_PRIMARY are char-literal macros Swift does not import.
            let sqlState = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let primary = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) } ?? Self.errorMessage(connection)
            guard let sqlState else {
                throw lostConnection(connection, primary)
            }
            let code = PostgresError.code(forSQLState: sqlState)
            let isAboutRowData = code == .dataError || code == .constraintViolation || code == .uniqueViolation
            throw PostgresError(
                code, isAboutRowData ? "the server refused a value" : primary, sqlState: sqlState, serverMessage: primary
            )
        }
    }

    private func lostConnection(_ connection: OpaquePointer, _ context: String) -> PostgresError {
        let message = Self.errorMessage(connection)
        if PQstatus(connection) != CONNECTION_OK {
            PQfinish(connection)
            self.connection = nil
            logger.warning("postgres connection lost", metadata: ["error": "\(message)"])
        }
        return PostgresError(.connectionLost, "\(context): \(message)")
    }

    private static func errorMessage(_ connection: OpaquePointer) -> String {
        guard let message = PQerrorMessage(connection) else { return "" }
        return String(cString: message).trimmingTrailingNewlines()
    }
}

extension String {
    fileprivate func trimmingTrailingNewlines() -> String {
        var result = self
        while result.last == "\n" { result.removeLast() }
        return result
    }
}

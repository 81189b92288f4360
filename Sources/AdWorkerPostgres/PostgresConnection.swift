import AdTelemetryRecords
package import AdWorkerConnectionThread
internal import CAdWorkerLibPQ
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
        self.executor = ThreadExecutor(name: "pg \(configuration.port) \(configuration.host)")
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
        try await PostgresConnection(configuration: configuration, logger: logger).withinScope(connectImmediately: connectImmediately, body)
    }

    package func connect() throws(PostgresError) {
        if let connection {
            PQfinish(connection)
            self.connection = nil
        }
        let newConnection = try startConnecting()
        // libpq keeps a failed login's SQLSTATE to itself (no result carries it); in verbose
        // mode it prints the ErrorResponse's code field right after the severity, which is where
        // ``connectionSQLState(in:)`` takes it from. Back to the default once connected.
        PQsetErrorVerbosity(newConnection, PQERRORS_VERBOSE)
        // Connecting step by step, so the wait is bounded by connectTimeout (PQconnectPoll does
        // not honour connect_timeout) and cancellation stops it.
        let deadline = ContinuousClock.now + configuration.connectTimeout
        var step = PQstatus(newConnection) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING
        while step != PGRES_POLLING_OK && step != PGRES_POLLING_FAILED {
            let ready: Bool
            do {
                ready = try waitForSocket(newConnection, events: step == PGRES_POLLING_READING ? Int16(POLLIN) : Int16(POLLOUT), deadline: deadline)
            } catch {
                PQfinish(newConnection)
                throw error
            }
            guard ready else {
                PQfinish(newConnection)
                throw PostgresError(.connectionFailed, "\(configuration): no answer within \(configuration.connectTimeout)")
            }
            step = PQconnectPoll(newConnection)
        }
        guard PQstatus(newConnection) == CONNECTION_OK else {
            let message = Self.errorMessage(newConnection)
            let sqlState = Self.connectionSQLState(in: message)
            // A server's refusal of the login carries a SQLSTATE; a TLS refusal comes before it.
            let refusal = sqlState == nil ? Self.tlsRefusal(of: newConnection, within: min(configuration.connectTimeout, .seconds(2))) : nil
            PQfinish(newConnection)
            throw refusal ?? PostgresError(.connectionFailed, "\(configuration): \(message)", sqlState: sqlState)
        }
        PQsetErrorVerbosity(newConnection, PQERRORS_DEFAULT)
        // Non-blocking, so that every wait for the server goes through waitUntil(_:deadline:),
        // which bounds it and notices cancellation; libpq's own waits have no bound.
        PQsetnonblocking(newConnection, 1)
        // Notices ("relation exists, skipping") would go to stderr; the caller logs what matters.
        PQsetNoticeProcessor(newConnection, { _, _ in }, nil)
        connection = newConnection
        logger.debug("postgres connected", metadata: ["postgres": "\(configuration)"])
    }

    /// Starts a non-blocking connection attempt from the configuration's keywords and values.
    private func startConnecting() throws(PostgresError) -> OpaquePointer {
        let parameters = configuration.connectionParameters
        var keywords: [UnsafeMutablePointer<CChar>?] = parameters.map { strdup($0.0) } + [nil]
        var values: [UnsafeMutablePointer<CChar>?] = parameters.map { strdup($0.1) } + [nil]
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        let started = keywords.withUnsafeMutableBufferPointer { keywords in
            values.withUnsafeMutableBufferPointer { values in
                keywords.withMemoryRebound(to: UnsafePointer<CChar>?.self) { keywords in
                    values.withMemoryRebound(to: UnsafePointer<CChar>?.self) { values in
                        // expand_dbname 1: a DATABASE_URL passed as the first dbname is a URL, not a name.
                        PQconnectStartParams(keywords.baseAddress, values.baseAddress, 1)
                    }
                }
            }
        }
        guard let started else {
            throw PostgresError(.connectionFailed, "libpq could not allocate a connection")
        }
        return started
    }

    package func close() {
        if let connection {
            PQfinish(connection)
            self.connection = nil
        }
        executor.shutdown()
    }

    /// The live connection, reconnecting first if the last one broke.
    func liveConnection() throws(PostgresError) -> OpaquePointer {
        if let connection, PQstatus(connection) == CONNECTION_OK {
            return connection
        }
        try connect()
        guard let connection else { throw PostgresError(.connectionFailed, "no connection") }
        return connection
    }

    /// Runs one or more statements without parameters; outside ``transaction(_:)`` they are one
    /// transaction of their own. - Returns: rows affected by the last one.
    /// - Parameter callCommitting: `sql` is a `CALL` of a procedure that commits as it goes, which
    ///   PostgreSQL allows only as a statement of its own: sent without the settings (the server's
    ///   statement timeout applies), its reply awaited for up to an hour.
    @discardableResult
    public func execute(_ sql: String, callCommitting: Bool = false) throws(PostgresError) -> Int {
        let connection = try liveConnection()
        let deadline = callCommitting ? .now + .seconds(3600) : replyDeadline()
        let settings = callCommitting ? "" : settingsUnlessInTransaction(connection)
        guard PQsendQuery(connection, settings + sql) == 1 else { throw lostConnection(connection, "sending a statement") }
        let result = try lastResult(connection, deadline: deadline)
        defer { PQclear(result) }
        try check(result, connection: connection)
        return Int(String(cString: PQcmdTuples(result))) ?? 0
    }

    /// Runs a query with text parameters (`$1`, `$2`, …; `nil` is SQL NULL) and returns every row
    /// as text. For small results: migrations, stats, tests.
    public func query(_ sql: String, _ parameters: [String?] = []) throws(PostgresError) -> [[String?]] {
        let connection = try liveConnection()
        // One statement of the extended protocol has no room for the settings in front of it.
        if settingsUnlessInTransaction(connection) != "" {
            return try transaction { connection throws(PostgresError) in try connection.query(sql, parameters) }
        }
        let deadline = replyDeadline()
        var cStrings: [UnsafeMutablePointer<CChar>?] = parameters.map { $0.flatMap { strdup($0) } }
        defer { cStrings.forEach { free($0) } }
        let sent = cStrings.withUnsafeMutableBufferPointer { buffer in
            buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { values in
                PQsendQueryParams(connection, sql, Int32(parameters.count), nil, values.baseAddress, nil, nil, 0)
            }
        }
        guard sent == 1 else { throw lostConnection(connection, "sending a query") }
        let result = try lastResult(connection, deadline: deadline)
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
    /// BEGIN goes in one round trip with the settings (``execute(_:)``).
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
                _ = try? execute("ROLLBACK")
            }
            throw error
        }
    }

    /// `COPY … FROM STDIN` with `chunks` as the data, sent in order without joining them; outside
    /// ``transaction(_:)`` it is a transaction of its own, its settings sent with it.
    /// `copyStatement` may start with other statements. A server error (a refused row) leaves the connection usable; a transport failure, a reply
    /// overdue or cancellation drops it, and the server rolls the COPY back.
    /// - Returns: rows copied.
    public func copy(_ copyStatement: String, chunks: [ArraySlice<UInt8>]) throws(PostgresError) -> Int {
        let connection = try liveConnection()
        let deadline = replyDeadline()
        guard PQsendQuery(connection, settingsUnlessInTransaction(connection) + copyStatement) == 1 else { throw lostConnection(connection, "sending COPY") }
        let start = try lastResult(connection, deadline: deadline)
        guard PQresultStatus(start) == PGRES_COPY_IN else {
            // The statement failed before any data (a missing table, say).
            defer { PQclear(start) }
            try check(start, connection: connection)
            throw PostgresError(.unexpectedResult, "COPY did not enter COPY IN state")
        }
        PQclear(start)
        for chunk in chunks where !chunk.isEmpty {
            // Non-blocking: 0 means libpq's buffer is full until some of it is written.
            var sent: Int32 = 0
            repeat {
                sent = chunk.withUnsafeBytes { bytes in
                    PQputCopyData(connection, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(bytes.count))
                }
                if sent == 0 { try flush(connection, deadline: deadline) }
            } while sent == 0
            guard sent == 1 else { throw lostConnection(connection, "sending COPY data") }
        }
        var ended = PQputCopyEnd(connection, nil)
        while ended == 0 {
            try flush(connection, deadline: deadline)
            ended = PQputCopyEnd(connection, nil)
        }
        guard ended == 1 else { throw lostConnection(connection, "ending COPY") }
        try flush(connection, deadline: deadline)
        var rows = 0
        var firstError: PostgresError?
        // libpq requires reading results until it returns NULL before the next command.
        while true {
            try waitUntil({ PQisBusy(connection) == 0 }, connection, deadline: deadline)
            guard let result = PQgetResult(connection) else { break }
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

    /// The settings every transaction starts with, when `connection` is between transactions: a
    /// simple query's statements are one transaction, so `SET LOCAL` in front holds for all of them.
    private func settingsUnlessInTransaction(_ connection: OpaquePointer) -> String {
        PQtransactionStatus(connection) == PQTRANS_IDLE ? configuration.transactionSettings : ""
    }

    // MARK: Bounded waits

    private func replyDeadline() -> ContinuousClock.Instant { .now + configuration.replyTimeout }

    /// Every result of the statement just sent; returns the last (an error one if any failed), as
    /// PQexec would, but without waiting past `deadline`.
    private func lastResult(_ connection: OpaquePointer, deadline: ContinuousClock.Instant) throws(PostgresError) -> OpaquePointer? {
        try flush(connection, deadline: deadline)
        var last: OpaquePointer?
        while true {
            try waitUntil({ PQisBusy(connection) == 0 }, connection, deadline: deadline)
            guard let result = PQgetResult(connection) else { break }
            let failed = PQresultStatus(result) == PGRES_FATAL_ERROR
            if let previous = last, PQresultStatus(previous) == PGRES_FATAL_ERROR, !failed {
                PQclear(result)
            } else {
                if let previous = last { PQclear(previous) }
                last = result
            }
            // COPY IN waits for data: the caller continues from here.
            if PQresultStatus(result) == PGRES_COPY_IN { break }
        }
        return last
    }

    /// Writes what libpq has buffered, waiting at most until `deadline`.
    private func flush(_ connection: OpaquePointer, deadline: ContinuousClock.Instant) throws(PostgresError) {
        try waitUntil(
            { () throws(PostgresError) -> Bool in
                switch PQflush(connection) {
                case 0: return true
                case 1: return false
                default: throw lostConnection(connection, "sending")
                }
            }, connection, deadline: deadline, writing: true)
    }

    /// Polls the socket until `done` holds, reading what arrives. Gives the connection up when
    /// `deadline` passes (the server vanished without closing the socket) or the task is cancelled
    /// (a shutdown whose budget ran out): the server then rolls back whatever was in progress.
    private func waitUntil(
        _ done: () throws(PostgresError) -> Bool, _ connection: OpaquePointer, deadline: ContinuousClock.Instant, writing: Bool = false
    ) throws(PostgresError) {
        while try !done() {
            let ready: Bool
            do {
                ready = try waitForSocket(connection, events: Int16(POLLIN) | (writing ? Int16(POLLOUT) : 0), deadline: deadline)
            } catch {
                abandon(connection)
                throw error
            }
            guard ready else {
                abandon(connection)
                logger.error(
                    "postgres did not answer in time; connection given up",
                    metadata: ["timeout": "\(configuration.replyTimeout)", "postgres": "\(configuration)"]
                )
                throw PostgresError(.timeout, "no reply from the server within \(configuration.replyTimeout)")
            }
            if PQconsumeInput(connection) != 1 { throw lostConnection(connection, "reading from the server") }
        }
    }

    /// Waits until the socket is ready for `events` (true) or `deadline` passes (false), in short
    /// slices so that cancellation is noticed promptly; throws ``PostgresError/Code/cancelled``.
    private func waitForSocket(_ connection: OpaquePointer, events: Int16, deadline: ContinuousClock.Instant) throws(PostgresError) -> Bool {
        while true {
            if Task.isCancelled { throw PostgresError(.cancelled, "cancelled while waiting for the server") }
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else { return false }
            let slice = Int32(min(remaining, .milliseconds(100)).wholeMilliseconds) + 1
            // The socket can change while connecting (another address of the host): read it each time.
            var descriptor = pollfd(fd: PQsocket(connection), events: events, revents: 0)
            let ready = poll(&descriptor, 1, slice)
            if ready > 0 { return true }
            if ready < 0 && errno != EINTR { return true }
        }
    }

    /// Drops a connection mid-statement. No PQcancel: it opens a connection of its own and waits
    /// on it without a bound, so against a server that stopped answering it would hang just the
    /// same. The transaction's `client_connection_check_interval` makes the server notice the closed
    /// socket within a second and stop the statement (rolling back a COPY or a transaction).
    private func abandon(_ connection: OpaquePointer) {
        PQfinish(connection)
        if self.connection == connection { self.connection = nil }
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
        if self.connection == connection {
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

extension PostgresConnection: ScopedConnection {}

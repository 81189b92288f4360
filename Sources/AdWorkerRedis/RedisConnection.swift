import AdTelemetryRecords
package import AdWorkerConnectionThread
internal import CAdWorkerHiredis
internal import CAdWorkerRedisArena
internal import CAdWorkerRedisTransport
internal import CAdWorkerTLS
public import Logging
#if canImport(Glibc)
import Glibc
#endif

/// One hiredis connection, confined to its own thread.
///
/// - Important: The actor's executor is a dedicated ``ThreadExecutor``: every isolated method runs
///   on the connection's thread, so blocking hiredis calls never occupy Swift's cooperative pool,
///   and the `redisContext` pointer never leaves this actor.
///
/// After a broken connection the next command reconnects (hiredis keeps a context's error
/// forever, so a fresh context is the only way back); callers own the backoff.
public actor RedisConnection {
    public let configuration: RedisConfiguration
    let logger: Logger
    private let executor: ThreadExecutor
    /// The hiredis context and, over TLS, its OpenSSL session (an `adw_link`); nil until connected.
    var link: OpaquePointer?
    /// Made at the first TLS connection and kept: loading the CA and the client certificate is
    /// the costly part, and a node asked once (ASK) or a cluster probe reuses it.
    var tlsContext: TLSClientContext?
    /// Where large replies (XREADGROUP) are parsed: reused, so reading entries allocates no
    /// per-field reply objects.
    // nonisolated(unsafe) only so that deinit may free it; every other use is on the actor.
    private nonisolated(unsafe) let arena: UnsafeMutablePointer<adw_arena>
    /// Cluster mode: the primary serving ``RedisConfiguration/routingSlot`` as last learned;
    /// Sentinel mode: the primary the sentinels named. Nil until asked (and after a lost
    /// connection, so a failover is noticed).
    var discoveredNode: RedisNodeAddress?
    /// Cluster mode: every node of the last slot map, asked (before the seeds) for the next one.
    var knownNodes: [RedisNodeAddress] = []
    /// Cluster mode: redirects (MOVED, ASK) followed so far. A WAIT covers only the writes sent on
    /// its own link, so a pipeline that was redirected part way cannot count on its WAIT.
    var redirectsFollowed = 0

    /// Commands written ahead of the replies being read in a long pipeline.
    static let pipelineChunk = 256

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    /// The connection's thread, for a task that mostly talks to this connection to run on.
    public nonisolated var taskExecutor: any TaskExecutor { executor }

    private init(configuration: RedisConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.executor = ThreadExecutor(name: "redis \(configuration.port) \(configuration.host)")
        self.arena = .allocate(capacity: 1)
        arena.initialize(to: adw_arena())
    }

    deinit {
        adw_arena_free(arena)
        arena.deallocate()
    }

    /// Opens a connection, runs `body` with it, and closes it (and its thread) however `body` ends.
    /// - Parameters:
    ///   - configuration: Where and how to connect.
    ///   - logger: Receives connection lifecycle messages.
    ///   - connectImmediately: Connect before `body` runs and throw if that fails; with `false` the
    ///     first command connects, so a long-running caller can retry with its own backoff.
    ///   - body: Uses the connection; it must not escape.
    public static func withConnection<Result>(
        _ configuration: RedisConfiguration, logger: Logger, connectImmediately: Bool = true,
        _ body: (RedisConnection) async throws -> sending Result
    ) async throws -> sending Result {
        try await RedisConnection(configuration: configuration, logger: logger).withinScope(connectImmediately: connectImmediately, body)
    }

    /// ``withConnection(_:logger:connectImmediately:_:)`` for several at once, one per
    /// configuration (each on its own thread), passed to `body` in the same order.
    public static func withConnections<Result>(
        _ configurations: [RedisConfiguration], logger: Logger, connectImmediately: Bool = true,
        _ body: ([RedisConnection]) async throws -> sending Result
    ) async throws -> sending Result {
        func open(_ connections: [RedisConnection]) async throws -> sending Result {
            guard connections.count < configurations.count else { return try await body(connections) }
            return try await withConnection(configurations[connections.count], logger: logger, connectImmediately: connectImmediately) {
                try await open(connections + [$0])
            }
        }
        return try await open([])
    }

    package func connect() throws(RedisError) {
        if let link {
            adw_link_free(link)
            self.link = nil
        }
        var target = RedisNodeAddress(host: configuration.host, port: configuration.port)
        if configuration.isCluster {
            if discoveredNode == nil { discoveredNode = try discoverNode() }
            target = discoveredNode!
        } else if configuration.sentinel != nil {
            if discoveredNode == nil { discoveredNode = try askSentinels() }
            target = discoveredNode!
        }
        do {
            link = try open(target)
        } catch {
            // The node is gone (a failed primary, say): ask the cluster or the sentinels again next time.
            discoveredNode = nil
            throw error
        }
        logger.debug("redis connected", metadata: ["redis": "\(configuration)", "node": "\(target)"])
    }

    package func close() {
        if let link {
            adw_link_free(link)
            self.link = nil
        }
        executor.shutdown()
    }

    /// Sends one command and returns its reply; error replies come back as `.error`, not thrown.
    public func send(_ command: RedisCommand) throws(RedisError) -> RedisValue {
        try pipeline([command])[0]
    }

    /// Sends all commands in one write and reads all replies: one round trip for the lot.
    public func pipeline(_ commands: [RedisCommand]) throws(RedisError) -> [RedisValue] {
        try pipeline(commands, asUnit: false) { reply throws(RedisError) in RedisValue(reply) }
    }

    /// Like ``pipeline(_:)`` but hands each raw reply to `decode` on the connection's thread,
    /// so large replies (XREADGROUP) are decoded once, straight from hiredis's memory.
    /// - Parameter asUnit: The commands are one MULTI…EXEC: on a cluster, a redirect of any of them
    ///   resends them all (Redis discarded the transaction); otherwise only redirected ones go again.
    func pipeline<Decoded>(
        _ commands: [RedisCommand], asUnit: Bool = false, decode: (UnsafePointer<redisReply>) throws(RedisError) -> Decoded
    ) throws(RedisError) -> [Decoded] {
        try ensureConnected()
        if configuration.sentinel != nil { return try exchangeWithPrimary(commands, decode: decode) }
        guard configuration.isCluster else { return try exchange(commands, on: link!, decode: decode) }
        return try exchangeFollowingRedirects(commands, asUnit: asUnit, decode: decode)
    }

    /// Sends one command and parses its reply into the connection's arena; `decode` reads it there.
    func arenaExchange<Decoded>(
        _ command: RedisCommand, decode: (inout ArenaReply) throws(RedisError) -> Decoded
    ) throws(RedisError) -> Decoded {
        var redirects = RedirectStateMachine<Void>(commandCount: 1, asUnit: false)
        while true {
            let target: OpaquePointer
            switch redirects.target {
            case .asking(let node):
                target = try open(node)
                _ = try exchange([RedisCommand("ASKING")], on: target) { _ throws(RedisError) in () }
            case .slotOwner:
                try ensureConnected()
                target = link!
            }
            // A failure frees `target` itself (dropBrokenContext).
            try arenaRoundTrip(command, on: target)
            // The reply is in the arena now: a node asked once is done with.
            if case .asking = redirects.target { adw_link_free(target) }
            var reply = ArenaReply(arena.pointee)
            if configuration.sentinel != nil && Self.isReadOnlyReply(reply) { forgetDemotedPrimary() }
            let redirect = configuration.isCluster ? Self.redirect(in: reply, host: currentHost) : nil
            switch redirects.received([redirect.map { .redirect($0, nil) } ?? .reply(())]) {
            case .finished: return try decode(&reply)
            case .failed(let error): throw error
            case .move(let node): retarget(to: node)
            case .send: continue
            }
        }
    }

    private func arenaRoundTrip(_ command: RedisCommand, on link: OpaquePointer) throws(RedisError) {
        append(command, to: link)
        try writeOut(link)
        adw_arena_reset(arena)
        let deadline = replyDeadline()
        var complete: Int32 = 0
        while true {
            guard adw_arena_reply_from_reader(adw_link_context(link), arena, &complete) == REDIS_OK else { throw dropBrokenContext(link) }
            if complete != 0 { break }
            try readMore(link, deadline: deadline)
        }
    }

    func ensureConnected() throws(RedisError) {
        if link == nil {
            try connect()
        }
    }

    func roundTrip(_ commands: [RedisCommand], on link: OpaquePointer) throws(RedisError) -> [RedisValue] {
        try exchange(commands, on: link) { reply throws(RedisError) in RedisValue(reply) }
    }

    /// Writes what has been appended, all of it (the socket blocks, bounded by the command timeout).
    private func writeOut(_ link: OpaquePointer) throws(RedisError) {
        var done: Int32 = 0
        repeat {
            guard adw_link_write(link, &done) == REDIS_OK else { throw dropBrokenContext(link) }
        } while done == 0
    }

    func exchange<Decoded>(
        _ commands: [RedisCommand], on link: OpaquePointer,
        decode: (UnsafePointer<redisReply>) throws(RedisError) -> Decoded
    ) throws(RedisError) -> [Decoded] {
        var results: [Decoded] = []
        results.reserveCapacity(commands.count)
        var firstDecodeError: RedisError?
        var appended = 0
        var read = 0
        // Long pipelines go out in chunks, one chunk ahead of the replies being read, so Redis
        // works on the next chunk while this thread decodes the replies to the previous one.
        func appendNextChunk() throws(RedisError) {
            let end = min(appended + Self.pipelineChunk, commands.count)
            for index in appended..<end {
                append(commands[index], to: link)
            }
            appended = end
            try writeOut(link)
        }
        try appendNextChunk()
        while read < commands.count {
            let readEnd = appended
            if appended < commands.count {
                try appendNextChunk()
            }
            let deadline = replyDeadline()
            while read < readEnd {
                var reply: UnsafeMutableRawPointer?
                while reply == nil {
                    guard redisGetReplyFromReader(Self.hiredisContext(link), &reply) == REDIS_OK else { throw dropBrokenContext(link) }
                    if reply == nil { try readMore(link, deadline: deadline) }
                }
                guard let raw = reply else { throw dropBrokenContext(link) }
                defer { freeReplyObject(raw) }
                read += 1
                // Read every reply even if one does not decode, so the connection stays in step.
                do {
                    results.append(try decode(raw.assumingMemoryBound(to: redisReply.self)))
                } catch {
                    firstDecodeError = firstDecodeError ?? error
                }
            }
        }
        if let firstDecodeError { throw firstDecodeError }
        return results
    }

    private func replyDeadline() -> ContinuousClock.Instant { .now + configuration.commandTimeout }

    /// Waits until the socket has data and reads it into hiredis's reader. The wait is polled in
    /// 100 ms slices, so cancellation (a shutdown whose budget ran out) is noticed at once, and it
    /// ends at `deadline` (the command timeout): a server that stopped answering with the socket
    /// open costs at most that, never TCP's two hours. Either way the connection is given up.
    private func readMore(_ link: OpaquePointer, deadline: ContinuousClock.Instant) throws(RedisError) {
        // Over TLS the session may hold decrypted bytes the socket no longer shows as readable.
        while adw_link_has_buffered_input(link) == 0 {
            if Task.isCancelled {
                forget(link)
                throw RedisError(.cancelled, "cancelled while waiting for a reply")
            }
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else {
                forget(link)
                logger.warning("redis did not answer in time; connection given up", metadata: ["timeout": "\(configuration.commandTimeout)"])
                throw RedisError(.timeout, "no reply within \(configuration.commandTimeout)")
            }
            var descriptor = pollfd(fd: adw_link_fd(link), events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(min(remaining, .milliseconds(100)).wholeMilliseconds) + 1)
            if ready > 0 || (ready < 0 && errno != EINTR) { break }
        }
        guard adw_link_read(link) == REDIS_OK else { throw dropBrokenContext(link) }
    }

    private func append(_ command: RedisCommand, to link: OpaquePointer) {
        let context = Self.hiredisContext(link)
        // hiredis copies the bytes into its output buffer; nothing is formatted on this thread.
        command.header.withUnsafeBufferPointer { header in
            _ = redisAppendFormattedCommand(context, UnsafeRawPointer(header.baseAddress!).assumingMemoryBound(to: CChar.self), header.count)
        }
        command.body.withUnsafeBufferPointer { body in
            guard let base = body.baseAddress else { return }
            _ = redisAppendFormattedCommand(context, UnsafeRawPointer(base).assumingMemoryBound(to: CChar.self), body.count)
        }
    }

    /// Turns hiredis's sticky context error into a ``RedisError`` and forgets the connection.
    private func dropBrokenContext(_ broken: OpaquePointer) -> RedisError {
        // Read first: hiredis's failing read or write left it, and anything called later may change it.
        let osError = errno
        let context = Self.hiredisContext(broken)
        let alert = adw_link_last_alert(broken)
        let code = Self.transportErrorCode(hiredisError: context.pointee.err, osError: osError, tlsAlert: alert)
        let message = Self.errorString(context)
        forget(broken)
        logger.warning("redis connection lost", metadata: ["error": "\(message)"])
        if code == .tlsHandshakeFailed {
            return RedisError(code, "the server ended the TLS session: \(String(cString: adw_tls_alert_name(alert)))\(Self.alertAdvice(alert))")
        }
        return RedisError(code, message.isEmpty ? "connection closed" : message)
    }

    /// Classifies hiredis's context error by its code and, for an I/O error, the OS's errno: a
    /// read or write that ran past the socket timeout (SO_RCVTIMEO/SO_SNDTIMEO) fails with EAGAIN.
    /// A TLS alert from the server (TLS 1.3 refuses a client certificate after the handshake, at
    /// the first read) is a refusal, not a lost connection.
    static func transportErrorCode(hiredisError: Int32, osError: Int32, tlsAlert: Int32 = 0) -> RedisError.Code {
        if tlsAlert != 0 { return .tlsHandshakeFailed }
        return switch hiredisError {
        case REDIS_ERR_IO where osError == EAGAIN || osError == EWOULDBLOCK: .timeout
        case REDIS_ERR_PROTOCOL: .unexpectedReply
        default: .connectionLost
        }
    }

    /// Frees a context that failed; if it was the connection's own, the next command reconnects
    /// (on a cluster, after asking for the slot's primary again: the node may have failed over).
    func forget(_ failed: OpaquePointer) {
        adw_link_free(failed)
        if failed == link {
            link = nil
            discoveredNode = nil
        }
    }

    static func hiredisContext(_ link: OpaquePointer) -> UnsafeMutablePointer<redisContext> {
        adw_link_context(link).assumingMemoryBound(to: redisContext.self)
    }

    static func errorString(_ context: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: context.pointee.errstr) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}

extension RedisValue {
    init(_ reply: UnsafePointer<redisReply>) {
        let value = reply.pointee
        switch value.type {
        case REDIS_REPLY_STRING:
            self = .bulk(Array(UnsafeRawBufferPointer(start: value.str, count: value.len)))
        case REDIS_REPLY_STATUS:
            self = .status(String(decoding: UnsafeRawBufferPointer(start: value.str, count: value.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            self = .error(String(decoding: UnsafeRawBufferPointer(start: value.str, count: value.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            self = .integer(value.integer)
        case REDIS_REPLY_ARRAY:
            var elements: [RedisValue] = []
            elements.reserveCapacity(value.elements)
            for index in 0..<value.elements {
                if let element = value.element[index] {
                    elements.append(RedisValue(element))
                } else {
                    elements.append(.null)
                }
            }
            self = .array(elements)
        default:
            self = .null
        }
    }
}

extension timeval {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.init(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}

extension RedisConnection: ScopedConnection {}

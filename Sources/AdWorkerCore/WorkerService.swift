import AdTelemetryRecords
import AdWorkerConnectionThread
import AdWorkerPostgres
import AdWorkerRedis
public import Logging
public import ServiceLifecycle

/// `adworker run`: for each configured stream, `concurrency` consumers, each with its own Redis
/// connections; their inserts borrow from one pool of PostgreSQL connections per record kind
/// (``PostgresPool``), shared by that kind's shards. On graceful shutdown the consumers stop reading, commit and
/// acknowledge the batch in hand, and return; in drain mode they return once the streams are empty.
public struct WorkerService: Service {
    public let configuration: WorkerConfiguration
    private let logger: Logger
    private let onBatch: @Sendable (BatchReport) -> Void
    private let status: WorkerStatus?
    private let stageObserver: (any BatchStageObserver)?

    /// - Parameters:
    ///   - configuration: Streams, batching, connections.
    ///   - logger: The root logger; consumers add `stream` and `consumer` metadata.
    ///   - status: Where batches, failures, consumer states and queue samples are recorded (for
    ///     `/status`, `/readyz` and metrics); nil records nothing.
    ///   - stageObserver: Told where each batch's time goes (`adworker bench`); nil: no timing is kept.
    ///   - onBatch: Called after every acknowledged batch, from the consumer's task; keep it cheap.
    public init(
        configuration: WorkerConfiguration, logger: Logger, status: WorkerStatus? = nil, stageObserver: (any BatchStageObserver)? = nil,
        onBatch: @escaping @Sendable (BatchReport) -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.logger = logger
        self.status = status
        self.stageObserver = stageObserver
        self.onBatch = onBatch
    }

    public func run() async throws {
        try await refuseUnworkableConfiguration()
        let lease = ConsumerLease(
            streamPrefix: configuration.streamPrefix, consumerName: configuration.consumerPrefix, duration: configuration.consumerLease
        )
        try await RedisConnection.withConnection(configuration.redis.routed(by: lease.key), logger: logger, connectImmediately: false) { leaseRedis in
            var backoff = Backoff()
            // Until the name is ours (at once, or after a holder's lease ran out) nothing is read.
            status?.problem("lease", "taking the consumer name \(configuration.consumerPrefix) (another process may hold it)")
            while true {
                do {
                    // ConsumerNameInUse is final: it ends the worker with a message naming the fix.
                    try await lease.acquire(leaseRedis, logger: logger)
                    break
                } catch let error as RedisError where error.code == .outOfMemory {
                    // The lease is a SET, which a full Redis refuses; reading and acknowledging
                    // still work, so start without it: renewals take it once memory is free.
                    logger.warning("redis is out of memory: starting without the consumer name's lease", metadata: [LogKey.error: "\(error)"])
                    break
                } catch let error as RedisError {
                    let delay = backoff.nextDelay()
                    logger.warning("cannot take the consumer name's lease, retrying", metadata: [LogKey.error: "\(error)", LogKey.delay: "\(delay)"])
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
                    if Task.isShuttingDownGracefully { return }
                    try Task.checkCancellation()
                }
            }
            status?.problem("lease", nil)
            try await runConsumers(lease: lease, leaseRedis: leaseRedis)
            await lease.release(leaseRedis)
        }
    }

    private func runConsumers(lease: ConsumerLease, leaseRedis: RedisConnection) async throws {
        logger.info(
            "worker started",
            metadata: [
                "streams": "\(configuration.allStreams)",
                "concurrency": "\(configuration.concurrency)", "batch_size": "\(configuration.batchSize)",
                "drain": "\(configuration.drain)",
            ]
        )
        do {
            try await withThrowingTaskGroup(of: Void.self) { background in
                if let interval = configuration.trimInterval {
                    background.addTask { try await maintain(every: interval) }
                }
                if let status {
                    background.addTask { try await sampleQueues(into: status, every: .seconds(1)) }
                }
                try await withThrowingTaskGroup(of: Void.self) { consumers in
                    // Renewing the lease only ends by throwing (another process took the name):
                    // that ends every consumer too, so two processes never share a name.
                    consumers.addTask { try await lease.keep(leaseRedis, logger: logger) }
                    for kind in configuration.kinds {
                        consumers.addTask { try await consume(kind) }
                    }
                    status?.markStarted()
                    // The first kind to end ends the lease renewal with it: the others end on
                    // their own (drain, shutdown) or by throwing.
                    for _ in configuration.kinds { try await consumers.next() }
                    consumers.cancelAll()
                }
                // Maintenance never ends on its own; the consumers decide when the worker is done.
                background.cancelAll()
                if let status {
                    // One last sample, so the final queue figures (lag 0 after a drain) are current.
                    try await sampleQueues(into: status, every: nil)
                }
            }
        } catch is CancellationError where Task.isShuttingDownGracefully {
            // The shutdown timeout ran out (the database is down, say): what was not committed
            // stays pending and is read again by this consumer name on the next start.
            logger.warning("shutdown timeout reached; unacknowledged entries stay pending for the next start")
            return
        }
        logger.info("worker stopped")
    }

    /// `concurrency` consumers on every shard of `kind`, whose sinks share the kind's PostgreSQL
    /// connections. Each shard's consumers start once its group exists: a shard whose group cannot
    /// be created (its key holds another type) holds up no other. With several nodes
    /// (``WorkerConfiguration/postgresNodes``) each has a pool of its own, and the sinks take
    /// them in turn, each kind starting one node further on, so a node that goes away is a
    /// circuit on its sinks only.
    private func consume(_ kind: RecordKind) async throws {
        let nodes = configuration.postgresNodes.isEmpty ? [configuration.postgres] : configuration.postgresNodes.map(configuration.postgres.through)
        let size = (StreamConsumer.sinkLanes * configuration.concurrency + nodes.count - 1) / nodes.count
        let kindOffset = RecordKind.allCases.firstIndex(of: kind) ?? 0
        try await PostgresPool.withPools(size: size, configurations: nodes, logger: logger) { pools in
            try await withThrowingTaskGroup(of: Void.self) { shards in
                for (shard, stream) in configuration.streams(for: kind).enumerated() {
                    shards.addTask {
                        guard try await createGroup(on: stream) else { return }
                        try await withThrowingTaskGroup(of: Void.self) { consumers in
                            for slot in 0..<configuration.concurrency {
                                let firstSink = kindOffset + (shard * configuration.concurrency + slot) * StreamConsumer.sinkLanes
                                let consumer = StreamConsumer(
                                    kind: kind, shard: shard, stream: stream, slot: slot, postgres: pools, firstSink: firstSink,
                                    configuration: configuration, logger: logger, status: status, stageObserver: stageObserver, onBatch: onBatch
                                )
                                consumers.addTask { try await consumer.run() }
                            }
                            try await consumers.waitForAll()
                        }
                    }
                }
                try await shards.waitForAll()
            }
        }
    }

    /// Samples each stream's length, the group's lag and its pending count, until cancelled.
    private func sampleQueues(into status: WorkerStatus, every interval: Duration?) async throws {
        let breaker = CircuitBreaker(target: "redis")
        try await withStreamConnections { connections in
            while !Task.isShuttingDownGracefully {
                for (stream, redis) in connections {
                    // Each key on its own: a dead-letter key of another type hides only its own figure.
                    let sample = try await breaker.retrying(doing: "sampling queues", logger: logger) {
                        try await Self.skippingWrongType {
                            (try await redis.streamLength(stream), try await redis.groups(of: stream).first { $0.name == configuration.group })
                        }
                    }
                    let deadLetters = try await breaker.retrying(doing: "sampling queues", logger: logger) {
                        try await Self.skippingWrongType { try await redis.streamLength(DeadLetter.stream(for: stream)) }
                    }
                    guard let (length, group) = sample else { continue }
                    status.recordQueue(stream: stream, length: length, lag: group?.lag, pending: group?.pending ?? 0, deadLetters: deadLetters)
                }
                status.recordHistory()
                guard let interval else { return }
                try await Task.sleep(for: interval)
            }
        }
    }

    /// Trims each stream and expires idle consumers every `interval`, until cancelled.
    private func maintain(every interval: Duration) async throws {
        let breaker = CircuitBreaker(target: "redis")
        try await withStreamConnections { connections in
            while !Task.isShuttingDownGracefully {
                for (stream, redis) in connections {
                    let maintenance = StreamMaintenance(
                        stream: stream, group: configuration.group, consumerExpiry: configuration.consumerExpiry,
                        deadLetterLimit: configuration.deadLetterLimit
                    )
                    let outcome = try await breaker.retrying(doing: "trimming", logger: logger) {
                        try await Self.skippingWrongType { try await maintenance.run(redis, logger: logger) }
                    }
                    if let trimmed = outcome?.trimmedDeadLetters, trimmed > 0 {
                        status?.recordTrimmedDeadLetters(stream: stream, count: trimmed)
                    }
                }
                try await Task.sleep(for: interval)
            }
        }
    }

    /// Throws ``StartupRefused`` when the worker cannot work as configured: Redis or PostgreSQL
    /// refuses its credentials, the database or a table is missing, or the role may not insert
    /// into a table. A server that does not answer is no reason: the consumers wait for it.
    private func refuseUnworkableConfiguration() async throws {
        func refuse(_ error: any Error, _ target: String) throws {
            if let failure = PermanentFailure(error), failure.refusesStartup { throw StartupRefused(description: failure.fix) }
            logger.warning("\(target) does not answer at start-up; the consumers wait for it", metadata: [LogKey.error: "\(error)"])
        }
        do {
            try await RedisConnection.withConnection(configuration.redis, logger: logger) { redis in
                try await redis.ping()
                // An ACL without +wait refuses here, not at the first entry; replicas behind now
                // are no reason (the reads wait for them).
                do {
                    try await redis.waitForReplicas()
                } catch let error as RedisError {
                    guard error.code == .replicationShortfall else { throw error }
                }
            }
        } catch {
            try refuse(error, "Redis")
        }
        do {
            try await PostgresConnection.withConnection(configuration.postgres, logger: logger) { postgres in
                for kind in configuration.kinds {
                    let table = RowEncoder.target(for: kind).table
                    // CASE, so the privilege is asked only of a table that exists.
                    let found = try await postgres.query(
                        """
                        SELECT CASE WHEN to_regclass($1) IS NULL THEN 'missing'
                            WHEN has_table_privilege($1, 'INSERT') AND has_table_privilege($1, 'SELECT') THEN 'usable'
                            ELSE 'denied' END
                        """,
                        [table]
                    )
                    switch found.first?.first ?? nil {
                    case "usable":
                        try await refuseWithoutShardKey(table, postgres)
                    case "missing":
                        throw StartupRefused(description: "table \(table) does not exist in database \(configuration.postgres.database): run adworker migrate")
                    default:
                        throw StartupRefused(
                            description: "role \(configuration.postgres.user) may not INSERT into and SELECT from \(table): grant what deploy/postgres/worker-role.sql grants"
                        )
                    }
                }
            }
        } catch let error as StartupRefused {
            throw error
        } catch {
            try refuse(error, "PostgreSQL")
        }
    }

    /// Rows are keyed by (enqueued_at, stream_id, shard) since migration 5: without the column the
    /// COPY fails; with sharded streams and a key without it (a compressed hypertable that the
    /// migration could not change), rows of two shards with the same entry id would count as one.
    private func refuseWithoutShardKey(_ table: String, _ postgres: PostgresConnection) async throws {
        let key = try await postgres.query(
            """
            SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'shard' AND NOT attisdropped),
                   EXISTS (SELECT 1 FROM pg_index JOIN pg_attribute ON attrelid = indrelid AND attnum = ANY (indkey)
                            WHERE indrelid = to_regclass($1) AND indisprimary AND attname = 'shard')
            """,
            [table]
        )
        guard key.first?.first == "t" else {
            throw StartupRefused(description: "table \(table) has no shard column (schema older than this adworker): run adworker migrate")
        }
        if configuration.layout.tagged, key.first?[1] != "t" {
            throw StartupRefused(
                description: "table \(table)'s primary key lacks the shard column that sharded streams need (a TimescaleDB hypertable with compression keeps its old key): change it as schema/005_shard_key.sql says, or run with one shard on a single Redis"
            )
        }
    }

    /// Creates `stream`'s consumer group if missing, retrying with backoff while Redis is
    /// unreachable or refuses; meanwhile `/readyz` says why. A refusal that retrying cannot fix
    /// (the key holds another type, Redis is out of memory) is also logged at error level, at most
    /// every ``CircuitBreaker/permanentLogInterval``, and counted in `adworker_permanent_errors`;
    /// it is still retried, so the fix takes effect without a restart. Returns false if a graceful
    /// shutdown came first.
    private func createGroup(on stream: String) async throws -> Bool {
        try await RedisConnection.withConnection(configuration.redis.routed(by: stream), logger: logger, connectImmediately: false) { redis in
            let problem = "group \(stream)"
            var backoff = Backoff()
            var permanentLoggedAt: ContinuousClock.Instant?
            while true {
                do {
                    try await redis.createGroupIfMissing(configuration.group, on: stream)
                    status?.permanentFailure(problem, target: "redis", nil)
                    status?.problem(problem, nil)
                    if permanentLoggedAt != nil {
                        logger.notice("consumer group created; the stream's consumers start", metadata: [LogKey.stream: "\(stream)"])
                    }
                    return true
                } catch {
                    let delay = backoff.nextDelay()
                    let reason = "cannot create consumer group \(configuration.group) on \(stream): "
                    if var failure = PermanentFailure(error) {
                        failure.fix = reason + failure.fix
                        status?.permanentFailure(problem, target: "redis", failure)
                        if permanentLoggedAt.map({ $0.duration(to: .now) >= CircuitBreaker.permanentLogInterval }) ?? true {
                            permanentLoggedAt = .now
                            logger.error(
                                "\(failure.fix); retrying, the other streams' consumers run meanwhile",
                                metadata: [LogKey.stream: "\(stream)", LogKey.error: "\(error)", LogKey.delay: "\(delay)"]
                            )
                        }
                    } else {
                        logger.warning(
                            "cannot create consumer group, retrying",
                            metadata: [LogKey.stream: "\(stream)", LogKey.error: "\(error)", LogKey.delay: "\(delay)"]
                        )
                        status?.problem(problem, reason + "\(error)")
                    }
                    // A shutdown during the wait ends it at once, and the worker exits 0.
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
                    if Task.isShuttingDownGracefully { return false }
                    try Task.checkCancellation()
                }
            }
        }
    }

    /// Runs `body`; nil when a key it touches holds another type than a stream. Queue sampling and
    /// maintenance skip such a key, each key on its own (a stream's group creation reports it),
    /// instead of stalling on it.
    static func skippingWrongType<Result>(_ body: () async throws -> Result) async throws -> Result? {
        do {
            return try await body()
        } catch let error as RedisError where error.code == .wrongType {
            return nil
        }
    }

    /// Runs `body` with a connection per stream, in ``WorkerConfiguration/allStreams`` order; each
    /// follows its stream's slot on a cluster (on one node they all reach the same server).
    /// Connections connect on first use.
    private func withStreamConnections<Result>(
        _ body: ([(stream: String, redis: RedisConnection)]) async throws -> sending Result
    ) async throws -> sending Result {
        let streams = configuration.allStreams
        return try await RedisConnection.withConnections(
            streams.map { configuration.redis.routed(by: $0) }, logger: logger, connectImmediately: false
        ) { connections in
            try await body(Array(zip(streams, connections)))
        }
    }
}

import AsyncAlgorithms
import Logging
import Postgres
import Redis
import ServiceLifecycle
import Synchronization
import TelemetryRecords

/// One consumer of one stream, as tasks joined by channels that each hand over one batch at a
/// time: a reader (XREADGROUP, batching), a preparer (decode and encode as COPY rows) and
/// ``sinkLanes`` sinks (insert, dead-letter, acknowledge), each with its own connections. Reading,
/// decoding and the COPYs of successive batches overlap, on the Redis connection's thread, the
/// cooperative pool and the libpq threads.
///
/// - Important: Entries are acknowledged only after their rows are committed (or their dead
///   letters written, in the same MULTI as the XACK). A crash at any point leaves them pending,
///   and the restarted consumer, having the same name, reads its pending entries first and
///   inserts them on the idempotent path.
struct StreamConsumer {
    /// Sinks per consumer. A sink waits for its COMMIT (the WAL flush) and then for its XACK; with
    /// a second one, the next batch's COPY runs meanwhile. Measured with `adworker bench`: 1000-row
    /// COPYs one after another reach about 80 % of one large COPY's rate, so one sink alone would
    /// hold the drain below that.
    static let sinkLanes = 2

    /// Entries read together, decoded and encoded as COPY rows; `redelivered` ones may already be
    /// in the table.
    struct Batch: Sendable {
        var entries: [StreamEntry]
        var redelivered: Bool
        var rows: BinaryCopyRows
        /// The entry each row came from.
        var entryIndexOfRow: [Int]
        /// Entries that did not decode, or were delivered too often.
        var deadLetters: [DeadLetter]
        var deliveries: [StreamEntryID: Int] = [:]
    }

    let kind: RecordKind
    let stream: String
    let consumer: String
    let configuration: WorkerConfiguration
    let logger: Logger
    let onBatch: @Sendable (BatchReport) -> Void
    let status: WorkerStatus?
    /// A sink's own breakers: one lane failing while the other succeeds must not flip a shared
    /// circuit open and closed on every attempt.
    struct SinkBreakers: Sendable {
        let postgres: CircuitBreaker
        let redis: CircuitBreaker
    }

    /// One per task and target: the reader's Redis, and each sink's PostgreSQL and Redis.
    let readerRedis: CircuitBreaker
    let sinkBreakers: [SinkBreakers]
    /// Entries between reading and acknowledgement in this consumer's own pipeline: a claim that
    /// returns one of them (it has been in flight longer than `claimIdle`) must not queue it twice.
    let inFlight = InFlightEntries()

    init(
        kind: RecordKind, slot: Int, configuration: WorkerConfiguration, logger: Logger, status: WorkerStatus?,
        onBatch: @escaping @Sendable (BatchReport) -> Void
    ) {
        self.kind = kind
        let stream = configuration.stream(for: kind)
        let consumer = "\(configuration.consumerPrefix)-\(slot)"
        self.stream = stream
        self.consumer = consumer
        self.status = status
        func breaker(_ target: String, _ role: String) -> CircuitBreaker {
            CircuitBreaker(
                target: target, role: role,
                onFailure: { status?.recordFailure(stream: stream, target: target, error: $0) },
                onStateChange: { status?.circuit("\(target) (\(role))", of: consumer, stream: stream, isOpen: $0) }
            )
        }
        self.readerRedis = breaker("redis", "reader")
        self.sinkBreakers = (1...Self.sinkLanes).map { lane in
            SinkBreakers(postgres: breaker("postgres", "sink \(lane)"), redis: breaker("redis", "sink \(lane)"))
        }
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: LogKey.stream] = "\(stream)"
        logger[metadataKey: LogKey.consumer] = "\(consumer)"
        self.logger = logger
        self.onBatch = onBatch
    }

    /// Entries as read, before decoding.
    struct ReadBatch: Sendable {
        var entries: [StreamEntry]
        var redelivered: Bool
        /// Delivery counts of redelivered entries; a fresh entry has been delivered once.
        var deliveries: [StreamEntryID: Int] = [:]
    }

    func run() async throws {
        status?.consumer(consumer, stream: stream, state: "running")
        defer { status?.consumer(consumer, stream: stream, state: "stopped") }
        let reads = AsyncChannel<ReadBatch>()
        let batches = AsyncChannel<Batch>()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { reads.finish() }
                try await read(into: reads)
            }
            group.addTask {
                defer { batches.finish() }
                for await read in reads {
                    await batches.send(prepare(read))
                }
            }
            for breakers in sinkBreakers {
                group.addTask {
                    try await sink(from: batches, breakers: breakers)
                }
            }
            try await group.waitForAll()
        }
    }

    // MARK: Reader

    private func read(into batches: AsyncChannel<ReadBatch>) async throws {
        try await RedisConnection.withConnection(configuration.redis, logger: logger, connectImmediately: false) { redis in
            try await readOwnPending(redis, into: batches)
            try await readNew(redis, into: batches)
        }
    }

    /// Entries delivered to this consumer name before (a previous run that crashed or was killed).
    private func readOwnPending(_ redis: RedisConnection, into batches: AsyncChannel<ReadBatch>) async throws {
        var after = StreamEntryID(milliseconds: 0, sequence: 0)
        while !Task.isShuttingDownGracefully {
            // Reads run on the connection's own thread and do not see cancellation; check it here.
            try Task.checkCancellation()
            let entries = try await readWithRetry(redis, position: .pending(after: after), count: configuration.batchSize, block: nil)
            guard let last = entries.last else { return }
            logger.info("re-reading own pending entries", metadata: [LogKey.batchSize: "\(entries.count)"])
            after = last.id
            await send(try await redelivered(entries, redis), to: batches)
        }
    }

    private func send(_ batch: ReadBatch, to batches: AsyncChannel<ReadBatch>) async {
        inFlight.insert(batch.entries)
        await batches.send(batch)
    }

    /// A batch of entries delivered before, with their delivery counts.
    private func redelivered(_ entries: [StreamEntry], _ redis: RedisConnection) async throws -> ReadBatch {
        var batch = ReadBatch(entries: entries, redelivered: true)
        guard let first = entries.first?.id, let last = entries.last?.id else { return batch }
        let pending = try await readerRedis.retrying(doing: "reading delivery counts", logger: logger) {
            try await redis.pendingEntries(stream, group: configuration.group, in: first...last, count: entries.count, consumer: consumer)
        }
        for entry in pending { batch.deliveries[entry.id] = entry.deliveries }
        return batch
    }

    /// Takes over entries that another consumer (or an earlier incarnation of any) has held for
    /// longer than `claimIdle`; one step of XAUTOCLAIM per call, resuming at `cursor`.
    private func reclaim(_ redis: RedisConnection, cursor: inout StreamEntryID) async throws -> ReadBatch? {
        let start = cursor
        let claim = try await readerRedis.retrying(doing: "claiming idle entries", logger: logger) {
            try await redis.autoClaim(
                stream, group: configuration.group, consumer: consumer, minimumIdle: configuration.claimIdle, start: start,
                count: configuration.batchSize
            )
        }
        cursor = claim.next
        var entries = claim.entries
        if !claim.deleted.isEmpty {
            // Deleted (XDEL, or a trim that did not go through adworker) after delivery and before
            // anyone stored them. Redis has dropped them from the pending list; they go on as
            // entries without fields, so each still ends as exactly one dead letter (empty_entry).
            logger.error(
                "pending entries were deleted from the stream before they were stored",
                metadata: ["count": "\(claim.deleted.count)", "entry_ids": "\(claim.deleted.prefix(10).map(\.description))"]
            )
            entries += claim.deleted.map { StreamEntry(id: $0, fields: StreamFields()) }
            entries.sort { $0.id < $1.id }
        }
        entries.removeAll { inFlight.contains($0.id) }
        guard !entries.isEmpty else { return nil }
        logger.notice("claimed idle entries from other consumers", metadata: [LogKey.batchSize: "\(entries.count)"])
        return try await redelivered(entries, redis)
    }

    private func readNew(_ redis: RedisConnection, into batches: AsyncChannel<ReadBatch>) async throws {
        let clock = ContinuousClock()
        var batcher = Batcher<StreamEntry, ContinuousClock.Instant>(
            maximumSize: configuration.batchSize, maximumWait: configuration.maximumWait
        )
        let waitLimit = configuration.drain ? WorkerConfiguration.drainReadBlock : WorkerConfiguration.maximumReadBlock
        let claimInterval = min(max(configuration.claimIdle / 2, .milliseconds(100)), .seconds(30))
        var nextClaim = clock.now
        var claimCursor = StreamEntryID(milliseconds: 0, sequence: 0)
        while !Task.isShuttingDownGracefully {
            try Task.checkCancellation()
            // Claiming while our own sinks cannot reach their targets would only pile up delivery
            // counts (an outage is not the entries' fault) and work this consumer cannot do.
            if clock.now >= nextClaim && !sinkBreakers.contains(where: { $0.postgres.isOpen || $0.redis.isOpen }) {
                if let claimed = try await reclaim(redis, cursor: &claimCursor) {
                    await send(claimed, to: batches)
                    continue
                }
                nextClaim = clock.now + claimInterval
            }
            let wait = batcher.readWait(at: clock.now, limit: waitLimit)
            let entries = try await readWithRetry(redis, position: .new, count: batcher.remainingCapacity, block: wait)
            let now = clock.now
            batcher.append(contentsOf: entries, at: now)
            // Draining, a read that finds nothing new ends the partial batch: nothing more is coming.
            if batcher.isReady(at: now) || (configuration.drain && entries.isEmpty && !batcher.isEmpty) {
                await send(ReadBatch(entries: batcher.take(), redelivered: false), to: batches)
            } else if entries.isEmpty && batcher.isEmpty && configuration.drain {
                if !inFlight.isEmpty {
                    // Our own sinks are still committing: their acks end the drain in milliseconds.
                    try await Task.sleep(for: WorkerConfiguration.drainReadBlock)
                    continue
                }
                if try await othersHoldPending(redis) {
                    // Drain means nothing new and nothing pending: wait for the other holders to
                    // finish, or for their entries to become idle enough to claim.
                    try await Task.sleep(for: min(claimInterval, .milliseconds(200)))
                    nextClaim = clock.now
                    continue
                }
                logger.debug("stream drained")
                return
            }
        }
        // Shutting down: hand over what was read, so it is committed and acknowledged before exit.
        if !batcher.isEmpty {
            await send(ReadBatch(entries: batcher.take(), redelivered: false), to: batches)
        }
    }

    private func readWithRetry(
        _ redis: RedisConnection, position: ReadPosition, count: Int, block: Duration?
    ) async throws -> [StreamEntry] {
        try await readerRedis.retrying(doing: "reading", logger: logger, probe: { try await Self.ping(redis) }) {
            do {
                return try await redis.readGroup(
                    configuration.group, consumer: consumer, from: stream, position: position, count: count, block: block
                )
            } catch let error as RedisError where error.code == .noGroup {
                // The stream or group was deleted under us; recreate it and read again.
                logger.warning("consumer group missing, creating it", metadata: [LogKey.error: "\(error)"])
                try await redis.createGroupIfMissing(configuration.group, on: stream)
                return []
            }
        }
    }

    /// Whether entries are pending on the group at all (in drain mode, another consumer's batch
    /// in flight, or entries a dead consumer left behind).
    private func othersHoldPending(_ redis: RedisConnection) async throws -> Bool {
        try await readerRedis.retrying(doing: "counting pending entries", logger: logger) {
            try await redis.pendingCount(stream, group: configuration.group) > 0
        }
    }

    /// Decodes and encodes entries; those that do not decode become dead letters.
    private func prepare(_ read: ReadBatch) -> Batch {
        let decoder = WireDecoder(maximumEntryBytes: configuration.maximumEntryBytes)
        let entries = read.entries
        var batch = Batch(
            entries: entries, redelivered: read.redelivered, rows: BinaryCopyRows(reservingBytes: entries.count * 256),
            entryIndexOfRow: [], deadLetters: []
        )
        batch.entryIndexOfRow.reserveCapacity(entries.count)
        batch.deliveries = read.deliveries
        for (index, entry) in entries.enumerated() {
            // Fresh batches have no counts: skip hashing every id for nothing.
            let deliveries = read.deliveries.isEmpty ? 1 : read.deliveries[entry.id] ?? 1
            if deliveries > configuration.maximumDeliveries {
                logger.warning("entry delivered too often", metadata: [LogKey.entryID: "\(entry.id)", "deliveries": "\(deliveries)"])
                batch.deadLetters.append(DeadLetter(entry: entry, reason: "max_deliveries_exceeded", deliveries: deliveries))
                continue
            }
            do {
                RowEncoder.append(try decoder.decode(entry, as: kind), id: entry.id, to: &batch.rows)
                batch.entryIndexOfRow.append(index)
            } catch {
                logger.warning("entry refused", metadata: [LogKey.entryID: "\(entry.id)", LogKey.reason: "\(error)"])
                batch.deadLetters.append(DeadLetter(entry: entry, reason: error.description, deliveries: deliveries))
            }
        }
        if let unstorable = entries.last(where: { !$0.id.isStorable }) {
            logger.error(
                "entry ids beyond the year 9999: Redis gives every later entry of this stream at least these milliseconds, so they all become dead letters; move the producers to a new stream and rename or delete this one",
                metadata: [LogKey.entryID: "\(unstorable.id)"]
            )
        }
        return batch
    }

    // MARK: Sink

    private func sink(from batches: AsyncChannel<Batch>, breakers: SinkBreakers) async throws {
        try await PostgresConnection.withConnection(configuration.postgres, logger: logger, connectImmediately: false) { postgres in
            try await RedisConnection.withConnection(configuration.redis, logger: logger, connectImmediately: false) { redis in
                for await batch in batches {
                    try await process(batch, postgres: postgres, redis: redis, breakers: breakers)
                }
            }
        }
    }

    private func process(_ batch: Batch, postgres: PostgresConnection, redis: RedisConnection, breakers: SinkBreakers) async throws {
        let rows = batch.rows
        var deadLetters = batch.deadLetters
        let path: InsertPath = batch.redelivered ? .idempotent : .fast
        let clock = ContinuousClock()
        let insertStart = clock.now
        var outcome = InsertOutcome()
        if !rows.isEmpty {
            outcome = try await breakers.postgres.retrying(doing: "inserting", logger: logger, probe: { try await postgres.execute("SELECT 1") }) {
                try await postgres.insert(rows, into: RowEncoder.target(for: kind), path: path)
            }
        }
        for (rowIndex, error) in outcome.rejectedRows {
            let entry = batch.entries[batch.entryIndexOfRow[rowIndex]]
            let reason = "rejected_by_database: sqlstate \(error.sqlState ?? "?")"
            logger.warning("entry refused by the database", metadata: [LogKey.entryID: "\(entry.id)", LogKey.reason: "\(reason)"])
            deadLetters.append(DeadLetter(entry: entry, reason: reason, sqlState: error.sqlState, deliveries: batch.deliveries[entry.id] ?? 1))
        }

        let insertDuration = insertStart.duration(to: clock.now)
        let ids = batch.entries.map(\.id)
        // The rows are committed: acknowledge their entries on their own. XACK adds nothing, so
        // Redis takes it even at maxmemory, where the dead letters' XADD is refused.
        let lettered = Set(deadLetters.map(\.entry.id))
        let stored = lettered.isEmpty ? ids : ids.filter { !lettered.contains($0) }
        try await breakers.redis.retrying(doing: "acknowledging", logger: logger, probe: { try await Self.ping(redis) }) {
            try await redis.acknowledge(stored, in: stream, group: configuration.group)
        }
        let written = try await writeDeadLetters(deadLetters, redis: redis, breakers: breakers)
        inFlight.remove(ids)
        logger.debug(
            "batch committed",
            metadata: [
                LogKey.batchSize: "\(batch.entries.count)", "inserted": "\(outcome.insertedRows)", "dead": "\(written.count)",
                "insert_duration": "\(insertDuration)", "total_duration": "\(insertStart.duration(to: clock.now))",
            ]
        )
        let acknowledged = stored.count + written.count
        let report = BatchReport(
            stream: stream, entries: acknowledged, insertedRows: outcome.insertedRows,
            duplicateRows: outcome.duplicateRows, deadLettered: written.count,
            path: outcome.fellBackToIdempotentPath ? .idempotent : path, acknowledgedAt: .now(),
            enqueuedAt: (stored + written.map(\.entry.id)).map(\.timestamp)
        )
        status?.recordBatch(report, deadLetterReasons: written.map(\.reason), insertDuration: insertDuration)
        onBatch(report)
    }

    /// Writes each dead letter and acknowledges its entry in one MULTI/EXEC. Returns the letters written.
    ///
    /// - Important: Written at most once. After a failure whose outcome is unknown (the reply was
    ///   lost: the MULTI may have run), only letters whose entries are still pending on this
    ///   consumer are written again; MULTI/EXEC is all or nothing, so "acknowledged" means "written".
    ///   When Redis refuses to add data (OOM at maxmemory), the letters are not written and their
    ///   entries stay pending, visibly, to be claimed again later; the pipeline goes on.
    private func writeDeadLetters(_ deadLetters: [DeadLetter], redis: RedisConnection, breakers: SinkBreakers) async throws -> [DeadLetter] {
        guard !deadLetters.isEmpty else { return [] }
        var letters = deadLetters
        var outcomeUnknown = false
        let problemKey = "dead letters \(stream)"
        let written = try await breakers.redis.retrying(doing: "writing dead letters", logger: logger, probe: { try await Self.ping(redis) }) {
            () async throws -> [DeadLetter]? in
            if outcomeUnknown {
                let ids = letters.map(\.entry.id)
                let pending = try await redis.pendingEntries(
                    stream, group: configuration.group, in: ids.min()!...ids.max()!, count: max(ids.count, configuration.batchSize) * 4,
                    consumer: consumer
                )
                let stillPending = Set(pending.map(\.id))
                letters.removeAll { !stillPending.contains($0.entry.id) }
                outcomeUnknown = false
                guard !letters.isEmpty else { return letters }
            }
            let now = Timestamp.now()
            do {
                try await redis.acknowledge(
                    letters.map(\.entry.id), in: stream, group: configuration.group, addingAtomically: letters.map { $0.command(from: stream, at: now) }
                )
                return letters
            } catch let error as RedisError where error.code == .outOfMemory {
                return nil
            } catch let error as RedisError where error.isTransient {
                outcomeUnknown = true
                throw error
            }
        }
        guard let written else {
            let reason = "redis is out of memory (maxmemory with noeviction): \(letters.count) dead letters of \(stream) cannot be written and stay pending; free memory (trim or delete old dead letters) or raise maxmemory"
            logger.error("dead letters not written: redis out of memory; their entries stay pending", metadata: ["count": "\(letters.count)"])
            status?.problem(problemKey, reason)
            status?.recordFailure(stream: stream, target: "redis", error: RedisError(.outOfMemory, "OOM"))
            return []
        }
        status?.problem(problemKey, nil)
        return written
    }

    static func ping(_ redis: RedisConnection) async throws {
        guard case .status("PONG") = try await redis.send(RedisCommand("PING")) else {
            throw RedisError(.unexpectedReply, "PING")
        }
    }
}

/// The ids of entries a consumer holds between reading and acknowledging them: at most a few
/// batches, each kept as its sorted ids, so the per-entry cost is one array per batch rather than
/// a hash per entry.
final class InFlightEntries: Sendable {
    private let batches = Mutex<[[StreamEntryID]]>([])

    func insert(_ entries: [StreamEntry]) {
        let ids = entries.map(\.id).sorted()
        batches.withLock { $0.append(ids) }
    }

    /// Removes the batch these ids were inserted as.
    func remove(_ removed: [StreamEntryID]) {
        guard let first = removed.min() else { return }
        batches.withLock { batches in
            if let index = batches.firstIndex(where: { $0.first == first }) { batches.remove(at: index) }
        }
    }

    var isEmpty: Bool { batches.withLock { $0.isEmpty } }

    func contains(_ id: StreamEntryID) -> Bool {
        batches.withLock { batches in
            batches.contains { ids in
                var low = 0
                var high = ids.count
                while low < high {
                    let middle = (low + high) / 2
                    if ids[middle] < id { low = middle + 1 } else { high = middle }
                }
                return low < ids.count && ids[low] == id
            }
        }
    }
}

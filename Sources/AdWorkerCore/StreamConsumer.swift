import AdTelemetryRecords
import AdWorkerPostgres
import AdWorkerRedis
import AsyncAlgorithms
import Logging
import ServiceLifecycle
import Synchronization

/// One consumer of one stream: a reader task whose decisions are a ``ConsumerStateMachine``, and
/// ``sinkLanes`` sink tasks that each decode a batch, insert it, write its dead letters and
/// acknowledge it, with connections of their own. The reader hands a batch to a sink only when
/// one is free, so batches are as large as the backlog makes them: small at low load (rows within
/// milliseconds), large under backlog (near one large COPY's rate).
///
/// - Important: Entries are acknowledged only after their rows are committed (or their dead
///   letters written, in the same MULTI as their XACK). A crash at any point leaves them pending,
///   and the restarted consumer, having the same name, reads its pending entries first and
///   inserts them on the idempotent path.
struct StreamConsumer {
    /// Sinks per consumer. A sink waits for its COMMIT (the WAL flush) and then for its XACK; with
    /// a second one, the next batch's COPY runs meanwhile. A third measured no better.
    static let sinkLanes = 2

    typealias Machine = ConsumerStateMachine<ContinuousClock.Instant>
    /// A batch on its way to a sink, with when the reader let go of it.
    typealias HandedOver = (batch: Machine.Batch, at: ContinuousClock.Instant)

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
        /// The read of its oldest entry (fresh batches), its hand-over and when a sink took it.
        var readAt: ContinuousClock.Instant?
        var handedOverAt: ContinuousClock.Instant
        var takenAt: ContinuousClock.Instant
    }

    let kind: RecordKind
    /// This consumer's shard of the kind's stream (the stream itself when unsharded).
    let stream: String
    /// `stream`'s shard number, part of every row's key.
    let shard: Int16
    /// Shared by the sinks of every shard of `kind`.
    let postgres: PostgresPool
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
    /// returns one of them (it has been in flight longer than `claimIdle`), or a re-read of own
    /// pending entries (all of them are), must not queue it twice.
    let inFlight = InFlightEntries()
    /// Sinks tell the reader here when they are done with a batch.
    let freedLanes = LaneSignal()

    init(
        kind: RecordKind, shard: Int, stream: String, slot: Int, postgres: PostgresPool, configuration: WorkerConfiguration, logger: Logger,
        status: WorkerStatus?, onBatch: @escaping @Sendable (BatchReport) -> Void
    ) {
        self.kind = kind
        self.shard = Int16(shard)
        self.postgres = postgres
        let consumer = "\(configuration.consumerPrefix)-\(slot)"
        self.stream = stream
        self.consumer = consumer
        self.status = status
        func breaker(_ target: String, _ role: String) -> CircuitBreaker {
            CircuitBreaker(
                target: target, role: role,
                onFailure: { status?.recordFailure(stream: stream, target: target, error: $0) },
                onStateChange: { status?.circuit(target, role: role, of: consumer, stream: stream, isOpen: $0) },
                onPermanentFailure: { status?.permanentFailure("\(target) \(role) of \(stream)/\(consumer)", target: target, $0) }
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

    func run() async throws {
        status?.declare(stream: stream)
        status?.consumer(consumer, stream: stream, state: .running)
        defer { status?.consumer(consumer, stream: stream, state: .stopped) }
        let batches = AsyncChannel<HandedOver>()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { batches.finish() }
                try await read(into: batches)
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

    private var machineConfiguration: Machine.Configuration {
        Machine.Configuration(
            maximumEntries: configuration.batchSize, maximumBytes: configuration.maximumBatchBytes, linger: configuration.maximumWait,
            lanes: Self.sinkLanes, claimInterval: min(max(configuration.claimIdle / 2, .milliseconds(100)), .seconds(30)),
            maximumReadBlock: WorkerConfiguration.maximumReadBlock, drain: configuration.drain,
            drainReadBlock: WorkerConfiguration.drainReadBlock, initialEntryBytes: configuration.maximumEntryBytes
        )
    }

    /// Performs what the state machine decides, feeding it what happened, until it finishes.
    private func read(into batches: AsyncChannel<HandedOver>) async throws {
        let clock = ContinuousClock()
        var machine = Machine(configuration: machineConfiguration, now: clock.now)
        try await RedisConnection.withConnection(configuration.redis.routed(by: stream), logger: logger, connectImmediately: false) { redis in
            // The loop runs on the connection's thread: each read is a call, not two thread hops.
            try await withTaskExecutorPreference(redis.taskExecutor) {
                while true {
                    // Reads run on the connection's own thread and do not see cancellation; check it here.
                    try Task.checkCancellation()
                    if Task.isShuttingDownGracefully { machine.shutDown() }
                    machine.sinksFreed(freedLanes.takeFreed())
                    machine.sinkCircuit(isOpen: sinkBreakers.contains { $0.postgres.isOpen || $0.redis.isOpen })
                    switch machine.nextAction(at: clock.now) {
                    case .readOwnPending(let after, let count):
                        let (batch, last) = try await ownPending(redis, after: after, count: count)
                        machine.ownPendingReturned(batch, through: last)
                    case .readNew(let count, let block):
                        let (entries, replyLost) = try await readWithRetry(redis, position: .new, count: count, block: block)
                        // Nothing new and nothing in this consumer's sinks: keeping up. A batch
                        // still in a sink is not progress (that sink may be stuck).
                        if entries.isEmpty && inFlight.isEmpty { status?.caughtUp(stream: stream) }
                        machine.readReturned(entries, at: clock.now)
                        if replyLost { lostReply(of: "reading", &machine) }
                    case .claim(let cursor, let count):
                        let (claimed, next, replyLost) = try await reclaim(redis, cursor: cursor, count: count)
                        machine.claimReturned(claimed, next: next, at: clock.now)
                        if replyLost { lostReply(of: "claiming", &machine) }
                    case .handOff(let batch):
                        inFlight.insert(batch.entries)
                        await batches.send((batch, clock.now))
                    case .waitForSink:
                        machine.sinksFreed(await freedLanes.wait())
                    case .checkPending:
                        machine.pendingChecked(othersHoldPending: try await othersHoldPending(redis), at: clock.now)
                    case .sleep(let duration):
                        try await Task.sleep(for: duration)
                        machine.slept()
                    case .finish:
                        if configuration.drain { logger.debug("stream drained") }
                        return
                    }
                }
            }
        }
    }

    private func lostReply(of activity: String, _ machine: inout Machine) {
        logger.notice("a reply was lost while \(activity): re-reading this consumer's pending entries")
        machine.replyLost()
    }

    /// A batch of entries delivered before, with their delivery counts.
    /// - Parameter read: How many entries the read that returned them held, those dropped from
    ///   `entries` (in flight already) included: that many may be pending between the first and the last.
    private func redelivered(_ entries: [StreamEntry], read: Int, _ redis: RedisConnection) async throws -> Machine.Batch {
        var batch = Machine.Batch(entries: entries, redelivered: true)
        guard let first = entries.first?.id, let last = entries.last?.id else { return batch }
        let pending = try await readerRedis.retrying(doing: "reading delivery counts", logger: logger) {
            try await redis.pendingEntries(stream, group: configuration.group, in: first...last, count: read, consumer: consumer)
        }
        for entry in pending { batch.deliveries[entry.id] = entry.deliveries }
        return batch
    }

    /// This consumer's own pending entries after `after`, up to `count`: those a previous run
    /// left, or those of a read whose reply was lost. Returns those not in this consumer's
    /// pipeline already, and the last id read (nil when none was: the scan is done).
    private func ownPending(_ redis: RedisConnection, after: StreamEntryID, count: Int) async throws -> (Machine.Batch, StreamEntryID?) {
        inFlight.beginPendingRead()
        defer { inFlight.endPendingRead() }
        var entries = try await readWithRetry(redis, position: .pending(after: after), count: count, block: nil).entries
        let read = entries.count
        let last = entries.last?.id
        entries.removeAll { inFlight.contains($0.id) }
        if !entries.isEmpty {
            logger.info("re-reading own pending entries", metadata: [LogKey.batchSize: "\(entries.count)"])
        }
        return (try await redelivered(entries, read: read, redis), last)
    }

    /// One step of XAUTOCLAIM from `cursor`: takes over entries that another consumer (or an
    /// earlier incarnation of any) has held for longer than `claimIdle`. Returns them (nil if
    /// none that are not in this consumer's own pipeline already), where the next step starts, and
    /// whether a reply was lost on the way (Redis may have given this consumer entries it did not see).
    private func reclaim(
        _ redis: RedisConnection, cursor: StreamEntryID, count: Int
    ) async throws -> (Machine.Batch?, StreamEntryID, replyLost: Bool) {
        inFlight.beginPendingRead()
        defer { inFlight.endPendingRead() }
        var replyLost = false
        let claim = try await readerRedis.retrying(doing: "claiming idle entries", logger: logger) {
            do {
                return try await redis.autoClaim(
                    stream, group: configuration.group, consumer: consumer, minimumIdle: configuration.claimIdle, start: cursor, count: count
                )
            } catch let error as RedisError where error.outcomeIsUnknown {
                replyLost = true
                throw error
            }
        }
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
        let claimed = entries.count
        entries.removeAll { inFlight.contains($0.id) }
        guard !entries.isEmpty else { return (nil, claim.next, replyLost) }
        logger.notice("claimed idle entries from other consumers", metadata: [LogKey.batchSize: "\(entries.count)"])
        return (try await redelivered(entries, read: claimed, redis), claim.next, replyLost)
    }

    /// Reads until a read succeeds. - Returns: its entries, and whether an attempt before it to
    /// read new entries failed after Redis may have run it (its reply was lost): it may have
    /// delivered entries this consumer never saw.
    private func readWithRetry(
        _ redis: RedisConnection, position: ReadPosition, count: Int, block: Duration?
    ) async throws -> (entries: [StreamEntry], replyLost: Bool) {
        var replyLost = false
        let entries = try await readerRedis.retrying(doing: "reading", logger: logger, probe: { try await Self.ping(redis) }) {
            do {
                return try await redis.readGroup(
                    configuration.group, consumer: consumer, from: stream, position: position, count: count, block: block
                )
            } catch let error as RedisError where error.code == .noGroup {
                // The stream or group was deleted under us; recreate it and read again.
                logger.warning("consumer group missing, creating it", metadata: [LogKey.error: "\(error)"])
                try await redis.createGroupIfMissing(configuration.group, on: stream)
                return []
            } catch let error as RedisError where error.outcomeIsUnknown && position == .new {
                replyLost = true
                throw error
            }
        }
        return (entries, replyLost)
    }

    /// Whether entries are pending on the group at all (in drain mode, another consumer's batch
    /// in flight, or entries a dead consumer left behind).
    private func othersHoldPending(_ redis: RedisConnection) async throws -> Bool {
        try await readerRedis.retrying(doing: "counting pending entries", logger: logger) {
            try await redis.pendingCount(stream, group: configuration.group) > 0
        }
    }

    /// Decodes and encodes entries; those that do not decode become dead letters.
    private func prepare(_ handedOver: HandedOver, takenAt: ContinuousClock.Instant) -> Batch {
        let read = handedOver.batch
        let decoder = WireDecoder(maximumEntryBytes: configuration.maximumEntryBytes)
        let entries = read.entries
        var batch = Batch(
            entries: entries, redelivered: read.redelivered, rows: BinaryCopyRows(reservingBytes: entries.count * 256),
            entryIndexOfRow: [], deadLetters: [], readAt: read.readAt, handedOverAt: handedOver.at, takenAt: takenAt
        )
        batch.entryIndexOfRow.reserveCapacity(entries.count)
        batch.deliveries = read.deliveries
        for (index, entry) in entries.enumerated() {
            // Fresh batches have no counts: skip hashing every id for nothing.
            let deliveries = read.deliveries.isEmpty ? 1 : read.deliveries[entry.id] ?? 1
            if deliveries > configuration.maximumDeliveries {
                logger.warning("entry delivered too often", metadata: [LogKey.entryID: "\(entry.id)", "deliveries": "\(deliveries)"])
                batch.deadLetters.append(DeadLetter(entry: entry, reason: "max_deliveries_exceeded", code: "max_deliveries_exceeded", deliveries: deliveries))
                continue
            }
            do {
                RowEncoder.append(try decoder.decode(entry, as: kind), id: entry.id, shard: shard, to: &batch.rows)
                batch.entryIndexOfRow.append(index)
            } catch {
                logger.warning("entry refused", metadata: [LogKey.entryID: "\(entry.id)", LogKey.reason: "\(error)"])
                batch.deadLetters.append(DeadLetter(entry: entry, reason: error.description, code: error.code.rawValue, deliveries: deliveries))
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

    private func sink(from batches: AsyncChannel<HandedOver>, breakers: SinkBreakers) async throws {
        try await RedisConnection.withConnection(configuration.redis.routed(by: stream), logger: logger, connectImmediately: false) { redis in
            // On the thread of the connection that acknowledges: only the insert hops.
            try await withTaskExecutorPreference(redis.taskExecutor) {
                let ledger = DeadLetterLedger(stream: stream)
                for await batch in batches {
                    try await process(prepare(batch, takenAt: ContinuousClock.now), redis: redis, breakers: breakers, ledger: ledger)
                    freedLanes.release()
                }
            }
        }
    }

    private func process(_ batch: Batch, redis: RedisConnection, breakers: SinkBreakers, ledger: DeadLetterLedger) async throws {
        let rows = batch.rows
        var deadLetters = batch.deadLetters
        let path: InsertPath = batch.redelivered ? .idempotent : .fast
        let clock = ContinuousClock()
        let insertStart = clock.now
        var outcome = InsertOutcome()
        if !rows.isEmpty {
            outcome = try await breakers.postgres.retrying(
                doing: "inserting", logger: logger, probe: { try await postgres.withConnection { _ = try await $0.execute("SELECT 1") } }
            ) {
                try await postgres.withConnection { try await $0.insert(rows, into: RowEncoder.target(for: kind), path: path) }
            }
        }
        for (rowIndex, error) in outcome.rejectedRows {
            let entry = batch.entries[batch.entryIndexOfRow[rowIndex]]
            let reason = "rejected_by_database: sqlstate \(error.sqlState ?? "?")"
            logger.warning("entry refused by the database", metadata: [LogKey.entryID: "\(entry.id)", LogKey.reason: "\(reason)"])
            deadLetters.append(DeadLetter(
                    entry: entry, reason: reason, code: "rejected_by_database", sqlState: error.sqlState, deliveries: batch.deliveries[entry.id] ?? 1
                ))
        }

        // End-to-end latency ends here, at the commit: what a query can see.
        let committedAtMicroseconds = Timestamp.microsecondsSinceEpochNow()
        let committedAt = Timestamp(millisecondsSinceEpoch: committedAtMicroseconds / 1000)
        let committedInstant = clock.now
        let insertDuration = insertStart.duration(to: committedInstant)
        var stages = BatchStages(
            buffered: batch.readAt.map { $0.duration(to: batch.handedOverAt) } ?? .zero, queued: batch.handedOverAt.duration(to: batch.takenAt),
            prepared: batch.takenAt.duration(to: insertStart), inserted: insertDuration, committedAtMicroseconds: committedAtMicroseconds
        )
        let ids = batch.entries.map(\.id)
        // The rows are committed: acknowledge their entries on their own. XACK adds nothing, so
        // Redis takes it even at maxmemory, where the dead letters' XADD is refused.
        let lettered = Set(deadLetters.map(\.entry.id))
        let stored = lettered.isEmpty ? ids : ids.filter { !lettered.contains($0) }
        _ = try await breakers.redis.retrying(doing: "acknowledging", logger: logger, probe: { try await Self.ping(redis) }) {
            try await redis.acknowledge(stored, in: stream, group: configuration.group)
        }
        let (written, skipped) = try await writeDeadLetters(deadLetters, redis: redis, breakers: breakers, ledger: ledger)
        stages.acknowledged = committedInstant.duration(to: clock.now)
        inFlight.remove(ids)
        logger.debug(
            "batch committed",
            metadata: [
                LogKey.batchSize: "\(batch.entries.count)", "inserted": "\(outcome.insertedRows)", "dead": "\(written.count)",
                "insert_duration": "\(insertDuration)", "total_duration": "\(insertStart.duration(to: clock.now))",
            ]
        )
        let acknowledged = stored.count + written.count + skipped.count
        let report = BatchReport(
            stream: stream, entries: acknowledged, insertedRows: outcome.insertedRows,
            duplicateRows: outcome.duplicateRows, deadLettered: written.count,
            path: outcome.fellBackToIdempotentPath ? .idempotent : path, committedAt: committedAt, acknowledgedAt: .now(),
            enqueuedAt: (stored + (written + skipped).map(\.entry.id)).map(\.timestamp), stages: stages
        )
        status?.recordBatch(report, deadLetterCodes: written.map(\.code), insertDuration: insertDuration)
        onBatch(report)
    }

    /// Writes each dead letter and acknowledges its entry in one MULTI/EXEC. Returns the letters
    /// written, and apart from them those whose entries had one already (acknowledged without a
    /// second: counted as acknowledged, not as dead lettered).
    ///
    /// - Important: Written at most once. An entry read again after its group was recreated may
    ///   have its letter already: ``DeadLetterLedger`` says which, and it is only acknowledged.
    ///   After a failure whose outcome is unknown (the reply was
    ///   lost: the MULTI may have run), only letters whose entries are still pending on this
    ///   consumer are written again; MULTI/EXEC is all or nothing, so "acknowledged" means "written".
    ///   When Redis refuses to add data (OOM at maxmemory), the letters are not written and their
    ///   entries stay pending, visibly, to be claimed again later; the pipeline goes on.
    private func writeDeadLetters(
        _ deadLetters: [DeadLetter], redis: RedisConnection, breakers: SinkBreakers, ledger: DeadLetterLedger
    ) async throws -> (written: [DeadLetter], skipped: [DeadLetter]) {
        guard !deadLetters.isEmpty else { return ([], []) }
        let lettered = try await breakers.redis.retrying(doing: "looking up dead letters", logger: logger, probe: { try await Self.ping(redis) }) {
            try await ledger.alreadyLettered(deadLetters, redis)
        }
        if !lettered.isEmpty {
            logger.warning(
                "entries read again already have a dead letter (their consumer group was recreated): acknowledged without a second",
                metadata: ["count": "\(lettered.count)"]
            )
        }
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
                    letters.map(\.entry.id), in: stream, group: configuration.group,
                    addingAtomically: letters.filter { !lettered.contains($0.entry.id) }.map { $0.command(from: stream, at: now) }
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
            return ([], [])
        }
        status?.problem(problemKey, nil)
        return (written.filter { !lettered.contains($0.entry.id) }, written.filter { lettered.contains($0.entry.id) })
    }

    static func ping(_ redis: RedisConnection) async throws {
        guard case .status("PONG") = try await redis.ping() else {
            throw RedisError(.unexpectedReply, "PING")
        }
    }
}

/// The ids of entries a consumer holds between reading and acknowledging them: at most a few
/// batches, each kept as its sorted ids, so the per-entry cost is one array per batch rather than
/// a hash per entry.
///
/// A claim's reply (or a re-read's of own pending entries) shows the pending list as it was when
/// Redis ran it: an entry a sink acknowledged after that and before the reply arrived is no longer
/// in flight, yet must not be stored again. So while such a read is outstanding
/// (``beginPendingRead()`` to ``endPendingRead()``), batches removed stay visible to
/// ``contains(_:)``; only for that round trip, so memory stays bounded.
final class InFlightEntries: Sendable {
    private struct State {
        var batches: [[StreamEntryID]] = []
        var readingPending = false
        var removedDuringRead: [[StreamEntryID]] = []
    }

    private let state = Mutex(State())

    func insert(_ entries: [StreamEntry]) {
        let ids = entries.map(\.id).sorted()
        state.withLock { $0.batches.append(ids) }
    }

    /// Removes the batch these ids were inserted as.
    func remove(_ removed: [StreamEntryID]) {
        guard let first = removed.min() else { return }
        state.withLock { state in
            guard let index = state.batches.firstIndex(where: { $0.first == first }) else { return }
            let batch = state.batches.remove(at: index)
            if state.readingPending { state.removedDuringRead.append(batch) }
        }
    }

    func beginPendingRead() {
        state.withLock { state in
            state.readingPending = true
            state.removedDuringRead = []
        }
    }

    func endPendingRead() {
        state.withLock { state in
            state.readingPending = false
            state.removedDuringRead = []
        }
    }

    var isEmpty: Bool { state.withLock { $0.batches.isEmpty } }

    /// In flight, or acknowledged since the outstanding claim or re-read began.
    func contains(_ id: StreamEntryID) -> Bool {
        state.withLock { state in
            state.batches.contains { Self.sorted($0, contain: id) } || state.removedDuringRead.contains { Self.sorted($0, contain: id) }
        }
    }

    /// Binary search in one batch's sorted ids.
    private static func sorted(_ ids: [StreamEntryID], contain id: StreamEntryID) -> Bool {
        var low = 0
        var high = ids.count
        while low < high {
            let middle = (low + high) / 2
            if ids[middle] < id { low = middle + 1 } else { high = middle }
        }
        return low < ids.count && ids[low] == id
    }
}

/// How sinks tell their reader that they are free again: a count the reader takes without
/// waiting, or waits for.
final class LaneSignal: Sendable {
    private struct State {
        var freed = 0
        var waiter: CheckedContinuation<Int, Never>?
    }

    private let state = Mutex(State())

    /// A sink is done with its batch.
    func release() {
        let waiter = state.withLock { state -> CheckedContinuation<Int, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.freed += 1
            return nil
        }
        waiter?.resume(returning: 1)
    }

    /// Sinks freed since the last call, without waiting.
    func takeFreed() -> Int {
        state.withLock { state in
            defer { state.freed = 0 }
            return state.freed
        }
    }

    /// Waits until a sink is freed; returns how many were (0 if the task was cancelled).
    func wait() async -> Int {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Int, Never>) in
                let ready = state.withLock { state -> Int? in
                    if state.freed > 0 || Task.isCancelled {
                        defer { state.freed = 0 }
                        return state.freed
                    }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Int, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: 0)
        }
    }
}

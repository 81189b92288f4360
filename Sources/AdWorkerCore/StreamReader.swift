import AdTelemetryRecords
import AdWorkerRedis
import AsyncAlgorithms
import Logging
import ServiceLifecycle

/// A consumer's reader: performs what its ``ConsumerStateMachine`` decides (reads of new and of
/// own pending entries, claims, hand-overs to the sinks) on a Redis connection of its own, and
/// feeds the machine what happened. It decides nothing itself.
struct StreamReader {
    let stream: String
    let consumer: String
    let configuration: WorkerConfiguration
    let logger: Logger
    let status: WorkerStatus?
    let breaker: CircuitBreaker
    let machine: SharedConsumerMachine
    let stageObserver: (any BatchStageObserver)?

    typealias Machine = SharedConsumerMachine.Machine

    /// What an action returned, fed to the machine with the next decision: one lock a step.
    private enum Outcome {
        case read([StreamEntry], replyLost: Bool)
        case redelivered(EntryBatch)
        case pendingChecked(othersHoldPending: Bool)
        case slept
    }

    /// Performs what the state machine decides, feeding it what happened, until it finishes.
    func run(into batches: AsyncChannel<EntryBatch>) async throws {
        let clock = ContinuousClock()
        try await RedisConnection.withConnection(configuration.redis.routed(by: stream), logger: logger, connectImmediately: false) { redis in
            // The loop runs on the connection's thread: each read is a call, not two thread hops.
            try await withTaskExecutorPreference(redis.taskExecutor) {
                var outcome: Outcome?
                while true {
                    // Reads run on the connection's own thread and do not see cancellation; check it here.
                    try Task.checkCancellation()
                    let shuttingDown = Task.isShuttingDownGracefully
                    let now = clock.now
                    let (action, caughtUp, bufferedSince) = machine.withMachine { machine in
                        let caughtUp = outcome.map { Self.feed($0, to: &machine, at: now) } ?? false
                        if shuttingDown { machine.shutDown() }
                        let bufferedSince = machine.oldestArrival
                        return (machine.nextAction(at: now), caughtUp, bufferedSince)
                    }
                    outcome = nil
                    if caughtUp { status?.caughtUp(stream: stream) }
                    switch action {
                    case .readOwnPending(let after, let count):
                        outcome = try await ownPending(redis, after: after, count: count).map { .redelivered($0) }
                    case .readNew(let count, let block):
                        let (entries, replyLost) = try await readWithRetry(redis, position: .new, count: count, block: block)
                        if replyLost { logLostReply(of: "reading") }
                        outcome = .read(entries, replyLost: replyLost)
                    case .claim(let cursor, let count):
                        outcome = try await reclaim(redis, cursor: cursor, count: count).map { .redelivered($0) }
                    case .handOff(let batch):
                        stageObserver.batch(batch, of: stream, consumer: consumer) { now in
                            .handedOver(buffered: batch.redelivered ? .zero : bufferedSince.map { $0.duration(to: now) } ?? .zero)
                        }
                        await batches.send(batch)
                    case .waitForSink:
                        await machine.waitForSink()
                    case .checkPending:
                        outcome = .pendingChecked(othersHoldPending: try await othersHoldPending(redis))
                    case .sleep(let duration):
                        try await Task.sleep(for: duration)
                        outcome = .slept
                    case .finish:
                        if configuration.drain { logger.debug("stream drained") }
                        return
                    }
                }
            }
        }
    }

    /// Feeds the machine what an action returned. Returns whether the stream is caught up:
    /// nothing new and nothing in this consumer's sinks (a batch still in a sink is not progress:
    /// that sink may be stuck).
    private static func feed(_ outcome: Outcome, to machine: inout Machine, at now: ContinuousClock.Instant) -> Bool {
        switch outcome {
        case .read(let entries, let replyLost):
            let caughtUp = entries.isEmpty && !machine.hasBatchesInFlight
            machine.readReturned(entries, at: now)
            if replyLost { machine.replyLost() }
            return caughtUp
        case .redelivered(let batch):
            machine.redeliveredCounted(batch)
        case .pendingChecked(let othersHoldPending):
            machine.pendingChecked(othersHoldPending: othersHoldPending, at: now)
        case .slept:
            machine.slept()
        }
        return false
    }

    private func logLostReply(of activity: String) {
        logger.notice("a reply was lost while \(activity): re-reading this consumer's pending entries")
    }

    /// A batch of entries delivered before, with their delivery counts.
    /// - Parameter read: How many entries the read that returned them held, those dropped from
    ///   `entries` (this consumer's already) included: that many may be pending between the first and the last.
    private func redelivered(_ entries: [StreamEntry], read: Int, _ redis: RedisConnection) async throws -> EntryBatch {
        var batch = EntryBatch(entries: entries, redelivered: true)
        guard let first = entries.first?.id, let last = entries.last?.id else { return batch }
        let pending = try await breaker.retrying(doing: "reading delivery counts", logger: logger) {
            try await recreatingGroup(redis, ifMissing: nil) {
                try await redis.pendingEntries(stream, group: configuration.group, in: first...last, count: read, consumer: consumer)
            }
        }
        // The group was gone: nothing is pending on the recreated one, which delivers these again.
        guard let pending else { return EntryBatch(entries: [], redelivered: true) }
        for entry in pending { batch.deliveries[entry.id] = entry.deliveries }
        return batch
    }

    /// This consumer's own pending entries after `after`, up to `count`: those a previous run
    /// left, or those of a read whose reply was lost. Returns those the machine does not hold
    /// already, with their delivery counts (nil when none).
    private func ownPending(_ redis: RedisConnection, after: StreamEntryID, count: Int) async throws -> EntryBatch? {
        let entries = try await readWithRetry(redis, position: .pending(after: after), count: count, block: nil).entries
        let left = machine.withMachine { $0.ownPendingReturned(entries, through: entries.last?.id) }
        guard !left.isEmpty else { return nil }
        logger.info("re-reading own pending entries", metadata: [LogKey.batchSize: "\(left.count)"])
        return try await redelivered(left, read: entries.count, redis)
    }

    /// One step of XAUTOCLAIM from `cursor`: takes over entries that another consumer (or an
    /// earlier incarnation of any) has held for longer than `claimIdle`. Returns those the
    /// machine does not hold already, with their delivery counts (nil when none); where the next
    /// step starts, and whether a reply was lost on the way (Redis may have given this consumer
    /// entries it did not see), go to the machine.
    private func reclaim(_ redis: RedisConnection, cursor: StreamEntryID, count: Int) async throws -> EntryBatch? {
        var replyLost = false
        let claim = try await breaker.retrying(doing: "claiming idle entries", logger: logger) {
            do {
                // The group gone: a pass that found nothing (the recreated group delivers everything again).
                var claim = try await recreatingGroup(redis, ifMissing: AutoClaim(next: StreamEntryID(milliseconds: 0, sequence: 0), entries: [], deleted: [])) {
                    try await redis.autoClaim(
                        stream, group: configuration.group, consumer: consumer, minimumIdle: configuration.claimIdle, start: cursor, count: count
                    )
                }
                // Inside the retry: a claim the replicas do not hold yet, or one made on a primary
                // a failover replaced, is an outcome to find out again, not the reader's end.
                claim.entries = try await replicated(claim.entries, on: redis, for: "claiming")
                return claim
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
        if replyLost { logLostReply(of: "claiming") }
        let now = ContinuousClock.now
        let left = machine.withMachine { machine in
            defer { if replyLost { machine.replyLost() } }
            return machine.claimReturned(entries, next: claim.next, at: now)
        }
        guard !left.isEmpty else { return nil }
        logger.notice("claimed idle entries from other consumers", metadata: [LogKey.batchSize: "\(left.count)"])
        return try await redelivered(left, read: entries.count, redis)
    }

    /// Reads until a read succeeds. - Returns: its entries, and whether an attempt before it to
    /// read new entries failed after Redis may have run it (its reply was lost): it may have
    /// delivered entries this consumer never saw.
    private func readWithRetry(
        _ redis: RedisConnection, position: ReadPosition, count: Int, block: Duration?
    ) async throws -> (entries: [StreamEntry], replyLost: Bool) {
        var replyLost = false
        let entries = try await breaker.retrying(doing: "reading", logger: logger, probe: { try await redis.ping() }) {
            do {
                let entries = try await recreatingGroup(redis, ifMissing: []) {
                    try await redis.readGroup(
                        configuration.group, consumer: consumer, from: stream, position: position, count: count, block: block
                    )
                }
                // A row is never made of an entry a failover may still take back (and give its
                // id to another record): with WAIT replicas, the entries go on once replicas have them.
                return try await replicated(entries, on: redis, for: "reading")
            } catch let error as RedisError where error.outcomeIsUnknown && position == .new {
                replyLost = true
                throw error
            }
        }
        return (entries, replyLost)
    }

    /// `entries` once the replicas hold them, with ADWORKER_REDIS_WAIT_REPLICAS: a row is never made
    /// of an entry a failover may still take back (and give its id to another record). Empty when
    /// the worker stops first: they stay pending, for the next run.
    private func replicated(_ entries: [StreamEntry], on redis: RedisConnection, for activity: String) async throws -> [StreamEntry] {
        guard let newest = entries.last?.id else { return entries }
        let gate = ReplicationGate(stream: stream, logger: logger, status: status, waits: configuration.redis.replicaWait != nil)
        let held = try await gate.wait(for: activity) {
            try await redis.waitForReplicas(holding: newest, of: stream, group: configuration.group, consumer: consumer)
        }
        return held ? entries : []
    }

    /// Whether entries are pending on the group at all (in drain mode, another consumer's batch
    /// in flight, or entries a dead consumer left behind).
    private func othersHoldPending(_ redis: RedisConnection) async throws -> Bool {
        // The group gone and recreated: say yes, so that a drain reads once more before it ends.
        try await breaker.retrying(doing: "counting pending entries", logger: logger) {
            try await recreatingGroup(redis, ifMissing: true) { try await redis.pendingCount(stream, group: configuration.group) > 0 }
        }
    }

    /// Runs one call on the consumer group; when the group (or the stream) was deleted under the
    /// worker, recreates it at 0 and answers `ifMissing`. Every group call of the reader goes
    /// through here: one that retried NOGROUP instead would retry for ever, the group never
    /// recreated (only a read used to recreate it, and a claim could come first).
    private func recreatingGroup<Result>(
        _ redis: RedisConnection, ifMissing: Result, _ call: () async throws -> Result
    ) async throws -> Result {
        do {
            return try await call()
        } catch let error as RedisError where error.code == .noGroup {
            logger.warning("consumer group missing, creating it", metadata: [LogKey.error: "\(error)"])
            try await redis.createGroupIfMissing(configuration.group, on: stream)
            return ifMissing
        }
    }
}

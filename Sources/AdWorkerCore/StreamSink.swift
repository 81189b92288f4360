import AdTelemetryRecords
import AdWorkerPostgres
import AdWorkerRedis
import AsyncAlgorithms
import Logging

/// Entries a sink took, decoded and encoded as COPY rows.
struct PreparedBatch: Sendable {
    /// What the reader handed over; `read.redelivered` entries may already be in the table.
    var read: EntryBatch
    var rows: BinaryCopyRows
    /// The entry each row came from.
    var entryIndexOfRow: [Int]
    /// Entries that did not decode, or were delivered too often.
    var deadLetters: [DeadLetter]
}

/// One of a consumer's sinks: takes a batch from the reader, decodes it, inserts its rows (one
/// transaction), acknowledges its entries, writes its dead letters, and reports the batch
/// committed to the consumer's machine, on connections of its own.
struct StreamSink {
    let kind: RecordKind
    /// The consumer's shard of the kind's stream (the stream itself when unsharded).
    let stream: String
    /// `stream`'s shard number, part of every row's key.
    let shard: Int16
    let consumer: String
    /// Shared by the sinks of every shard of `kind`.
    let postgres: PostgresPool
    let configuration: WorkerConfiguration
    let logger: Logger
    let status: WorkerStatus?
    let onBatch: @Sendable (BatchReport) -> Void
    let postgresBreaker: CircuitBreaker
    let redisBreaker: CircuitBreaker
    let machine: SharedConsumerMachine
    let stageObserver: (any BatchStageObserver)?

    func run(from batches: AsyncChannel<EntryBatch>) async throws {
        try await RedisConnection.withConnection(configuration.redis.routed(by: stream), logger: logger, connectImmediately: false) { redis in
            // On the thread of the connection that acknowledges: only the insert hops.
            try await withTaskExecutorPreference(redis.taskExecutor) {
                let ledger = DeadLetterLedger(stream: stream)
                for await batch in batches {
                    stageObserver.batch(batch, of: stream, consumer: consumer) { _ in .taken }
                    do {
                        try await process(prepare(batch), redis: redis, ledger: ledger)
                    } catch {
                        machine.failed(batch)
                        throw error
                    }
                    machine.committed(batch)
                }
            }
        }
    }

    /// Decodes and encodes entries; those that do not decode become dead letters.
    private func prepare(_ read: EntryBatch) -> PreparedBatch {
        let decoder = WireDecoder(maximumEntryBytes: configuration.maximumEntryBytes)
        let entries = read.entries
        var batch = PreparedBatch(read: read, rows: BinaryCopyRows(reservingBytes: entries.count * 256), entryIndexOfRow: [], deadLetters: [])
        batch.entryIndexOfRow.reserveCapacity(entries.count)
        for (index, entry) in entries.enumerated() {
            // Fresh batches have no counts: skip hashing every id for nothing.
            let deliveries = read.deliveries.isEmpty ? 1 : read.deliveries[entry.id] ?? 1
            if deliveries > configuration.maximumDeliveries {
                logger.warning("entry delivered too often", metadata: [LogKey.entryID: "\(entry.id)", "deliveries": "\(deliveries)"])
                batch.deadLetters.append(DeadLetter(entry: entry, reason: "max_deliveries_exceeded", code: .maxDeliveriesExceeded, deliveries: deliveries))
                continue
            }
            do {
                RowEncoder.append(try decoder.decode(entry, as: kind), id: entry.id, shard: shard, to: &batch.rows)
                batch.entryIndexOfRow.append(index)
            } catch {
                logger.warning("entry refused", metadata: [LogKey.entryID: "\(entry.id)", LogKey.reason: "\(error)"])
                batch.deadLetters.append(DeadLetter(entry: entry, reason: error.description, code: .undecodable(error.code), deliveries: deliveries))
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

    private func process(_ batch: PreparedBatch, redis: RedisConnection, ledger: DeadLetterLedger) async throws {
        let rows = batch.rows
        let path: InsertPath = batch.read.redelivered ? .idempotent : .fast
        let clock = ContinuousClock()
        stageObserver.batch(batch.read, of: stream, consumer: consumer) { _ in .prepared }
        let insertStart = clock.now
        var outcome = InsertOutcome()
        if !rows.isEmpty {
            outcome = try await postgresBreaker.retrying(
                doing: "inserting", logger: logger, probe: { try await postgres.withConnection { _ = try await $0.execute("SELECT 1") } }
            ) {
                try await postgres.withConnection { try await $0.insert(rows, into: RowEncoder.target(for: kind), path: path) }
            }
        }
        let deadLetters = batch.deadLetters + rejected(outcome, of: batch)
        // End-to-end latency ends here, at the commit: what a query can see.
        let committedAtMicroseconds = Timestamp.microsecondsSinceEpochNow()
        let insertDuration = insertStart.duration(to: clock.now)
        stageObserver.batch(batch.read, of: stream, consumer: consumer) { _ in .committed(microsecondsSinceEpoch: committedAtMicroseconds) }
        let ids = batch.read.entries.map(\.id)
        // The rows are committed: acknowledge their entries on their own. XACK adds nothing, so
        // Redis takes it even at maxmemory, where the dead letters' XADD is refused.
        let lettered = Set(deadLetters.map(\.entry.id))
        let stored = lettered.isEmpty ? ids : ids.filter { !lettered.contains($0) }
        _ = try await redisBreaker.retrying(doing: "acknowledging", logger: logger, probe: { try await redis.ping() }) {
            try await redis.acknowledge(stored, in: stream, group: configuration.group)
        }
        let (written, skipped) = try await writeDeadLetters(deadLetters, redis: redis, ledger: ledger)
        let report = BatchReport(
            stream: stream, entries: stored.count + written.count + skipped.count, insertedRows: outcome.insertedRows,
            duplicateRows: outcome.duplicateRows, deadLettered: written.count, path: outcome.fellBackToIdempotentPath ? .idempotent : path,
            committedAt: Timestamp(millisecondsSinceEpoch: committedAtMicroseconds / 1000), acknowledgedAt: .now(),
            enqueuedAt: (stored + (written + skipped).map(\.entry.id)).map(\.timestamp)
        )
        stageObserver.batch(batch.read, of: stream, consumer: consumer) { _ in .acknowledged(report) }
        logger.debug(
            "batch committed",
            metadata: [
                LogKey.batchSize: "\(batch.read.entries.count)", "inserted": "\(outcome.insertedRows)", "dead": "\(written.count)",
                "insert_duration": "\(insertDuration)", "total_duration": "\(insertStart.duration(to: clock.now))",
            ]
        )
        status?.recordBatch(report, deadLetterCodes: written.map(\.code), insertDuration: insertDuration)
        onBatch(report)
    }

    /// Dead letters for the rows the database refused (the insert bisected to find them).
    private func rejected(_ outcome: InsertOutcome, of batch: PreparedBatch) -> [DeadLetter] {
        outcome.rejectedRows.map { rowIndex, error in
            let entry = batch.read.entries[batch.entryIndexOfRow[rowIndex]]
            let reason = "rejected_by_database: sqlstate \(error.sqlState ?? "?")"
            logger.warning("entry refused by the database", metadata: [LogKey.entryID: "\(entry.id)", LogKey.reason: "\(reason)"])
            return DeadLetter(
                entry: entry, reason: reason, code: .rejectedByDatabase, sqlState: error.sqlState, deliveries: batch.read.deliveries[entry.id] ?? 1
            )
        }
    }

    /// With WAIT replicas, the batch goes on once replicas have its letters (or the worker stops,
    /// or the connection breaks): they are written either way, and a failover that takes the MULTI
    /// back takes its XACK with it, so the entry is read and lettered again, never lost.
    private func replicasHoldLetters(_ redis: RedisConnection) async {
        do {
            let gate = ReplicationGate(stream: stream, logger: logger, status: status, waits: configuration.redis.replicaWait != nil)
            _ = try await gate.wait(for: "writing dead letters") { try await redis.waitForReplicas() }
        } catch {
            logger.warning("dead letters written; whether replicas have them is unknown", metadata: ["error": "\(error)"])
        }
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
        _ deadLetters: [DeadLetter], redis: RedisConnection, ledger: DeadLetterLedger
    ) async throws -> (written: [DeadLetter], skipped: [DeadLetter]) {
        guard !deadLetters.isEmpty else { return ([], []) }
        let lettered = try await redisBreaker.retrying(doing: "looking up dead letters", logger: logger, probe: { try await redis.ping() }) {
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
        let written = try await redisBreaker.retrying(doing: "writing dead letters", logger: logger, probe: { try await redis.ping() }) {
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
                await replicasHoldLetters(redis)
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
}

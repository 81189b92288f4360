import AsyncAlgorithms
import Logging
import Postgres
import Redis
import ServiceLifecycle
import TelemetryRecords

/// One consumer of one stream, as three tasks joined by channels that each hold at most one
/// batch: a reader (XREADGROUP, batching), a preparer (decode and encode as COPY rows) and a sink
/// (insert, dead-letter, acknowledge). Reading, decoding and the COPY of three successive batches
/// overlap, on the Redis connection's thread, the cooperative pool and the libpq thread.
///
/// - Important: Entries are acknowledged only after their rows are committed (or their dead
///   letters written, in the same MULTI as the XACK). A crash at any point leaves them pending,
///   and the restarted consumer, having the same name, reads its pending entries first and
///   inserts them on the idempotent path.
struct StreamConsumer {
    /// Entries read together, decoded and encoded as COPY rows; `redelivered` ones may already be
    /// in the table.
    struct Batch: Sendable {
        var entries: [StreamEntry]
        var redelivered: Bool
        var rows: BinaryCopyRows
        /// The entry each row came from.
        var entryIndexOfRow: [Int]
        /// Entries that did not decode.
        var deadLetters: [DeadLetter]
    }

    let kind: RecordKind
    let stream: String
    let consumer: String
    let configuration: WorkerConfiguration
    let logger: Logger
    let onBatch: @Sendable (BatchReport) -> Void

    init(
        kind: RecordKind, slot: Int, configuration: WorkerConfiguration, logger: Logger,
        onBatch: @escaping @Sendable (BatchReport) -> Void
    ) {
        self.kind = kind
        self.stream = configuration.stream(for: kind)
        self.consumer = "\(configuration.consumerPrefix)-\(slot)"
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
    }

    func run() async throws {
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
                    await batches.send(prepare(read.entries, redelivered: read.redelivered))
                }
            }
            group.addTask {
                try await sink(from: batches)
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
            await batches.send(ReadBatch(entries: entries, redelivered: true))
        }
    }

    private func readNew(_ redis: RedisConnection, into batches: AsyncChannel<ReadBatch>) async throws {
        let clock = ContinuousClock()
        var batcher = Batcher<StreamEntry, ContinuousClock.Instant>(
            maximumSize: configuration.batchSize, maximumWait: configuration.maximumWait
        )
        let waitLimit = configuration.drain
            ? min(configuration.maximumWait, WorkerConfiguration.maximumReadBlock)
            : WorkerConfiguration.maximumReadBlock
        while !Task.isShuttingDownGracefully {
            try Task.checkCancellation()
            let wait = batcher.readWait(at: clock.now, limit: waitLimit)
            let entries = try await readWithRetry(redis, position: .new, count: batcher.remainingCapacity, block: wait)
            let now = clock.now
            batcher.append(contentsOf: entries, at: now)
            if batcher.isReady(at: now) {
                await batches.send(ReadBatch(entries: batcher.take(), redelivered: false))
            } else if entries.isEmpty && batcher.isEmpty && configuration.drain {
                logger.debug("stream drained")
                return
            }
        }
        // Shutting down: hand over what was read, so it is committed and acknowledged before exit.
        if !batcher.isEmpty {
            await batches.send(ReadBatch(entries: batcher.take(), redelivered: false))
        }
    }

    private func readWithRetry(
        _ redis: RedisConnection, position: ReadPosition, count: Int, block: Duration?
    ) async throws -> [StreamEntry] {
        var backoff = Backoff()
        while true {
            do {
                return try await redis.readGroup(
                    configuration.group, consumer: consumer, from: stream, position: position, count: count, block: block
                )
            } catch let error where error.code == .noGroup {
                // The stream or group was deleted under us; recreate it and go on.
                logger.warning("consumer group missing, creating it", metadata: [LogKey.error: "\(error)"])
                do {
                    try await redis.createGroupIfMissing(configuration.group, on: stream)
                } catch {
                    try await pause(&backoff, after: error, doing: "creating the consumer group")
                }
            } catch {
                try await pause(&backoff, after: error, doing: "reading")
            }
        }
    }

    /// Decodes and encodes entries; those that do not decode become dead letters.
    private func prepare(_ entries: [StreamEntry], redelivered: Bool) -> Batch {
        let decoder = WireDecoder(maximumEntryBytes: configuration.maximumEntryBytes)
        var batch = Batch(
            entries: entries, redelivered: redelivered, rows: BinaryCopyRows(reservingBytes: entries.count * 256),
            entryIndexOfRow: [], deadLetters: []
        )
        batch.entryIndexOfRow.reserveCapacity(entries.count)
        for (index, entry) in entries.enumerated() {
            do {
                RowEncoder.append(try decoder.decode(entry, as: kind), id: entry.id, to: &batch.rows)
                batch.entryIndexOfRow.append(index)
            } catch {
                logger.warning("entry refused", metadata: [LogKey.entryID: "\(entry.id)", LogKey.reason: "\(error)"])
                batch.deadLetters.append(DeadLetter(entry: entry, reason: error.description))
            }
        }
        return batch
    }

    // MARK: Sink

    private func sink(from batches: AsyncChannel<Batch>) async throws {
        try await PostgresConnection.withConnection(configuration.postgres, logger: logger, connectImmediately: false) { postgres in
            try await RedisConnection.withConnection(configuration.redis, logger: logger, connectImmediately: false) { redis in
                for await batch in batches {
                    try await process(batch, postgres: postgres, redis: redis)
                }
            }
        }
    }

    private func process(_ batch: Batch, postgres: PostgresConnection, redis: RedisConnection) async throws {
        let rows = batch.rows
        var deadLetters = batch.deadLetters
        let path: InsertPath = batch.redelivered ? .idempotent : .fast
        let clock = ContinuousClock()
        let insertStart = clock.now
        var backoff = Backoff()
        var outcome = InsertOutcome()
        while !rows.isEmpty {
            do {
                outcome = try await postgres.insert(rows, into: RowEncoder.target(for: kind), path: path)
                break
            } catch {
                try await pause(&backoff, after: error, doing: "inserting")
            }
        }
        for (rowIndex, error) in outcome.rejectedRows {
            let entry = batch.entries[batch.entryIndexOfRow[rowIndex]]
            let reason = "rejected_by_database: sqlstate \(error.sqlState ?? "?")"
            logger.warning("entry refused by the database", metadata: [LogKey.entryID: "\(entry.id)", LogKey.reason: "\(reason)"])
            deadLetters.append(DeadLetter(entry: entry, reason: reason, sqlState: error.sqlState))
        }

        let insertDuration = insertStart.duration(to: clock.now)
        let ids = batch.entries.map(\.id)
        let now = Timestamp.now()
        let deadLetterCommands = deadLetters.map { $0.command(from: stream, at: now) }
        backoff.reset()
        while true {
            do {
                try await redis.acknowledge(ids, in: stream, group: configuration.group, addingAtomically: deadLetterCommands)
                break
            } catch {
                try await pause(&backoff, after: error, doing: "acknowledging")
            }
        }
        logger.debug(
            "batch committed",
            metadata: [
                LogKey.batchSize: "\(batch.entries.count)", "inserted": "\(outcome.insertedRows)", "dead": "\(deadLetters.count)",
                "insert_duration": "\(insertDuration)", "total_duration": "\(insertStart.duration(to: clock.now))",
            ]
        )
        onBatch(
            BatchReport(
                stream: stream, entries: batch.entries.count, insertedRows: outcome.insertedRows,
                duplicateRows: outcome.duplicateRows, deadLettered: deadLetters.count,
                path: outcome.fellBackToIdempotentPath ? .idempotent : path, acknowledgedAt: .now(),
                enqueuedAt: ids.map(\.timestamp)
            )
        )
    }

    // MARK: Retry

    /// Sleeps for the next backoff delay after a failure; throws if the task is cancelled.
    private func pause(_ backoff: inout Backoff, after error: any Error, doing activity: String) async throws {
        let delay = backoff.nextDelay()
        logger.warning(
            "\(activity) failed, retrying",
            metadata: [LogKey.error: "\(error)", LogKey.attempt: "\(backoff.attempt)", LogKey.delay: "\(delay)"]
        )
        try await Task.sleep(for: delay)
    }
}

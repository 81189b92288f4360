public import AdTelemetryRecords
import AdWorkerRedis
public import Logging
import Metrics
public import ServiceLifecycle
import Synchronization

/// Sends training and inference records to Redis Streams from an API service.
///
/// Sends from any number of tasks are gathered and written as pipelined XADDs on one connection
/// with its own thread (one per stream when sharded or on a Redis Cluster), so thousands of sends
/// a second cost a few round trips and no send ever blocks a thread of Swift's cooperative pool.
/// The buffer is bounded: past it a send fails at once with `bufferFull` instead of waiting, or,
/// with a ``TelemetryProducerConfiguration/spoolDirectory``, a submitted record waits on disk.
///
/// Records Redis certainly did not store are held and sent again; every entry carries an
/// `origin` (this producer instance and a sequence number), so the records of a pipeline cut
/// mid-way are looked up in their stream and only the missing ones are sent again: none is
/// stored twice (README, "Record identities").
///
/// It reports through swift-metrics (whatever backend the host service bootstraps):
/// `adtelemetry_sent_total`, `adtelemetry_failed_total`, `adtelemetry_dropped_total` (buffer or
/// spool full, shut down), `adtelemetry_retried_total`, `adtelemetry_unknown_outcome_total`,
/// `adtelemetry_buffered`, `adtelemetry_spooled_records`, `adtelemetry_spooled_bytes`,
/// `adtelemetry_redis_recovery_seconds` and `adtelemetry_send_latency_seconds` (from `send` to
/// Redis's answer).
///
/// Run it as a `Service` (in your `ServiceGroup`, or `try await producer.run()` in a task):
/// ```swift
/// let producer = TelemetryProducer(configuration: .init(redis: .init(host: "127.0.0.1")), logger: logger)
/// async let _ = producer.run()
/// let id = try await producer.send(TrainingRecord(model: "fraud_detection", requestID: "r-1",
///                                                 input: JSONText(["amount": 12.5])))
/// ```
public actor TelemetryProducer: Service {
    private struct PendingSend {
        var commands: [RedisCommand]
        /// Each command's stream, as an index into ``streams``: which connection sends it.
        var routes: [Int]
        /// Each command's identity, as its `origin` field carries it.
        var origins: [RecordOrigin]
        /// Read back from the spool: that batch's record count, committed there once all are settled.
        var spoolBatch: Int?
        /// Each command's outcome; nil while it waits to be sent (again).
        var results: [Result<StreamEntryID, TelemetryProducerError>?]
        /// Non-nil while a command's outcome is unknown (its pipeline was cut): look for it in its
        /// stream from this id before sending it again.
        var lookFrom: [LookupStart?]
        /// Nil for ``submit(_:)``: nobody waits; the outcome goes to metrics and logs only.
        var continuation: CheckedContinuation<[Result<StreamEntryID, TelemetryProducerError>], Never>?
        var enqueuedAt: ContinuousClock.Instant
        /// When a command of this send was first held back for a retry.
        var firstRetryAt: ContinuousClock.Instant?

        init(
            _ encoded: EncodedRecords,
            continuation: CheckedContinuation<[Result<StreamEntryID, TelemetryProducerError>], Never>?, enqueuedAt: ContinuousClock.Instant
        ) {
            self.commands = encoded.commands
            self.routes = encoded.routes
            self.origins = encoded.origins
            self.results = Array(repeating: nil, count: commands.count)
            self.lookFrom = Array(repeating: nil, count: commands.count)
            self.continuation = continuation
            self.enqueuedAt = enqueuedAt
        }

        var outstanding: Int { results.count { $0 == nil } }

        init(spooled records: [SpooledRecord], routes: [Int], enqueuedAt: ContinuousClock.Instant) {
            self.commands = records.map(\.command)
            self.routes = routes
            self.origins = records.map(\.origin)
            self.spoolBatch = records.count
            self.results = Array(repeating: nil, count: records.count)
            self.lookFrom = records.map(\.lookFrom)
            self.continuation = nil
            self.enqueuedAt = enqueuedAt
        }
    }

    // Made per producer, not static: a service creates its producer after bootstrapping metrics.
    private nonisolated let sent = Counter(label: "adtelemetry_sent_total")
    private nonisolated let failed = Counter(label: "adtelemetry_failed_total")
    private nonisolated let buffered = Gauge(label: "adtelemetry_buffered")
    private nonisolated let sendLatency = Timer(label: "adtelemetry_send_latency_seconds")
    private nonisolated let retried = Counter(label: "adtelemetry_retried_total")
    private nonisolated let recovery = Timer(label: "adtelemetry_redis_recovery_seconds")

    private nonisolated func unknownOutcome(_ resolution: String, count: Int) {
        Counter(label: "adtelemetry_unknown_outcome_total", dimensions: [("resolution", resolution)]).increment(by: count)
    }

    private static let dropReasons = ["buffer_full", "shut_down", "spool_full", "spool_unwritable", "spool_damaged"]
    private nonisolated let spooledRecordsGauge = Gauge(label: "adtelemetry_spooled_records")
    private nonisolated let spooledBytesGauge = Gauge(label: "adtelemetry_spooled_bytes")

    private nonisolated func dropped(_ reason: String, count: Int) {
        Counter(label: "adtelemetry_dropped_total", dimensions: [("reason", reason)]).increment(by: count)
    }

    public nonisolated let configuration: TelemetryProducerConfiguration
    /// Every stream records go to: each kind's shards, training first.
    private nonisolated let streams: [String]
    /// One connection for everything on a single node with one shard (one pipeline for both
    /// streams, as always); otherwise one per stream, each following its stream's slot on a
    /// cluster, their pipelines sent concurrently.
    private nonisolated var connectionPerStream: Bool { configuration.layout.tagged }
    private let logger: Logger
    private var pending: [PendingSend] = []
    private var bufferedRecords = 0
    private var isClosed = false
    private var closedAt: ContinuousClock.Instant?
    /// Since when sends have been held back for retries (nil: Redis answers).
    private var unavailableSince: ContinuousClock.Instant?
    /// Open while ``run()`` runs, with ``TelemetryProducerConfiguration/spoolDirectory``.
    private var spool: RecordSpool?
    /// Records on disk, as far as this actor knows (appends under way included): while there are
    /// any, new ``submit(_:)`` records go there too, so they are sent in order.
    private var spooledRecords = 0
    /// The spool holds records for a stream this configuration does not write: it is not read.
    private var spoolBlocked = false
    /// Records of the batch read back from the spool and being sent (counted in ``spooledRecords``).
    private var spoolBatchInFlight = 0
    /// When the spool's disk last refused records.
    private var spoolRefusedAt: ContinuousClock.Instant?
    /// ``submit(_:)`` calls between choosing the spool and its answer.
    private var submitSpills = 0
    /// This producer's ``RecordOrigin/instance``, random per start.
    private nonisolated let instance = UInt64.random(in: .min ... .max)
    private nonisolated let lastSequence = Atomic<UInt64>(0)
    private nonisolated let wakeups: AsyncStream<Void>
    private nonisolated let wakeupContinuation: AsyncStream<Void>.Continuation

    /// - Parameters:
    ///   - configuration: Redis address, stream prefix and buffer bounds.
    ///   - logger: Log keys are prefixed `adtelemetry_`, since they land in the host service's logs.
    public init(configuration: TelemetryProducerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.streams = RecordKind.allCases.flatMap { configuration.layout.streams(kind: $0.rawValue) }
        self.logger = logger
        (wakeups, wakeupContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        // Every drop series exists from the start at 0: a rule's increase() cannot see the first
        // drops of a series that appears already holding them.
        for reason in Self.dropReasons { dropped(reason, count: 0) }
        for resolution in ["stored", "resent"] { unknownOutcome(resolution, count: 0) }
    }

    /// Sends a training record. - Returns: the entry id Redis assigned.
    public nonisolated func send(_ record: TrainingRecord) async throws(TelemetryProducerError) -> StreamEntryID {
        try await send([.training(record)])[0].get()
    }

    /// Sends an inference record. - Returns: the entry id Redis assigned.
    public nonisolated func send(_ record: InferenceRecord) async throws(TelemetryProducerError) -> StreamEntryID {
        try await send([.inference(record)])[0].get()
    }

    /// Sends a complete API request: its training and inference records, in the same pipeline.
    /// - Parameters:
    ///   - training: What the model was asked.
    ///   - inference: What it answered; must carry the same `requestID`.
    /// - Returns: Both entry ids.
    public nonisolated func send(
        training: TrainingRecord, inference: InferenceRecord
    ) async throws(TelemetryProducerError) -> (training: StreamEntryID, inference: StreamEntryID) {
        guard training.requestID == inference.requestID else {
            throw TelemetryProducerError(
                .invalidRequest, "a complete API request shares one request id: training has \(training.requestID), inference \(inference.requestID)"
            )
        }
        let results = try await send([.training(training), .inference(inference)])
        return (try results[0].get(), try results[1].get())
    }

    /// Sends many records in one go (bulk loads, `adworker produce`).
    /// - Parameter records: Sent in order; each goes to its kind's stream.
    /// - Returns: One result per record: its entry id, or why that one failed.
    /// - Throws: Only when nothing was queued (buffer full, shut down).
    public nonisolated func send(
        _ records: [TelemetryRecord]
    ) async throws(TelemetryProducerError) -> [Result<StreamEntryID, TelemetryProducerError>] {
        try await enqueue(encode(records))
    }

    struct EncodedRecords {
        var commands: [RedisCommand] = []
        var routes: [Int] = []
        var origins: [RecordOrigin] = []
    }

    /// Encoding happens on the caller's task, not on the actor or the connection thread.
    private nonisolated func encode(_ records: [TelemetryRecord]) -> EncodedRecords {
        let layout = configuration.layout
        var encoded = EncodedRecords()
        encoded.commands.reserveCapacity(records.count)
        encoded.routes.reserveCapacity(records.count)
        encoded.origins.reserveCapacity(records.count)
        for record in records {
            let (kind, requestID) =
                switch record {
                case .training(let training): (0, training.requestID)
                case .inference(let inference): (1, inference.requestID)
                }
            let route = kind * layout.count + layout.shard(forRequestID: requestID)
            var command = RedisCommand.streamAdd(to: streams[route])
            WireFormat.encode(record, into: &command)
            let origin = RecordOrigin(instance: instance, sequence: lastSequence.wrappingAdd(1, ordering: .relaxed).newValue)
            command.writeField(WireFormat.FieldName.origin, origin.fieldValue)
            encoded.commands.append(command)
            encoded.routes.append(route)
            encoded.origins.append(origin)
        }
        return encoded
    }

    /// Queues records and returns at once, without waiting for Redis: for request handlers that
    /// must not be slowed by telemetry. Past the memory buffer, while Redis is away, or while the
    /// spool holds records, they go to the spool (if configured), written before this returns.
    /// Sent and failed records show in the producer's metrics (`adtelemetry_sent_total`,
    /// `adtelemetry_failed_total`) and failures in its log.
    /// - Throws: `bufferFull`, `spoolUnwritable` or `shutDown` when the records were not kept (also
    ///   counted in `adtelemetry_dropped_total`); all records of one call are kept or none.
    public nonisolated func submit(_ records: [TelemetryRecord]) async throws(TelemetryProducerError) {
        let encoded = encode(records)
        guard let spool = try await enqueueOrSpill(encoded) else { return }
        let outcome = await spill(
            encoded.commands.indices.map {
                SpooledRecord(stream: streams[encoded.routes[$0]], command: encoded.commands[$0], origin: encoded.origins[$0], lookFrom: nil)
            },
            to: spool, allOrNothing: true
        )
        await submitSpilled()
        switch outcome.refusal {
        case nil: return
        case .full: throw TelemetryProducerError(.bufferFull, "records not kept: the memory buffer is full and \(outcome.refusal!)")
        case .unwritable: throw TelemetryProducerError(.spoolUnwritable, "records not kept: \(outcome.refusal!)")
        }
    }

    /// Writes records to the spool (counted in ``spooledRecords`` already); those it refuses are
    /// counted as dropped (`spool_full`, `spool_unwritable`).
    private nonisolated func spill(_ records: [SpooledRecord], to spool: RecordSpool, allOrNothing: Bool = false) async -> RecordSpool.AppendOutcome {
        let outcome = await spool.append(records, allOrNothing: allOrNothing)
        await spilled(refused: outcome.refused, refusal: outcome.refusal, spool: spool)
        switch outcome.refusal {
        case nil: break
        case .full: dropped("spool_full", count: outcome.refused)
        case .unwritable: dropped("spool_unwritable", count: outcome.refused)
        }
        return outcome
    }

    private func reserveSpool(_ count: Int) { spooledRecords += count }

    private func spilled(refused: Int, refusal: RecordSpool.Refusal?, spool: RecordSpool) async {
        spooledRecords -= refused
        if case .unwritable = refusal { spoolRefusedAt = .now }
        await reportSpool(spool)
        wakeupContinuation.yield()
    }

    private nonisolated func reportSpool(_ spool: RecordSpool) async {
        let (records, bytes) = await spool.counts
        spooledRecordsGauge.record(records)
        spooledBytesGauge.record(bytes)
    }

    /// ``submit(_:)`` for a complete API request.
    public nonisolated func submit(training: TrainingRecord, inference: InferenceRecord) async throws(TelemetryProducerError) {
        guard training.requestID == inference.requestID else {
            throw TelemetryProducerError(
                .invalidRequest, "a complete API request shares one request id: training has \(training.requestID), inference \(inference.requestID)"
            )
        }
        try await submit([.training(training), .inference(inference)])
    }

    /// Records queued and not yet answered by Redis.
    public var bufferedCount: Int { bufferedRecords }

    /// Records waiting in the spool on local disk (with a ``TelemetryProducerConfiguration/spoolDirectory``).
    public var spooledCount: Int { spooledRecords }

    /// Queues records in memory, or returns the spool they go to instead: when memory is full,
    /// Redis is away, or the spool holds records not yet handed out (which go first).
    private func enqueueOrSpill(_ encoded: EncodedRecords) throws(TelemetryProducerError) -> RecordSpool? {
        let count = encoded.commands.count
        // The batch being sent from the spool is not waiting: once it is all that is left, new
        // records go to memory again, though records keep coming while it is out.
        let waitingOnDisk = spooledRecords - spoolBatchInFlight > 0
        if let spool, !isClosed, waitingOnDisk || (unavailableSince != nil && spoolTakesRecords) || bufferedRecords + count > configuration.maximumBufferedRecords {
            spooledRecords += count
            submitSpills += 1
            return spool
        }
        try admit(count)
        pending.append(PendingSend(encoded, continuation: nil, enqueuedAt: .now))
        wakeupContinuation.yield()
        return nil
    }

    /// Whether records go to the spool while Redis is away: not for a while after its disk refused
    /// one (full, an I/O error), so that they wait in memory, as without a spool, and are not refused.
    private var spoolTakesRecords: Bool {
        spoolRefusedAt.map { $0.duration(to: .now) > .seconds(5) } ?? true
    }

    private func submitSpilled() { submitSpills -= 1 }

    /// Waits (at most 2 s) for ``submit(_:)`` calls writing to the spool: it is closed after them.
    private func awaitSubmitSpills() async {
        let deadline = ContinuousClock.now + .seconds(2)
        while submitSpills > 0, .now < deadline { try? await Task.sleep(for: .milliseconds(1)) }
    }

    private func enqueue(
        _ encoded: EncodedRecords
    ) async throws(TelemetryProducerError) -> [Result<StreamEntryID, TelemetryProducerError>] {
        try admit(encoded.commands.count)
        let now = ContinuousClock.now
        return await withCheckedContinuation { continuation in
            pending.append(PendingSend(encoded, continuation: continuation, enqueuedAt: now))
            self.wakeupContinuation.yield()
        }
    }

    /// Counts `count` more records into the bounded buffer, or refuses them.
    private func admit(_ count: Int) throws(TelemetryProducerError) {
        guard !isClosed else {
            dropped("shut_down", count: count)
            throw TelemetryProducerError(.shutDown, "the producer has stopped")
        }
        guard bufferedRecords + count <= configuration.maximumBufferedRecords else {
            dropped("buffer_full", count: count)
            throw TelemetryProducerError(.bufferFull, "\(bufferedRecords) records are waiting to be sent")
        }
        bufferedRecords += count
        buffered.record(bufferedRecords)
    }

    /// Sends queued records until graceful shutdown, then sends what was queued before it and returns.
    /// - Throws: When the spool directory cannot be used (the error says why), before anything is sent.
    public nonisolated func run() async throws {
        let spool = try configuration.spoolDirectory.map {
            try RecordSpool(directory: $0, maximumBytes: configuration.maximumSpoolBytes, logger: logger)
        }
        if let spool { await attach(spool) }
        let routed = connectionPerStream ? streams.map { configuration.redis.routed(by: $0) } : [configuration.redis]
        try await RedisConnection.withConnections(routed, logger: logger, connectImmediately: false) { connections in
            await withTaskGroup(of: Void.self) { background in
                if let spool {
                    // The spool's fsync policy: once a second (and at the end).
                    background.addTask {
                        while (try? await Task.sleep(for: .seconds(1))) != nil { await spool.sync() }
                    }
                }
                await withGracefulShutdownHandler {
                    var lastConfirmed = [StreamEntryID?](repeating: nil, count: streams.count)
                    for await _ in wakeups {
                        await flushPending(connections, lastConfirmed: &lastConfirmed)
                    }
                    await close()
                    await flushPending(connections, lastConfirmed: &lastConfirmed)
                } onGracefulShutdown: {
                    self.wakeupContinuation.finish()
                    // At once, not after the flush under way: it may be retrying while Redis is away.
                    Task { await self.close() }
                }
                background.cancelAll()
            }
        }
        if let spool {
            // Closed, nothing new chooses the spool; a submit already writing to it finishes first.
            await awaitSubmitSpills()
            await reportSpool(spool)
            // Its thread ends here: nothing may call the spool after this.
            await spool.finish()
        }
    }

    private func attach(_ spool: RecordSpool) async {
        self.spool = spool
        spooledRecords = await spool.recordCount
        // Damage found on opening: those records were never counted here.
        dropped("spool_damaged", count: await spool.takeUnreadable())
        await reportSpool(spool)
        if spooledRecords > 0 {
            logger.notice("adtelemetry: records spooled by an earlier run are sent first", metadata: ["adtelemetry_spooled": "\(spooledRecords)"])
            wakeupContinuation.yield()
        }
    }

    /// Moves the spool's next batch into memory when memory has room; one batch at a time, so
    /// while Redis is away that batch is what keeps asking it.
    /// - Returns: Whether a batch was queued.
    private func loadFromSpool() async -> Bool {
        guard let spool, !isClosed, !spoolBlocked else { return false }
        let room = configuration.maximumBufferedRecords - bufferedRecords
        guard room > 0 else { return false }
        let records = await spool.takeBatch(maximum: min(room, configuration.maximumPipelineLength), nowMilliseconds: UInt64(Timestamp.now().millisecondsSinceEpoch))
        let unreadable = await spool.takeUnreadable()
        if unreadable > 0 {
            spooledRecords -= unreadable
            dropped("spool_damaged", count: unreadable)
            await reportSpool(spool)
        }
        guard !records.isEmpty else { return false }
        var routes: [Int] = []
        for record in records {
            guard let route = streams.firstIndex(of: record.stream) else {
                await spool.release()
                spoolBlocked = true
                logger.error(
                    "adtelemetry: the spool holds records for a stream this configuration does not write; they stay on disk: run with the shard count and stream prefix they were written with until the spool is empty",
                    metadata: ["adtelemetry_stream": "\(record.stream)", "adtelemetry_spool": "\(spool.directory)"]
                )
                return false
            }
            routes.append(route)
        }
        bufferedRecords += records.count
        buffered.record(bufferedRecords)
        spoolBatchInFlight = records.count
        pending.append(PendingSend(spooled: records, routes: routes, enqueuedAt: .now))
        return true
    }

    /// A batch from the spool is settled: it leaves the spool, or (not all stored by shutdown)
    /// stays for the next start.
    private func settleSpoolBatch(records: Int, complete: Bool) async {
        guard let spool else { return }
        spoolBatchInFlight = 0
        if complete {
            await spool.commit(records: records)
            spooledRecords -= records
        } else {
            await spool.release()
        }
        await reportSpool(spool)
    }

    private func close() {
        guard !isClosed else { return }
        isClosed = true
        closedAt = .now
    }

    /// Takes up to one pipeline's worth of sends (whole sends only).
    private func takePending() -> [PendingSend] {
        var taken = 0
        var count = 0
        for send in pending {
            let outstanding = send.outstanding
            if count > 0 && count + outstanding > configuration.maximumPipelineLength { break }
            count += outstanding
            taken += 1
        }
        let batch = Array(pending.prefix(taken))
        pending.removeFirst(taken)
        return batch
    }

    /// One pipeline. A failure of the whole pipeline is every command's failure.
    private nonisolated func add(_ commands: [RedisCommand], on redis: RedisConnection) async -> [Result<StreamEntryID, RedisError>] {
        do {
            return try await redis.add(commands)
        } catch {
            return Array(repeating: .failure(error), count: commands.count)
        }
    }

    /// Whether a failed XADD certainly did not run, so sending it again cannot store it twice:
    /// no connection (nothing was written), or an error reply (LOADING, BUSY, TRYAGAIN,
    /// CLUSTERDOWN, OOM, a slot still moving).
    static func isSafeToResend(_ error: RedisError) -> Bool {
        switch error.code {
        case .connectionFailed, .serverBusy, .outOfMemory, .clusterDown, .redirected: true
        default: false
        }
    }

    /// Whether Redis may or may not have run a failed XADD: its connection broke or its reply did
    /// not come in time. Such a record is looked for in its stream before it is sent again.
    static func hasUnknownOutcome(_ error: RedisError) -> Bool {
        switch error.code {
        case .connectionLost, .timeout: true
        default: false
        }
    }

    private func finished(_ records: Int) {
        bufferedRecords -= records
        buffered.record(bufferedRecords)
    }

    /// What a flush round needs to know, in one visit to the actor: when the producer closed, its
    /// spool, whether submitted records go there as soon as Redis does not take them, and, while
    /// Redis is away, the queued sends of ``submit(_:)``, taken out of memory to go there too: on
    /// disk a crash of the process does not lose them (README, "The spool").
    private func beginRound() -> (closedAt: ContinuousClock.Instant?, spool: RecordSpool?, writesThrough: Bool, queued: [PendingSend]) {
        let writesThrough = spool != nil && spoolTakesRecords
        guard writesThrough, unavailableSince != nil else { return (closedAt, spool, writesThrough, []) }
        let queued = pending.filter(Self.writesThrough)
        pending.removeAll(where: Self.writesThrough)
        return (closedAt, spool, writesThrough, queued)
    }

    /// Puts sends with commands still to retry back at the front, in their order.
    private func requeue(_ sends: [PendingSend]) {
        pending.insert(contentsOf: sends, at: 0)
    }

    /// How long a held-back record may keep waiting; after shutdown (`closedAt`), at most the shutdown grace.
    /// Records read back from the spool have none until shutdown, and none after it: they are on disk anyway.
    private nonisolated func retryDeadline(for send: PendingSend, closedAt: ContinuousClock.Instant?) -> ContinuousClock.Instant {
        let deadline = (send.firstRetryAt ?? .now) + (send.spoolBatch == nil ? configuration.maximumRetryDuration : .seconds(365 * 86400))
        guard let closedAt else { return deadline }
        // A spool batch is on disk already: a stop does not wait for Redis to take it.
        return min(deadline, closedAt + (send.spoolBatch == nil ? configuration.shutdownRetryDuration : .zero))
    }

    /// Logs once when sending stops and once when it resumes, with how long Redis was away.
    /// - Parameter confirmed: Whether Redis stored any record this round (records given up are no sign it is back).
    private func noteAvailability(heldBack: Int, confirmed: Bool, error: RedisError?) {
        if heldBack > 0, unavailableSince == nil {
            unavailableSince = .now
            logger.warning(
                "adtelemetry: redis is not taking records; holding them and retrying",
                metadata: ["adtelemetry_error": "\(error.map(\.description) ?? "?")", "adtelemetry_buffered": "\(bufferedRecords)"]
            )
        } else if heldBack == 0, confirmed, let since = unavailableSince {
            unavailableSince = nil
            let away = since.duration(to: .now)
            recovery.record(duration: away)
            logger.notice("adtelemetry: redis takes records again", metadata: ["adtelemetry_unavailable_for": "\(away)"])
        }
    }

    /// Sends pipelines until nothing is pending. `lastConfirmed` holds each stream's newest id
    /// Redis confirmed: where to look for records of a pipeline cut later.
    private nonisolated func flushPending(_ connections: [RedisConnection], lastConfirmed: inout [StreamEntryID?]) async {
        var backoff = RetryBackoff()
        // A spool batch given up (shutting down, or cancelled) stays on disk: not read again now,
        // or this loop would take it, give it up and take it again without end.
        var spoolBatchReleased = false
        while true {
            var sends = await takePending()
            if sends.isEmpty {
                // Memory is sent: the spool's next batch, if Redis answers.
                guard !spoolBatchReleased, await loadFromSpool() else { return }
                continue
            }
            let (closedAt, spool, writesThrough, queued) = await beginRound()
            for var send in queued {
                for index in send.results.indices where send.results[index] == nil {
                    send.results[index] = .failure(TelemetryProducerError(.redisUnavailable, "redis is not taking records"))
                }
                sends.append(send)
            }
            let lookup = await settleUnknownOutcomes(&sends, on: connections, closedAt: closedAt, writesThrough: writesThrough)
            // Only what is not settled yet goes out: a retried send keeps its earlier successes.
            var outstanding: [(send: Int, command: Int)] = []
            for (sendIndex, send) in sends.enumerated() {
                for (commandIndex, result) in send.results.enumerated() where result == nil && send.lookFrom[commandIndex] == nil {
                    outstanding.append((sendIndex, commandIndex))
                }
            }
            let commands = outstanding.map { sends[$0.send].commands[$0.command] }
            let routes = outstanding.map { sends[$0.send].routes[$0.command] }
            let sentAt = UInt64(Timestamp.now().millisecondsSinceEpoch)
            let results = commands.isEmpty ? [] : await pipeline(commands, routes: routes, on: connections)
            let now = ContinuousClock.now
            for (position, route) in routes.enumerated() {
                if case .success(let id) = results[position], lastConfirmed[route].map({ $0 < id }) ?? true { lastConfirmed[route] = id }
            }
            // Records still to be looked for wait, like those held back: Redis is not answering.
            let stillUnknown = sends.reduce(0) { send, pending in send + pending.lookFrom.indices.count { pending.lookFrom[$0] != nil && pending.results[$0] == nil } }
            var heldBack = 0
            var spilledNow = 0
            var lastError = lookup.error
            for (position, place) in outstanding.enumerated() {
                switch results[position] {
                case .success(let id):
                    sends[place.send].results[place.command] = .success(id)
                case .failure(let error):
                    lastError = error
                    let unknown = Self.hasUnknownOutcome(error)
                    if unknown {
                        // Looked for before it is sent again, here or (given up) from the spool.
                        sends[place.send].lookFrom[place.command] = UnknownOutcomeLookup.start(
                            lastConfirmed: lastConfirmed[routes[position]], sentAtMilliseconds: sentAt)
                    }
                    let deadline = retryDeadline(for: sends[place.send], closedAt: closedAt)
                    if writesThrough, Self.writesThrough(sends[place.send]), Self.failure(error).code == .redisUnavailable {
                        // Given up at once, to the spool: there it survives a crash; here it would not.
                        sends[place.send].results[place.command] = .failure(Self.failure(error))
                        spilledNow += 1
                    } else if now < deadline, !Task.isCancelled, unknown || Self.isSafeToResend(error) {
                        sends[place.send].firstRetryAt = sends[place.send].firstRetryAt ?? now
                        heldBack += 1
                    } else {
                        sends[place.send].results[place.command] = .failure(Self.failure(error))
                    }
                }
            }
            if heldBack > 0 { retried.increment(by: heldBack) }
            let confirmed = lookup.found > 0 || results.contains { if case .success = $0 { true } else { false } }
            await noteAvailability(heldBack: heldBack + stillUnknown + spilledNow + lookup.spilled, confirmed: confirmed, error: lastError)
            var unsettled: [PendingSend] = []
            var settledRecords = 0
            for send in sends {
                guard send.outstanding == 0 else {
                    unsettled.append(send)
                    continue
                }
                let results = send.results.map { $0! }
                // Given up while Redis was away (not refused by it): kept by the spool, if any.
                let givenUp = results.indices.filter { if case .failure(let error) = results[$0] { error.code == .redisUnavailable } else { false } }
                if let batch = send.spoolBatch {
                    await settleSpoolBatch(records: batch, complete: givenUp.isEmpty)
                    settledRecords += results.count
                    guard givenUp.isEmpty else {
                        spoolBatchReleased = true
                        continue
                    }
                }
                var spooled = 0
                if let spool, Self.writesThrough(send), !givenUp.isEmpty {
                    let records = givenUp.map {
                        SpooledRecord(stream: streams[send.routes[$0]], command: send.commands[$0], origin: send.origins[$0], lookFrom: send.lookFrom[$0])
                    }
                    await reserveSpool(records.count)
                    spooled = await spill(records, to: spool).appended
                }
                let successes = results.count { if case .success = $0 { true } else { false } }
                sent.increment(by: successes)
                failed.increment(by: results.count - successes - spooled)
                if successes + spooled < results.count {
                    logger.warning(
                        "adtelemetry send failed", metadata: ["adtelemetry_records": "\(results.count - successes - spooled)", "adtelemetry_error": "\(lastError.map(\.description) ?? "?")"]
                    )
                }
                sendLatency.record(duration: send.enqueuedAt.duration(to: now))
                send.continuation?.resume(returning: results)
                if send.spoolBatch == nil { settledRecords += results.count }
            }
            await finished(settledRecords)
            if !unsettled.isEmpty {
                await requeue(unsettled)
                try? await Task.sleep(for: backoff.next())
            } else {
                backoff = RetryBackoff()
            }
        }
    }

    /// Whether a send's records go to the spool (when there is one) as soon as Redis does not take
    /// them: ``submit(_:)``'s, whose callers do not wait. `send` callers are told the outcome, and
    /// a spool batch is on disk already.
    private static func writesThrough(_ send: PendingSend) -> Bool {
        send.continuation == nil && send.spoolBatch == nil
    }

    private static func failure(_ error: RedisError) -> TelemetryProducerError {
        TelemetryProducerError(error.isTransient ? .redisUnavailable : .rejected, error.message, underlying: error)
    }

    /// For every command whose outcome is unknown: reads its stream from where it may be, and
    /// settles those Redis holds with their ids; the rest are cleared to be sent again. A stream
    /// that cannot be read yet keeps its commands unknown, until the retry deadline fails them.
    /// - Returns: How many records Redis was found to hold, how many were given up to the spool,
    ///   and the last lookup's error, if one failed.
    /// - Parameter writesThrough: There is a spool: ``writesThrough(_:)`` records whose lookup
    ///   failed for want of Redis go there at once, keeping where to look from.
    private nonisolated func settleUnknownOutcomes(
        _ sends: inout [PendingSend], on connections: [RedisConnection], closedAt: ContinuousClock.Instant?, writesThrough: Bool
    ) async -> (found: Int, spilled: Int, error: RedisError?) {
        var lookupError: RedisError?
        var found = 0
        var spilled = 0
        var byRoute: [Int: [(send: Int, command: Int)]] = [:]
        for (sendIndex, send) in sends.enumerated() {
            for (commandIndex, start) in send.lookFrom.enumerated() where start != nil && send.results[commandIndex] == nil {
                byRoute[send.routes[commandIndex], default: []].append((sendIndex, commandIndex))
            }
        }
        for (route, places) in byRoute.sorted(by: { $0.key < $1.key }) {
            let starts = places.map { sends[$0.send].lookFrom[$0.command]! }
            let wanted = Set(places.map { sends[$0.send].origins[$0.command] })
            let connection = connections.count == 1 ? connections[0] : connections[route]
            do {
                let redisAhead = try await starts.contains { if case .sentAt = $0 { true } else { false } } ? redisClockAhead(on: connection) : 0
                let start = starts.map { UnknownOutcomeLookup.entryID(for: $0, redisAhead: redisAhead) }.min()!
                let stored = try await lookUp(wanted, in: streams[route], from: start, on: connection)
                for place in places {
                    sends[place.send].lookFrom[place.command] = nil
                    if let id = stored[sends[place.send].origins[place.command]] { sends[place.send].results[place.command] = .success(id) }
                }
                found += stored.count
                unknownOutcome("stored", count: stored.count)
                unknownOutcome("resent", count: places.count - stored.count)
            } catch {
                lookupError = error
                let now = ContinuousClock.now
                // Given up, the record keeps its lookFrom: spooled, it is looked for again later.
                let toSpool = writesThrough && Self.failure(error).code == .redisUnavailable
                for place in places {
                    if toSpool && Self.writesThrough(sends[place.send]) {
                        spilled += 1
                    } else if now < retryDeadline(for: sends[place.send], closedAt: closedAt) && !Task.isCancelled {
                        continue
                    }
                    sends[place.send].results[place.command] = .failure(Self.failure(error))
                }
            }
        }
        return (found, spilled, lookupError)
    }

    /// Redis's clock less this host's, in milliseconds, from a `TIME` on `connection`: entry ids
    /// come from Redis's clock, whatever this host's says.
    /// An ACL without `+time` (written before the producer asked for it) gets this host's clock,
    /// with a warning, rather than no lookup at all.
    private nonisolated func redisClockAhead(on connection: RedisConnection) async throws(RedisError) -> Int64 {
        let before = Timestamp.now().millisecondsSinceEpoch
        let redis: Int64
        do {
            redis = try await connection.serverTimeMilliseconds()
        } catch where error.code == .noPermission {
            logger.warning(
                "adtelemetry: redis refuses TIME (NOPERM): looking up records by this host's clock, which may differ from Redis's; add +time to the producer's ACL user",
                metadata: ["adtelemetry_error": "\(error)"]
            )
            return 0
        }
        let after = Timestamp.now().millisecondsSinceEpoch
        return redis - (before + after) / 2
    }

    /// Pages through `stream` from `start` to its end (or until every wanted record is found).
    private nonisolated func lookUp(
        _ wanted: Set<RecordOrigin>, in stream: String, from start: StreamEntryID, on connection: RedisConnection
    ) async throws(RedisError) -> [RecordOrigin: StreamEntryID] {
        var stored: [RecordOrigin: StreamEntryID] = [:]
        var next: StreamEntryID? = start
        while let from = next, stored.count < wanted.count {
            let page = try await connection.range(stream, from: from, count: UnknownOutcomeLookup.pageSize)
            stored.merge(UnknownOutcomeLookup.stored(in: page, wanted: wanted)) { first, _ in first }
            next = page.count < UnknownOutcomeLookup.pageSize ? nil : page.last?.id.successor
        }
        return stored
    }

    /// Sends `commands`, each on the connection of its route; results in the commands' order.
    private nonisolated func pipeline(
        _ commands: [RedisCommand], routes: [Int], on connections: [RedisConnection]
    ) async -> [Result<StreamEntryID, RedisError>] {
        if connections.count == 1 { return await add(commands, on: connections[0]) }
        // One pipeline per stream, all at once.
        var indices = Array(repeating: [Int](), count: connections.count)
        for (index, route) in routes.enumerated() { indices[route].append(index) }
        var results = [Result<StreamEntryID, RedisError>](repeating: .failure(RedisError(.connectionLost, "not sent")), count: commands.count)
        await withTaskGroup(of: (Int, [Result<StreamEntryID, RedisError>]).self) { group in
            for (route, routeIndices) in indices.enumerated() where !routeIndices.isEmpty {
                let routeCommands = routeIndices.map { commands[$0] }
                group.addTask { (route, await self.add(routeCommands, on: connections[route])) }
            }
            for await (route, routeResults) in group {
                for (index, result) in zip(indices[route], routeResults) { results[index] = result }
            }
        }
        return results
    }
}

/// 50 ms doubling to 2 s: retries while Redis restarts or fails over, without spinning.
private struct RetryBackoff {
    private var delay: Duration = .milliseconds(50)

    mutating func next() -> Duration {
        defer { delay = min(delay * 2, .seconds(2)) }
        return delay
    }
}

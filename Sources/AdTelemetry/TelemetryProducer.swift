public import AdTelemetryRecords
import AdWorkerRedis
public import Logging
public import Metrics
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
    typealias Continuation = CheckedContinuation<[Result<StreamEntryID, TelemetryProducerError>], Never>
    typealias Machine = ProducerStateMachine<ContinuousClock, Continuation>

    // Made per producer, not static: a service creates its producer after bootstrapping metrics.
    nonisolated let sent: Counter
    nonisolated let failed: Counter
    nonisolated let buffered: Gauge
    nonisolated let sendLatency: Timer
    nonisolated let retried: Counter
    nonisolated let recovery: Timer
    nonisolated let spooledRecordsGauge: Gauge
    nonisolated let spooledBytesGauge: Gauge
    /// By resolution (`stored`, `resent`) and by drop reason, made with the producer.
    private nonisolated let unknownOutcomes: [String: Counter]
    private nonisolated let drops: [String: Counter]

    nonisolated func unknownOutcome(_ resolution: String, count: Int) {
        unknownOutcomes[resolution]?.increment(by: count)
    }

    private static let dropReasons = ["buffer_full", "shut_down", "spool_full", "spool_unwritable", "spool_damaged"]

    nonisolated func dropped(_ reason: String, count: Int) {
        drops[reason]?.increment(by: count)
    }

    public nonisolated let configuration: TelemetryProducerConfiguration
    /// Every stream records go to: each kind's shards, training first.
    nonisolated let streams: [String]
    /// One connection for everything on a single node with one shard (one pipeline for both
    /// streams, as always); otherwise one per stream, each following its stream's slot on a
    /// cluster, their pipelines sent concurrently.
    nonisolated var connectionPerStream: Bool { configuration.layout.tagged }
    let logger: Logger
    /// Every decision: what is queued, sent, held, spooled and given up.
    var machine: Machine
    /// Open while ``run()`` runs, with ``TelemetryProducerConfiguration/spoolDirectory``.
    var spool: RecordSpool?
    /// This producer's ``RecordOrigin/instance``, random per start.
    private nonisolated let instance = UInt64.random(in: .min ... .max)
    private nonisolated let lastSequence = Atomic<UInt64>(0)
    nonisolated let wakeups: AsyncStream<Void>
    nonisolated let wakeupContinuation: AsyncStream<Void>.Continuation

    /// - Parameters:
    ///   - configuration: Redis address, stream prefix and buffer bounds.
    ///   - logger: Log keys are prefixed `adtelemetry_`, since they land in the host service's logs.
    ///   - metricsFactory: Where the `adtelemetry_*` metrics go; nil: the process's `MetricsSystem`.
    public init(configuration: TelemetryProducerConfiguration, logger: Logger, metricsFactory: (any MetricsFactory)? = nil) {
        let factory = metricsFactory ?? MetricsSystem.factory
        sent = Counter(label: "adtelemetry_sent_total", factory: factory)
        failed = Counter(label: "adtelemetry_failed_total", factory: factory)
        buffered = Gauge(label: "adtelemetry_buffered", factory: factory)
        sendLatency = Timer(label: "adtelemetry_send_latency_seconds", factory: factory)
        retried = Counter(label: "adtelemetry_retried_total", factory: factory)
        recovery = Timer(label: "adtelemetry_redis_recovery_seconds", factory: factory)
        spooledRecordsGauge = Gauge(label: "adtelemetry_spooled_records", factory: factory)
        spooledBytesGauge = Gauge(label: "adtelemetry_spooled_bytes", factory: factory)
        // Every series exists from the start at 0: a rule's increase() cannot see the first
        // drops of a series that appears already holding them.
        unknownOutcomes = Dictionary(uniqueKeysWithValues: ["stored", "resent"].map { resolution in
            (resolution, Counter(label: "adtelemetry_unknown_outcome_total", dimensions: [("resolution", resolution)], factory: factory))
        })
        drops = Dictionary(uniqueKeysWithValues: Self.dropReasons.map { reason in
            (reason, Counter(label: "adtelemetry_dropped_total", dimensions: [("reason", reason)], factory: factory))
        })
        for counter in unknownOutcomes.values { counter.increment(by: 0) }
        for counter in drops.values { counter.increment(by: 0) }
        self.configuration = configuration
        let streams = RecordKind.allCases.flatMap { configuration.layout.streams(kind: $0.rawValue) }
        self.streams = streams
        self.logger = logger
        self.machine = Machine(
            configuration: .init(
                streams: streams, maximumBufferedRecords: configuration.maximumBufferedRecords,
                maximumPipelineLength: configuration.maximumPipelineLength, maximumRetryDuration: configuration.maximumRetryDuration,
                shutdownRetryDuration: configuration.shutdownRetryDuration
            ),
            clock: ContinuousClock()
        )
        (wakeups, wakeupContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
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
        try Self.checkOneRequest(training, inference)
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

    private static func checkOneRequest(_ training: TrainingRecord, _ inference: InferenceRecord) throws(TelemetryProducerError) {
        guard training.requestID == inference.requestID else {
            throw TelemetryProducerError(
                .invalidRequest, "a complete API request shares one request id: training has \(training.requestID), inference \(inference.requestID)"
            )
        }
    }

    /// Encoding happens on the caller's task, not on the actor or the connection thread.
    private nonisolated func encode(_ records: [TelemetryRecord]) -> [PendingRecord] {
        let layout = configuration.layout
        var encoded: [PendingRecord] = []
        encoded.reserveCapacity(records.count)
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
            encoded.append(PendingRecord(command: command, route: route, origin: origin))
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
        let spooled = encoded.map { SpooledRecord(stream: streams[$0.route], command: $0.command, origin: $0.origin, lookFrom: nil) }
        let outcome = await spool.append(spooled, allOrNothing: true)
        countRefused(outcome)
        await spilled(outcome, spool: spool, submitted: true)
        switch outcome.refusal {
        case nil: return
        case .full: throw TelemetryProducerError(.bufferFull, "records not kept: the memory buffer is full and \(outcome.refusal!)")
        case .unwritable: throw TelemetryProducerError(.spoolUnwritable, "records not kept: \(outcome.refusal!)")
        }
    }

    /// ``submit(_:)`` for a complete API request.
    public nonisolated func submit(training: TrainingRecord, inference: InferenceRecord) async throws(TelemetryProducerError) {
        try Self.checkOneRequest(training, inference)
        try await submit([.training(training), .inference(inference)])
    }

    /// Records queued and not yet answered by Redis.
    public var bufferedCount: Int { machine.bufferedRecords }

    /// Records waiting in the spool on local disk (with a ``TelemetryProducerConfiguration/spoolDirectory``).
    public var spooledCount: Int { machine.spooledRecords }

    /// Counts records the spool refused as dropped (`spool_full`, `spool_unwritable`).
    nonisolated func countRefused(_ outcome: RecordSpool.AppendOutcome) {
        switch outcome.refusal {
        case nil: break
        case .full: dropped("spool_full", count: outcome.refused)
        case .unwritable: dropped("spool_unwritable", count: outcome.refused)
        }
    }

    /// Records given to the spool were written (all but those refused): the counts and gauges
    /// follow, and the flusher looks again (a full disk sends records to memory for a while).
    func spilled(_ outcome: RecordSpool.AppendOutcome, spool: RecordSpool, submitted: Bool) async {
        let unwritable = if case .unwritable = outcome.refusal { true } else { false }
        if submitted {
            machine.submitSpilled(refused: outcome.refused, unwritable: unwritable)
        } else {
            machine.spilled(refused: outcome.refused, unwritable: unwritable)
        }
        await reportSpool(spool)
        wakeupContinuation.yield()
    }

    nonisolated func reportSpool(_ spool: RecordSpool) async {
        let (records, bytes) = await spool.counts
        spooledRecordsGauge.record(records)
        spooledBytesGauge.record(bytes)
    }

    /// Queues records in memory, or returns the spool they go to instead (``ProducerStateMachine/submit(_:)``).
    private func enqueueOrSpill(_ records: [PendingRecord]) throws(TelemetryProducerError) -> RecordSpool? {
        switch machine.submit(records) {
        case .queued:
            buffered.record(machine.bufferedRecords)
            wakeupContinuation.yield()
            return nil
        case .spill:
            // Chosen only while the spool is open, which is while `spool` is set.
            return spool
        case .refused(let refusal):
            throw refused(refusal, count: records.count)
        }
    }

    private func enqueue(_ records: [PendingRecord]) async throws(TelemetryProducerError) -> [Result<StreamEntryID, TelemetryProducerError>] {
        if let refusal = machine.admit(records.count) { throw refused(refusal, count: records.count) }
        buffered.record(machine.bufferedRecords)
        return await withCheckedContinuation { continuation in
            machine.append(records, waiter: continuation)
            self.wakeupContinuation.yield()
        }
    }

    private func refused(_ refusal: Machine.Refusal, count: Int) -> TelemetryProducerError {
        switch refusal {
        case .shutDown:
            dropped("shut_down", count: count)
            return TelemetryProducerError(.shutDown, "the producer has stopped")
        case .bufferFull(let waiting):
            dropped("buffer_full", count: count)
            return TelemetryProducerError(.bufferFull, "\(waiting) records are waiting to be sent")
        }
    }
}

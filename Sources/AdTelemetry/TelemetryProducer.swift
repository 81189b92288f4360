public import Logging
import Metrics
import Redis
public import ServiceLifecycle
public import TelemetryRecords

/// Sends training and inference records to Redis Streams from an API service.
///
/// Sends from any number of tasks are gathered and written as pipelined XADDs on one connection
/// with its own thread, so thousands of sends a second cost a few round trips and no send ever
/// blocks a thread of Swift's cooperative pool. The buffer is bounded: past it a send fails at
/// once with `bufferFull` instead of waiting.
///
/// It reports through swift-metrics (whatever backend the host service bootstraps):
/// `adtelemetry_sent_total`, `adtelemetry_failed_total`, `adtelemetry_dropped_total` (buffer
/// full or shut down), `adtelemetry_buffered` and `adtelemetry_send_latency_seconds` (from
/// `send` to Redis's answer).
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
        /// Nil for ``submit(_:)``: nobody waits; the outcome goes to metrics and logs only.
        var continuation: CheckedContinuation<[Result<StreamEntryID, TelemetryProducerError>], Never>?
        var enqueuedAt: ContinuousClock.Instant
    }

    // Made per producer, not static: a service creates its producer after bootstrapping metrics.
    private nonisolated let sent = Counter(label: "adtelemetry_sent_total")
    private nonisolated let failed = Counter(label: "adtelemetry_failed_total")
    private nonisolated let buffered = Gauge(label: "adtelemetry_buffered")
    private nonisolated let sendLatency = Timer(label: "adtelemetry_send_latency_seconds")

    private static let dropReasons = ["buffer_full", "shut_down"]

    private nonisolated func dropped(_ reason: String, count: Int) {
        Counter(label: "adtelemetry_dropped_total", dimensions: [("reason", reason)]).increment(by: count)
    }

    public nonisolated let configuration: TelemetryProducerConfiguration
    private let logger: Logger
    private var pending: [PendingSend] = []
    private var bufferedRecords = 0
    private var isClosed = false
    private nonisolated let wakeups: AsyncStream<Void>
    private nonisolated let wakeupContinuation: AsyncStream<Void>.Continuation

    /// - Parameters:
    ///   - configuration: Redis address, stream prefix and buffer bounds.
    ///   - logger: Log keys are prefixed `adtelemetry_`, since they land in the host service's logs.
    public init(configuration: TelemetryProducerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        (wakeups, wakeupContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        // Every drop series exists from the start at 0: a rule's increase() cannot see the first
        // drops of a series that appears already holding them.
        for reason in Self.dropReasons { dropped(reason, count: 0) }
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
        precondition(training.requestID == inference.requestID, "a complete API request shares one request id")
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

    /// Encoding happens on the caller's task, not on the actor or the connection thread.
    private nonisolated func encode(_ records: [TelemetryRecord]) -> [RedisCommand] {
        records.map { record in
            var command: RedisCommand
            switch record {
            case .training: command = .streamAdd(to: configuration.streamPrefix + RecordKind.training.rawValue)
            case .inference: command = .streamAdd(to: configuration.streamPrefix + RecordKind.inference.rawValue)
            }
            WireFormat.encode(record, into: &command)
            return command
        }
    }

    /// Queues records and returns at once, without waiting for Redis: for request handlers that
    /// must not be slowed by telemetry. A pipeline cut by a lost connection counts as failed in
    /// full, although Redis may have stored part of it: failed means unconfirmed. Sent and failed records show in the producer's metrics
    /// (`adtelemetry_sent_total`, `adtelemetry_failed_total`) and failures in its log.
    /// - Throws: `bufferFull` or `shutDown` when the records were not queued (also counted in
    ///   `adtelemetry_dropped_total`).
    public nonisolated func submit(_ records: [TelemetryRecord]) async throws(TelemetryProducerError) {
        try await enqueueWithoutWaiting(encode(records))
    }

    /// ``submit(_:)`` for a complete API request.
    public nonisolated func submit(training: TrainingRecord, inference: InferenceRecord) async throws(TelemetryProducerError) {
        precondition(training.requestID == inference.requestID, "a complete API request shares one request id")
        try await submit([.training(training), .inference(inference)])
    }

    /// Records queued and not yet answered by Redis.
    public var bufferedCount: Int { bufferedRecords }

    private func enqueueWithoutWaiting(_ commands: [RedisCommand]) throws(TelemetryProducerError) {
        try admit(commands.count)
        pending.append(PendingSend(commands: commands, continuation: nil, enqueuedAt: .now))
        wakeupContinuation.yield()
    }

    private func enqueue(
        _ commands: [RedisCommand]
    ) async throws(TelemetryProducerError) -> [Result<StreamEntryID, TelemetryProducerError>] {
        try admit(commands.count)
        let now = ContinuousClock.now
        return await withCheckedContinuation { continuation in
            pending.append(PendingSend(commands: commands, continuation: continuation, enqueuedAt: now))
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
    public nonisolated func run() async throws {
        try await RedisConnection.withConnection(configuration.redis, logger: logger, connectImmediately: false) { redis in
            await withGracefulShutdownHandler {
                for await _ in wakeups {
                    await flushPending(redis)
                }
                await close()
                await flushPending(redis)
            } onGracefulShutdown: {
                self.wakeupContinuation.finish()
            }
        }
    }

    private func close() {
        isClosed = true
    }

    /// Takes up to one pipeline's worth of sends (whole sends only).
    private func takePending() -> [PendingSend] {
        var taken = 0
        var count = 0
        for send in pending {
            if count > 0 && count + send.commands.count > configuration.maximumPipelineLength { break }
            count += send.commands.count
            taken += 1
        }
        let batch = Array(pending.prefix(taken))
        pending.removeFirst(taken)
        return batch
    }

    private func finished(_ records: Int) {
        bufferedRecords -= records
        buffered.record(bufferedRecords)
    }

    private nonisolated func flushPending(_ redis: RedisConnection) async {
        while true {
            let sends = await takePending()
            guard !sends.isEmpty else { return }
            let commands = sends.flatMap(\.commands)
            var results: [Result<StreamEntryID, TelemetryProducerError>]
            do {
                results = try await redis.add(commands).map { result in
                    result.mapError { TelemetryProducerError(.rejected, $0.message, underlying: $0) }
                }
            } catch {
                logger.warning("adtelemetry send failed", metadata: ["adtelemetry_error": "\(error)", "adtelemetry_records": "\(commands.count)"])
                let failure = TelemetryProducerError(.redisUnavailable, error.message, underlying: error)
                results = Array(repeating: .failure(failure), count: commands.count)
            }
            await finished(commands.count)
            let successes = results.count { if case .success = $0 { true } else { false } }
            sent.increment(by: successes)
            failed.increment(by: results.count - successes)
            let answeredAt = ContinuousClock.now
            var offset = 0
            for send in sends {
                sendLatency.record(duration: send.enqueuedAt.duration(to: answeredAt))
                let count = send.commands.count
                send.continuation?.resume(returning: Array(results[offset..<offset + count]))
                offset += count
            }
        }
    }
}

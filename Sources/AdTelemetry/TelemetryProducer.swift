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
        /// Each command's stream, as an index into ``streams``: which connection sends it.
        var routes: [Int]
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
    private nonisolated func encode(_ records: [TelemetryRecord]) -> (commands: [RedisCommand], routes: [Int]) {
        let layout = configuration.layout
        var commands: [RedisCommand] = []
        var routes: [Int] = []
        commands.reserveCapacity(records.count)
        routes.reserveCapacity(records.count)
        for record in records {
            let (kind, requestID) =
                switch record {
                case .training(let training): (0, training.requestID)
                case .inference(let inference): (1, inference.requestID)
                }
            let route = kind * layout.count + layout.shard(forRequestID: requestID)
            var command = RedisCommand.streamAdd(to: streams[route])
            WireFormat.encode(record, into: &command)
            commands.append(command)
            routes.append(route)
        }
        return (commands, routes)
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

    private func enqueueWithoutWaiting(_ encoded: (commands: [RedisCommand], routes: [Int])) throws(TelemetryProducerError) {
        try admit(encoded.commands.count)
        pending.append(PendingSend(commands: encoded.commands, routes: encoded.routes, continuation: nil, enqueuedAt: .now))
        wakeupContinuation.yield()
    }

    private func enqueue(
        _ encoded: (commands: [RedisCommand], routes: [Int])
    ) async throws(TelemetryProducerError) -> [Result<StreamEntryID, TelemetryProducerError>] {
        try admit(encoded.commands.count)
        let now = ContinuousClock.now
        return await withCheckedContinuation { continuation in
            pending.append(PendingSend(commands: encoded.commands, routes: encoded.routes, continuation: continuation, enqueuedAt: now))
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
        let routed = connectionPerStream ? streams.map { configuration.redis.routed(by: $0) } : [configuration.redis]
        func open(_ connections: [RedisConnection]) async throws {
            guard connections.count == routed.count else {
                return try await RedisConnection.withConnection(routed[connections.count], logger: logger, connectImmediately: false) {
                    try await open(connections + [$0])
                }
            }
            await withGracefulShutdownHandler {
                for await _ in wakeups {
                    await flushPending(connections)
                }
                await close()
                await flushPending(connections)
            } onGracefulShutdown: {
                self.wakeupContinuation.finish()
            }
        }
        try await open([])
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

    /// One pipeline; a connection lost mid-way fails all of it (unconfirmed: Redis may have stored part).
    private nonisolated func add(_ commands: [RedisCommand], on redis: RedisConnection) async -> [Result<StreamEntryID, TelemetryProducerError>] {
        do {
            return try await redis.add(commands).map { result in
                result.mapError { TelemetryProducerError(.rejected, $0.message, underlying: $0) }
            }
        } catch {
            logger.warning("adtelemetry send failed", metadata: ["adtelemetry_error": "\(error)", "adtelemetry_records": "\(commands.count)"])
            let failure = TelemetryProducerError(.redisUnavailable, error.message, underlying: error)
            return Array(repeating: .failure(failure), count: commands.count)
        }
    }

    private func finished(_ records: Int) {
        bufferedRecords -= records
        buffered.record(bufferedRecords)
    }

    private nonisolated func flushPending(_ connections: [RedisConnection]) async {
        while true {
            let sends = await takePending()
            guard !sends.isEmpty else { return }
            let commands = sends.flatMap(\.commands)
            var results: [Result<StreamEntryID, TelemetryProducerError>]
            if connections.count == 1 {
                results = await add(commands, on: connections[0])
            } else {
                // One pipeline per stream, all at once; results go back to the commands' order.
                let routes = sends.flatMap(\.routes)
                var indices = Array(repeating: [Int](), count: connections.count)
                for (index, route) in routes.enumerated() { indices[route].append(index) }
                results = Array(repeating: .failure(TelemetryProducerError(.redisUnavailable, "not sent")), count: commands.count)
                await withTaskGroup(of: (Int, [Result<StreamEntryID, TelemetryProducerError>]).self) { group in
                    for (route, routeIndices) in indices.enumerated() where !routeIndices.isEmpty {
                        let routeCommands = routeIndices.map { commands[$0] }
                        group.addTask { (route, await self.add(routeCommands, on: connections[route])) }
                    }
                    for await (route, routeResults) in group {
                        for (index, result) in zip(indices[route], routeResults) { results[index] = result }
                    }
                }
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

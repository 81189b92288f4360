public import AdTelemetryRecords
public import Metrics
import Synchronization

/// What the worker is doing, for `/status`, `/readyz` and `/metrics`: every committed batch,
/// every failed attempt, every consumer's state and each stream's queue pass through here, under
/// one lock. It keeps each stream's last minute (``ThroughputWindow``) for rates and latency
/// quantiles and a history of them, decides readiness and liveness (``ReadinessState``), and
/// records into each stream's metric handles (``StreamMetrics``) outside the lock, so whatever
/// backend the process bootstraps (Prometheus in `adworker run`) sees the same numbers.
public final class WorkerStatus: Sendable {
    public static let window = ThroughputWindow.seconds

    /// One stream's figures for `/status`: its window, totals, and queue as last sampled.
    private struct StreamState {
        var window = ThroughputWindow()
        var totalEntries = 0
        var totalRows = 0
        var totalDeadLetters = 0
        var streamLength: Int?
        var lag: Int?
        var pending: Int?
        var deadLetters: Int?
    }

    private struct State {
        /// A stream is listed in `/status` from its first batch, failure, read or queue sample.
        var streams: [String: StreamState] = [:]
        /// From the stream's first event of any kind.
        var metrics: [String: StreamMetrics] = [:]
        var readiness: ReadinessState<ContinuousClock.Instant>
        var history: [HistoryPoint] = []
        var targetUp: [String: Gauge] = [:]
        /// For reservoir sampling: fast and seeded once (the system generator costs a syscall a call).
        var random = SplitMix64(seed: UInt64.random(in: .min ... .max))
    }

    private let state: Mutex<State>
    private let started: ContinuousClock.Instant
    /// The wall-clock start, which rates are measured from during the first minute.
    private let startedAt: Timestamp
    public let version: String
    /// Sharded streams' shard numbers: their metrics carry a `shard` label beside `stream`, so a
    /// dashboard can sum a kind's shards or show them one by one. Bounded: one value per shard.
    private let shardOfStream: [String: Int]
    /// Nil: the process's (`MetricsSystem`), as it is when a stream's handles are made.
    private let factory: (any MetricsFactory)?

    /// - Parameters:
    ///   - shards: Each sharded stream's shard number (none for unsharded streams).
    ///   - factory: Where metrics go; nil for the one the process bootstrapped.
    public init(version: String, startedAt: Timestamp = .now(), shards: [String: Int] = [:], factory: (any MetricsFactory)? = nil) {
        let started = ContinuousClock.now
        self.version = version
        self.startedAt = startedAt
        self.started = started
        self.shardOfStream = shards
        self.factory = factory
        self.state = Mutex(State(readiness: ReadinessState(started: started)))
    }

    private func makeMetrics(_ stream: String) -> StreamMetrics {
        StreamMetrics(stream: stream, shard: shardOfStream[stream], factory: factory ?? MetricsSystem.factory)
    }

    // MARK: Recording

    func recordBatch(_ report: BatchReport, deadLetterCodes: [DeadLetterCode], insertDuration: Duration) {
        let now = Timestamp.now()
        let latencies = report.enqueuedAt.map { max(0, report.committedAt.millisecondsSinceEpoch - $0.millisecondsSinceEpoch) }
        let (metrics, batch) = state.withLock { state in
            // In place, through the dictionary's default subscript: copying the stream's state out
            // and back would copy its window's latency samples on every batch.
            Self.add(report, latencies: latencies, in: now.millisecondsSinceEpoch / 1000, to: &state.streams[report.stream, default: StreamState()], random: &state.random)
            state.readiness.progressed(report.stream, at: .now)
            let batch = state.metrics[report.stream, default: makeMetrics(report.stream)].batchHandles()
            return (state.metrics[report.stream]!, batch)
        }
        metrics.entriesRead.increment(by: report.entries)
        metrics.rowsInserted.increment(by: report.insertedRows)
        metrics.entriesAcknowledged.increment(by: report.entries)
        metrics.duplicateRowsSkipped.increment(by: report.duplicateRows)
        for code in deadLetterCodes { metrics.deadLetter(code).increment() }
        batch.record(report, insertDuration: insertDuration, latencies: latencies)
    }

    private static func add(_ report: BatchReport, latencies: [Int64], in second: Int64, to stream: inout StreamState, random: inout SplitMix64) {
        stream.window.record(
            entries: report.entries, rows: report.insertedRows, deadLetters: report.deadLettered, latencies: latencies, in: second, using: &random
        )
        stream.totalEntries += report.entries
        stream.totalRows += report.insertedRows
        stream.totalDeadLetters += report.deadLettered
    }

    func recordFailure(stream: String, target: String, error: any Error) {
        let second = Timestamp.now().millisecondsSinceEpoch / 1000
        let metrics = state.withLock { state in
            state.streams[stream, default: StreamState()].window.recordFailure(in: second)
            return state.metrics[stream, default: makeMetrics(stream)]
        }
        metrics.recordFailure(target: target, error: error)
    }

    /// Creates the stream's counters and circuit gauges at 0, so that the first dead letters or
    /// the first open circuit are a change a rule's `increase()` or `changes()` can see, and a
    /// dashboard shows 0 rather than no data.
    func declare(stream: String) {
        let (metrics, open) = state.withLock { state in
            (state.metrics[stream, default: makeMetrics(stream)], state.readiness.openTargets(of: stream))
        }
        metrics.declare()
        // Another consumer of the stream may have one open already: leave its 1 alone.
        for (target, gauge) in metrics.circuitOpen where !open.contains(target.rawValue) {
            gauge.record(0)
        }
    }

    /// The lease is taken and every stream's consumers are launched (each stream's start reading
    /// once its group exists; one that cannot have one is a problem of its own).
    func markStarted() {
        state.withLock { $0.readiness.hasStarted = true }
    }

    public var hasStarted: Bool { state.withLock { $0.readiness.hasStarted } }

    /// The oldest dead letters of `stream` trimmed beyond the configured limit, counted in the
    /// stream's own series (with its shard label, as every other per-stream counter).
    func recordTrimmedDeadLetters(stream: String, count: Int) {
        let metrics = state.withLock { state in state.metrics[stream, default: makeMetrics(stream)] }
        metrics.deadLettersTrimmed.increment(by: count)
    }

    /// A consumer of `stream` read and found nothing new: it is keeping up, which counts as progress.
    func caughtUp(stream: String) {
        state.withLock { state in
            if state.streams[stream] == nil { state.streams[stream] = StreamState() }
            state.readiness.progressed(stream, at: .now)
        }
    }

    func consumer(_ consumer: String, stream: String, state newState: ConsumerState) {
        let (alive, gauge) = state.withLock { state in
            (
                state.readiness.consumer(.init(stream: stream, name: consumer), state: newState),
                state.metrics[stream, default: makeMetrics(stream)].workersAliveGauge()
            )
        }
        gauge.record(alive)
    }

    /// A circuit of one of a consumer's tasks (`role`: reader, sink 1) opened or closed.
    func circuit(_ target: String, role: String, of consumer: String, stream: String, isOpen: Bool) {
        let (anyOpen, gauge) = state.withLock { state in
            (
                state.readiness.circuit(.init(target: target, role: role), of: .init(stream: stream, name: consumer), isOpen: isOpen),
                state.metrics[stream, default: makeMetrics(stream)].circuit(target)
            )
        }
        gauge.record(anyOpen ? 1 : 0)
    }

    /// Raises (with a reason that names the fix) or clears (nil) a condition that makes the worker
    /// not ready; `key` says what raised it, so each clears its own.
    func problem(_ key: String, _ reason: String?) {
        state.withLock { $0.readiness.problem(key, reason) }
    }

    /// A target refuses for a reason retrying cannot fix (nil: no longer): raised as a problem,
    /// so `/readyz` names the fix, and counted in `adworker_permanent_errors{target,kind}`.
    func permanentFailure(_ key: String, target: String, _ failure: PermanentFailure?) {
        let changes = state.withLock { $0.readiness.permanentFailure(key, target: target, failure) }
        // Rare (a refusal starts or ends): the handle is made per change.
        for change in changes {
            Gauge(label: "adworker_permanent_errors", dimensions: [("target", target), ("kind", change.kind.label)], factory: factory ?? MetricsSystem.factory)
                .record(change.raised ? 1 : 0)
        }
    }

    /// What the readiness probe found for `target` (nil: it answered as it should).
    func recordProbe(_ target: String, failure: String?) {
        let gauge = state.withLock { state in
            state.readiness.probe(target, failure: failure, at: .now)
            if let gauge = state.targetUp[target] { return gauge }
            let gauge = Gauge(label: "adworker_target_up", dimensions: [("target", target)], factory: factory ?? MetricsSystem.factory)
            state.targetUp[target] = gauge
            return gauge
        }
        gauge.record(failure == nil ? 1 : 0)
    }

    /// Queue figures from XLEN and XINFO GROUPS, sampled periodically.
    func recordQueue(stream: String, length: Int, lag: Int?, pending: Int, deadLetters: Int? = nil) {
        let (sinceProgress, gauges) = state.withLock { state in
            var entry = state.streams[stream] ?? StreamState()
            entry.deadLetters = deadLetters
            entry.streamLength = length
            entry.lag = lag
            entry.pending = pending
            state.streams[stream] = entry
            return (
                state.readiness.waiting(stream, entries: (lag ?? 0) + pending, at: .now),
                state.metrics[stream, default: makeMetrics(stream)].queueHandles(lag: lag != nil, deadLetters: deadLetters != nil)
            )
        }
        gauges.record(length: length, lag: lag, pending: pending, deadLetters: deadLetters, sinceProgress: sinceProgress)
    }

    /// Appends a history point once per interval (a no-op within one); called with each queue sample.
    func recordHistory(now: Timestamp = .now()) {
        let interval = Int64(History.interval)
        let current = now.millisecondsSinceEpoch / 1000
        let end = current - current % interval
        state.withLock { state in
            if let last = state.history.last, Int64(last.time) >= end { return }
            var streams: [String: HistoryStreamPoint] = [:]
            for (name, stream) in state.streams {
                // The interval's completed seconds.
                let totals = stream.window.totals(over: (end - interval)..<end)
                streams[name] = HistoryStreamPoint(
                    rowsPerSecond: Double(totals.rows) / Double(interval), lag: stream.lag, latencyP99Milliseconds: totals.latency(0.99)
                )
            }
            state.history.append(HistoryPoint(time: Double(end), streams: streams))
            if state.history.count > History.capacity { state.history.removeFirst(state.history.count - History.capacity) }
        }
    }

    // MARK: Reading

    /// Consumers with a circuit open: targets they cannot reach right now.
    public var openCircuits: [(consumer: String, target: String)] {
        state.withLock { $0.readiness.openCircuits }
    }

    /// Why the worker is not ready, from what it already knows: not started yet (its start-up
    /// checks and the consumer name's lease come first), open circuits, raised problems and the
    /// probe's last findings (stale after `probeMaximumAge`). Asking costs the servers nothing.
    public func notReadyReasons(probing targets: [String], probeMaximumAge: Duration) -> [String] {
        state.withLock {
            let reasons = $0.readiness.notReadyReasons(probing: targets, probeMaximumAge: probeMaximumAge, now: .now)
            return $0.readiness.hasStarted || !reasons.isEmpty ? reasons : ["starting: the consumers have not started yet"]
        }
    }

    /// Streams whose consumers have neither committed a batch nor caught up for longer than
    /// `timeout` while entries wait (lag or pending), with nothing that explains it: no circuit
    /// open on the stream and no problem raised (those already say why, and a restart would not
    /// help). One line per stuck stream; empty when all make progress or have nothing to do.
    public func stalledStreams(after timeout: Duration, now: ContinuousClock.Instant = .now) -> [String] {
        state.withLock { $0.readiness.stalledStreams(after: timeout, now: now) }
    }

    public func snapshot(now: Timestamp = .now()) -> Snapshot {
        let current = now.millisecondsSinceEpoch / 1000
        // Rates are per second of the window actually covered: a worker up 11 s has 11 s of data, not 60.
        let covered = min(Double(Self.window), max(1, Double(now.millisecondsSinceEpoch - startedAt.millisecondsSinceEpoch) / 1000))
        return state.withLock { state in
            let streams = state.streams.keys.sorted().map { name -> StreamSnapshot in
                let stream = state.streams[name]!
                // The last minute, the second in progress included.
                let totals = stream.window.totals(over: (current - Int64(Self.window) + 1)..<(current + 1))
                let queue = stream.lag.flatMap { lag in stream.pending.map { lag + $0 } }
                return StreamSnapshot(
                    stream: name, entriesPerSecond: Double(totals.entries) / covered, rowsPerSecond: Double(totals.rows) / covered,
                    latencyP50Milliseconds: totals.latency(0.5), latencyP95Milliseconds: totals.latency(0.95),
                    latencyP99Milliseconds: totals.latency(0.99),
                    errorRate: totals.entries == 0 ? 0 : Double(totals.deadLetters) / Double(totals.entries), failedAttempts: totals.failures,
                    totalEntries: stream.totalEntries, totalRows: stream.totalRows, totalDeadLetters: stream.totalDeadLetters,
                    streamLength: stream.streamLength, lag: stream.lag, pending: stream.pending, queueLength: queue,
                    deadLetterStreamLength: stream.deadLetters
                )
            }
            let consumers = state.readiness.consumers.sorted { $0.key < $1.key }.map { key, consumer in
                ConsumerSnapshot(
                    consumer: key.name, stream: key.stream, state: consumer.state.rawValue, openCircuits: consumer.openCircuits.sorted().map(\.description)
                )
            }
            return Snapshot(
                version: version, uptimeSeconds: (ContinuousClock.now - started).inSeconds, streams: streams, consumers: consumers,
                history: History(points: state.history)
            )
        }
    }
}

public import AdTelemetryRecords
import AdWorkerPostgres
import AdWorkerRedis
public import Metrics
import Synchronization

/// What the worker is doing, for `/status`, `/readyz` and `/metrics`: every committed batch,
/// every failed attempt, every consumer's state and each stream's queue pass through here. It
/// keeps the last minute per stream (per-second buckets) for rates and latency quantiles, and
/// forwards everything to swift-metrics, so whatever backend the process bootstraps (Prometheus
/// in `adworker run`) sees the same numbers.
public final class WorkerStatus: Sendable {
    public static let window = 60

    /// One stream's last minute, and its queue as last sampled.
    public struct StreamSnapshot: Sendable, Codable, Equatable {
        public var stream: String
        public var entriesPerSecond: Double
        public var rowsPerSecond: Double
        public var latencyP50Milliseconds: Double?
        public var latencyP95Milliseconds: Double?
        public var latencyP99Milliseconds: Double?
        /// Dead-lettered entries over entries read, in the last minute.
        public var errorRate: Double
        public var failedAttempts: Int
        public var totalEntries: Int
        public var totalRows: Int
        public var totalDeadLetters: Int
        public var streamLength: Int?
        public var lag: Int?
        public var pending: Int?
        /// Lag plus pending: entries not yet stored.
        public var queueLength: Int?
        /// Letters in the stream's dead-letter stream, as last sampled.
        public var deadLetterStreamLength: Int?

        public init(
            stream: String, entriesPerSecond: Double, rowsPerSecond: Double, latencyP50Milliseconds: Double?,
            latencyP95Milliseconds: Double?, latencyP99Milliseconds: Double?, errorRate: Double, failedAttempts: Int,
            totalEntries: Int, totalRows: Int, totalDeadLetters: Int, streamLength: Int?, lag: Int?, pending: Int?, queueLength: Int?,
            deadLetterStreamLength: Int? = nil
        ) {
            self.stream = stream
            self.entriesPerSecond = entriesPerSecond
            self.rowsPerSecond = rowsPerSecond
            self.latencyP50Milliseconds = latencyP50Milliseconds
            self.latencyP95Milliseconds = latencyP95Milliseconds
            self.latencyP99Milliseconds = latencyP99Milliseconds
            self.errorRate = errorRate
            self.failedAttempts = failedAttempts
            self.totalEntries = totalEntries
            self.totalRows = totalRows
            self.totalDeadLetters = totalDeadLetters
            self.streamLength = streamLength
            self.lag = lag
            self.pending = pending
            self.queueLength = queueLength
            self.deadLetterStreamLength = deadLetterStreamLength
        }
    }

    public struct ConsumerSnapshot: Sendable, Codable, Equatable {
        public var consumer: String
        public var stream: String
        public var state: String
        public var openCircuits: [String]

        public init(consumer: String, stream: String, state: String, openCircuits: [String]) {
            self.consumer = consumer
            self.stream = stream
            self.state = state
            self.openCircuits = openCircuits
        }
    }

    public struct Snapshot: Sendable, Codable, Equatable {
        public var version: String
        public var uptimeSeconds: Double
        public var streams: [StreamSnapshot]
        public var consumers: [ConsumerSnapshot]
        /// The last minutes, for the status page's charts.
        public var history: History?

        public init(
            version: String, uptimeSeconds: Double, streams: [StreamSnapshot], consumers: [ConsumerSnapshot], history: History? = nil
        ) {
            self.version = version
            self.uptimeSeconds = uptimeSeconds
            self.streams = streams
            self.consumers = consumers
            self.history = history
        }
    }

    /// One point every ``History/intervalSeconds`` over the last ``History/capacity`` intervals, oldest first.
    public struct History: Sendable, Codable, Equatable {
        public static let interval = 5
        public static let capacity = 120

        public var intervalSeconds: Int
        public var points: [HistoryPoint]

        public init(intervalSeconds: Int = History.interval, points: [HistoryPoint]) {
            self.intervalSeconds = intervalSeconds
            self.points = points
        }
    }

    public struct HistoryPoint: Sendable, Codable, Equatable {
        /// The end of the interval, in seconds since the epoch (a multiple of the interval).
        public var time: Double
        public var streams: [String: HistoryStreamPoint]

        public init(time: Double, streams: [String: HistoryStreamPoint]) {
            self.time = time
            self.streams = streams
        }
    }

    /// One stream over one interval: its rows per second and latency, and its lag as last sampled.
    public struct HistoryStreamPoint: Sendable, Codable, Equatable {
        public var rowsPerSecond: Double
        public var lag: Int?
        public var latencyP99Milliseconds: Double?

        public init(rowsPerSecond: Double, lag: Int?, latencyP99Milliseconds: Double?) {
            self.rowsPerSecond = rowsPerSecond
            self.lag = lag
            self.latencyP99Milliseconds = latencyP99Milliseconds
        }
    }

    private struct Second {
        var time: Int64 = 0
        var entries = 0
        var rows = 0
        var deadLetters = 0
        var failures = 0
        /// A bounded uniform sample of the second's end-to-end latencies, in milliseconds.
        var latencies: [Int64] = []
        var latencyCount = 0
    }

    private struct StreamState {
        var seconds = [Second](repeating: Second(), count: WorkerStatus.window)
        var totalEntries = 0
        var totalRows = 0
        var totalDeadLetters = 0
        var streamLength: Int?
        var lag: Int?
        var pending: Int?
        var deadLetters: Int?
        /// When a consumer of the stream last committed a batch or found nothing to read.
        var lastProgress: ContinuousClock.Instant?
    }

    private struct ConsumerState {
        var stream: String
        var name: String
        var state: String
        var openCircuits: Set<OpenCircuit> = []
    }

    private struct OpenCircuit: Hashable, Comparable {
        var target: String
        var role: String

        var description: String { "\(target) (\(role))" }

        static func < (lhs: OpenCircuit, rhs: OpenCircuit) -> Bool { (lhs.target, lhs.role) < (rhs.target, rhs.role) }
    }

    /// Consumer names repeat across streams (`<host>-<slot>` on each), so they are keyed by both.
    private struct ConsumerKey: Hashable, Comparable {
        var stream: String
        var name: String

        static func < (lhs: ConsumerKey, rhs: ConsumerKey) -> Bool { (lhs.stream, lhs.name) < (rhs.stream, rhs.name) }
    }

    /// What the readiness probe last saw of one server.
    private struct ProbeResult {
        var failure: String?
        var at: ContinuousClock.Instant
    }

    private struct State {
        var streams: [String: StreamState] = [:]
        var consumers: [ConsumerKey: ConsumerState] = [:]
        /// Conditions that make the worker not ready, by what raised them (e.g. group creation).
        var problems: [String: String] = [:]
        var probes: [String: ProbeResult] = [:]
        var history: [HistoryPoint] = []
        var started = false
        /// Permanent failures by what raised them: their target and kind, for the gauge.
        var permanent: [String: (target: String, kind: String)] = [:]
        /// For reservoir sampling: fast and seeded once (the system generator costs a syscall a call).
        var random = SplitMix64(seed: UInt64.random(in: .min ... .max))
    }

    private static let latencySamplesPerSecond = 2000
    private let state = Mutex(State())
    private let started = ContinuousClock.now
    /// The wall-clock start, which rates are measured from during the first minute.
    private let startedAt: Timestamp
    public let version: String
    /// Sharded streams' shard numbers: their metrics carry a `shard` label beside `stream`, so a
    /// dashboard can sum a kind's shards or show them one by one. Bounded: one value per shard.
    private let shardOfStream: [String: Int]

    /// - Parameter shards: each sharded stream's shard number (none for unsharded streams).
    public init(version: String, startedAt: Timestamp = .now(), shards: [String: Int] = [:]) {
        self.version = version
        self.startedAt = startedAt
        self.shardOfStream = shards
    }

    /// The labels of a stream's metrics.
    private func labels(_ stream: String) -> [(String, String)] {
        guard let shard = shardOfStream[stream] else { return [("stream", stream)] }
        return [("stream", stream), ("shard", "\(shard)")]
    }

    // MARK: Recording

    func recordBatch(_ report: BatchReport, deadLetterCodes: [DeadLetterCode], insertDuration: Duration) {
        let now = Timestamp.now()
        let latencies = report.enqueuedAt.map { max(0, report.committedAt.millisecondsSinceEpoch - $0.millisecondsSinceEpoch) }
        state.withLock { state in
            // In place, through the dictionary's default subscript: copying the stream's state out
            // and back would copy the second's latency samples on every batch.
            Self.add(report, latencies: latencies, at: now, to: &state.streams[report.stream, default: StreamState()], random: &state.random)
        }

        let dimensions = labels(report.stream)
        Counter(label: "adworker_entries_read_total", dimensions: dimensions).increment(by: report.entries)
        Counter(label: "adworker_rows_inserted_total", dimensions: dimensions).increment(by: report.insertedRows)
        Counter(label: "adworker_entries_acknowledged_total", dimensions: dimensions).increment(by: report.entries)
        Counter(label: "adworker_duplicate_rows_skipped_total", dimensions: dimensions).increment(by: report.duplicateRows)
        for code in deadLetterCodes {
            Counter(label: "adworker_dead_letters_total", dimensions: dimensions + [("reason", code.rawValue)]).increment()
        }
        Recorder(label: "adworker_batch_size", dimensions: dimensions).record(report.entries)
        Timer(label: "adworker_insert_duration_seconds", dimensions: dimensions).record(duration: insertDuration)
        let latency = Timer(label: "adworker_end_to_end_latency_seconds", dimensions: dimensions)
        for milliseconds in latencies { latency.recordMilliseconds(milliseconds) }
    }

    private static func add(
        _ report: BatchReport, latencies: [Int64], at now: Timestamp, to stream: inout StreamState, random: inout SplitMix64
    ) {
        withSecond(&stream, at: now) { second in
            second.entries += report.entries
            second.rows += report.insertedRows
            second.deadLetters += report.deadLettered
            for latency in latencies {
                // Reservoir sampling keeps the quantiles honest at any rate within bounded memory.
                second.latencyCount += 1
                if second.latencies.count < latencySamplesPerSecond {
                    second.latencies.append(latency)
                } else {
                    let slot = Int.random(in: 0..<second.latencyCount, using: &random)
                    if slot < latencySamplesPerSecond { second.latencies[slot] = latency }
                }
            }
        }
        stream.totalEntries += report.entries
        stream.totalRows += report.insertedRows
        stream.totalDeadLetters += report.deadLettered
        stream.lastProgress = .now
    }

    func recordFailure(stream: String, target: String, error: any Error) {
        let now = Timestamp.now()
        state.withLock { state in
            Self.withSecond(&state.streams[stream, default: StreamState()], at: now) { $0.failures += 1 }
        }
        Counter(label: "adworker_errors_total", dimensions: labels(stream) + [("target", target)] + Self.errorLabels(error)).increment()
    }

    /// Bounded labels from an error's code, classified where it was made (the C boundary): the
    /// code's name, and for a database error its SQLSTATE (a fixed list in PostgreSQL).
    static func errorLabels(_ error: any Error) -> [(String, String)] {
        switch error {
        case let error as PostgresError: [("kind", "\(error.code)"), ("sqlstate", error.sqlState ?? "none")]
        case let error as RedisError: [("kind", "\(error.code)")]
        default: [("kind", "other")]
        }
    }

    /// Every dead-letter code, as the `reason` label.
    static let deadLetterReasons = DeadLetterCode.allCases.map(\.rawValue)

    /// Creates the stream's counters and circuit gauges at 0, so that the first dead letters or
    /// the first open circuit are a change a rule's `increase()` or `changes()` can see, and a
    /// dashboard shows 0 rather than no data.
    func declare(stream: String) {
        let dimensions = labels(stream)
        for reason in Self.deadLetterReasons {
            Counter(label: "adworker_dead_letters_total", dimensions: dimensions + [("reason", reason)]).increment(by: 0)
        }
        Counter(label: "adworker_dead_letters_trimmed_total", dimensions: dimensions).increment(by: 0)
        for name in ["adworker_entries_read_total", "adworker_rows_inserted_total", "adworker_entries_acknowledged_total", "adworker_duplicate_rows_skipped_total"] {
            Counter(label: name, dimensions: dimensions).increment(by: 0)
        }
        // Another consumer of the stream may have one open already: leave its 1 alone.
        let open = state.withLock { state in
            Set(state.consumers.values.filter { $0.stream == stream }.flatMap(\.openCircuits).map(\.target))
        }
        for target in ["redis", "postgres"] where !open.contains(target) {
            Gauge(label: "adworker_circuit_open", dimensions: dimensions + [("target", target)]).record(0)
        }
    }

    /// The lease is taken and every stream's consumers are launched (each stream's start reading
    /// once its group exists; one that cannot have one is a problem of its own).
    func markStarted() {
        state.withLock { $0.started = true }
    }

    public var hasStarted: Bool { state.withLock { $0.started } }

    /// A consumer of `stream` read and found nothing new: it is keeping up, which counts as progress.
    func caughtUp(stream: String) {
        state.withLock { state in state.streams[stream, default: StreamState()].lastProgress = .now }
    }

    func consumer(_ consumer: String, stream: String, state newState: String) {
        let alive = state.withLock { state -> Int in
            state.consumers[ConsumerKey(stream: stream, name: consumer), default: ConsumerState(stream: stream, name: consumer, state: newState)]
                .state = newState
            return state.consumers.values.count { $0.stream == stream && $0.state != "stopped" }
        }
        Gauge(label: "adworker_workers_alive", dimensions: labels(stream)).record(alive)
    }

    /// A circuit of one of a consumer's tasks (`role`: reader, sink 1) opened or closed.
    func circuit(_ target: String, role: String, of consumer: String, stream: String, isOpen: Bool) {
        let anyOpen = state.withLock { state -> Bool in
            let key = ConsumerKey(stream: stream, name: consumer)
            var entry = state.consumers[key] ?? ConsumerState(stream: stream, name: consumer, state: "running")
            let circuit = OpenCircuit(target: target, role: role)
            if isOpen { entry.openCircuits.insert(circuit) } else { entry.openCircuits.remove(circuit) }
            state.consumers[key] = entry
            return state.consumers.values.contains { $0.stream == stream && $0.openCircuits.contains { $0.target == target } }
        }
        Gauge(label: "adworker_circuit_open", dimensions: labels(stream) + [("target", target)]).record(anyOpen ? 1 : 0)
    }

    /// Raises (with a reason that names the fix) or clears (nil) a condition that makes the worker
    /// not ready; `key` says what raised it, so each clears its own.
    func problem(_ key: String, _ reason: String?) {
        state.withLock { state in state.problems[key] = reason }
    }

    /// A target refuses for a reason retrying cannot fix (nil: no longer): raised as a problem,
    /// so `/readyz` names the fix, and counted in `adworker_permanent_errors{target,kind}`.
    func permanentFailure(_ key: String, target: String, _ failure: PermanentFailure?) {
        let gauges = state.withLock { state -> [(kind: String, count: Int)] in
            let previous = state.permanent[key]
            state.problems[key] = failure?.fix
            state.permanent[key] = failure.map { (target, $0.kind) }
            let kinds = Set([previous?.kind, failure?.kind].compactMap { $0 })
            return kinds.map { kind in (kind, state.permanent.values.count { $0.target == target && $0.kind == kind }) }
        }
        for gauge in gauges {
            Gauge(label: "adworker_permanent_errors", dimensions: [("target", target), ("kind", gauge.kind)]).record(gauge.count > 0 ? 1 : 0)
        }
    }

    /// What the readiness probe found for `target` (nil: it answered as it should).
    func recordProbe(_ target: String, failure: String?) {
        state.withLock { state in state.probes[target] = ProbeResult(failure: failure, at: .now) }
        Gauge(label: "adworker_target_up", dimensions: [("target", target)]).record(failure == nil ? 1 : 0)
    }

    /// Queue figures from XLEN and XINFO GROUPS, sampled periodically.
    func recordQueue(stream: String, length: Int, lag: Int?, pending: Int, deadLetters: Int? = nil) {
        let sinceProgress = state.withLock { state -> Duration in
            var entry = state.streams[stream] ?? StreamState()
            entry.deadLetters = deadLetters
            entry.streamLength = length
            entry.lag = lag
            entry.pending = pending
            state.streams[stream] = entry
            return (entry.lastProgress ?? started).duration(to: .now)
        }
        let dimensions = labels(stream)
        Gauge(label: "adworker_stream_length", dimensions: dimensions).record(length)
        Gauge(label: "adworker_pending_entries", dimensions: dimensions).record(pending)
        if let lag { Gauge(label: "adworker_consumer_group_lag", dimensions: dimensions).record(lag) }
        if let deadLetters { Gauge(label: "adworker_dead_letter_stream_length", dimensions: dimensions).record(deadLetters) }
        Gauge(label: "adworker_seconds_since_progress", dimensions: dimensions).record(sinceProgress.inSeconds)
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
                // The interval's completed seconds: [end - interval, end).
                let seconds = stream.seconds.filter { $0.time >= end - interval && $0.time < end }
                let rows = seconds.reduce(0) { $0 + $1.rows }
                streams[name] = HistoryStreamPoint(
                    rowsPerSecond: Double(rows) / Double(interval), lag: stream.lag,
                    latencyP99Milliseconds: Self.quantile(0.99, of: seconds.flatMap(\.latencies).sorted())
                )
            }
            state.history.append(HistoryPoint(time: Double(end), streams: streams))
            if state.history.count > History.capacity { state.history.removeFirst(state.history.count - History.capacity) }
        }
    }

    private static func quantile(_ q: Double, of sorted: [Int64]) -> Double? {
        guard !sorted.isEmpty else { return nil }
        return Double(sorted[min(sorted.count - 1, Int((Double(sorted.count) * q).rounded(.up)) - 1)])
    }

    private static func withSecond(_ stream: inout StreamState, at now: Timestamp, _ body: (inout Second) -> Void) {
        let second = now.millisecondsSinceEpoch / 1000
        let slot = Int(second % Int64(window))
        if stream.seconds[slot].time != second { stream.seconds[slot] = Second(time: second) }
        body(&stream.seconds[slot])
    }

    // MARK: Reading

    /// Consumers with a circuit open: targets they cannot reach right now.
    public var openCircuits: [(consumer: String, target: String)] {
        state.withLock { state in
            state.consumers.sorted { $0.key < $1.key }.flatMap { key, consumer in
                consumer.openCircuits.sorted().map { ("\(key.stream)/\(key.name)", $0.description) }
            }
        }
    }

    /// Why the worker is not ready, from what it already knows: open circuits, raised problems and
    /// the probe's last findings (stale after `probeMaximumAge`). Asking costs the servers nothing.
    public func notReadyReasons(probing targets: [String], probeMaximumAge: Duration) -> [String] {
        let circuits = openCircuits.map { "\($0.target) circuit open on consumer \($0.consumer)" }
        return state.withLock { state in
            // Several consumers meeting one refusal raise one reason each: say it once.
            var reasons: [String] = []
            for reason in circuits + state.problems.keys.sorted().compactMap({ state.problems[$0] }) where !reasons.contains(reason) {
                reasons.append(reason)
            }
            for target in targets {
                guard let probe = state.probes[target] else {
                    reasons.append("\(target) not probed yet")
                    continue
                }
                if let failure = probe.failure {
                    reasons.append("\(target) unreachable: \(failure)")
                } else if probe.at.duration(to: .now) > probeMaximumAge {
                    reasons.append("\(target) not probed for \(probe.at.duration(to: .now))")
                }
            }
            return reasons
        }
    }

    /// Streams whose consumers have neither committed a batch nor caught up for longer than
    /// `timeout` while entries wait (lag or pending), with nothing that explains it: no circuit
    /// open on the stream and no problem raised (those already say why, and a restart would not
    /// help). One line per stuck stream; empty when all make progress or have nothing to do.
    public func stalledStreams(after timeout: Duration, now: ContinuousClock.Instant = .now) -> [String] {
        state.withLock { state in
            guard state.problems.isEmpty else { return [] }
            return state.streams.keys.sorted().compactMap { name -> String? in
                let stream = state.streams[name]!
                let waiting = (stream.lag ?? 0) + (stream.pending ?? 0)
                let since = (stream.lastProgress ?? started).duration(to: now)
                let explained = state.consumers.values.contains { $0.stream == name && !$0.openCircuits.isEmpty }
                guard waiting > 0, since > timeout, !explained else { return nil }
                return "\(name): no batch committed for \(Int(since.inSeconds)) s while \(waiting) entries wait, and no circuit is open"
            }
        }
    }

    public func snapshot(now: Timestamp = .now()) -> Snapshot {
        let current = now.millisecondsSinceEpoch / 1000
        // Rates are per second of the window actually covered: a worker up 11 s has 11 s of data, not 60.
        let covered = min(Double(Self.window), max(1, Double(now.millisecondsSinceEpoch - startedAt.millisecondsSinceEpoch) / 1000))
        return state.withLock { state in
            let streams = state.streams.keys.sorted().map { name -> StreamSnapshot in
                let stream = state.streams[name]!
                // The last minute, the second in progress included.
                let seconds = stream.seconds.filter { $0.time <= current && $0.time > current - Int64(Self.window) }
                let entries = seconds.reduce(0) { $0 + $1.entries }
                let rows = seconds.reduce(0) { $0 + $1.rows }
                let dead = seconds.reduce(0) { $0 + $1.deadLetters }
                let latencies = seconds.flatMap(\.latencies).sorted()
                func quantile(_ q: Double) -> Double? { Self.quantile(q, of: latencies) }
                let queue = stream.lag.flatMap { lag in stream.pending.map { lag + $0 } }
                return StreamSnapshot(
                    stream: name, entriesPerSecond: Double(entries) / covered, rowsPerSecond: Double(rows) / covered,
                    latencyP50Milliseconds: quantile(0.5), latencyP95Milliseconds: quantile(0.95), latencyP99Milliseconds: quantile(0.99),
                    errorRate: entries == 0 ? 0 : Double(dead) / Double(entries), failedAttempts: seconds.reduce(0) { $0 + $1.failures },
                    totalEntries: stream.totalEntries, totalRows: stream.totalRows, totalDeadLetters: stream.totalDeadLetters,
                    streamLength: stream.streamLength, lag: stream.lag, pending: stream.pending, queueLength: queue,
                    deadLetterStreamLength: stream.deadLetters
                )
            }
            let consumers = state.consumers.keys.sorted().map { key in
                let consumer = state.consumers[key]!
                return ConsumerSnapshot(consumer: key.name, stream: key.stream, state: consumer.state, openCircuits: consumer.openCircuits.sorted().map(\.description))
            }
            return Snapshot(
                version: version, uptimeSeconds: (ContinuousClock.now - started).inSeconds, streams: streams, consumers: consumers,
                history: History(points: state.history)
            )
        }
    }
}

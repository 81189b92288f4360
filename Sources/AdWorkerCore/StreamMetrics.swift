import AdTelemetryRecords
import AdWorkerPostgres
import AdWorkerRedis
import Metrics

/// One stream's metric handles, each made once: a batch or a queue sample records into handles
/// the stream already has instead of asking the factory (a lock and a lookup per handle) again.
/// The counters and circuit gauges are made with the stream (``declare()`` sets them to 0);
/// the others when first recorded, so a series appears when it did before (the lag only where
/// Redis reports one). Labels: `stream`, and `shard` for a sharded stream.
struct StreamMetrics: Sendable {
    /// The targets a stream's circuits and errors name.
    enum Target: String, CaseIterable, Sendable {
        case redis
        case postgres
    }

    /// A batch's histograms.
    struct BatchHandles: Sendable {
        let batchSize: Recorder
        let insertDuration: Timer
        let endToEndLatency: Timer
    }

    /// A queue sample's gauges; nil where the sample has no such figure.
    struct QueueHandles: Sendable {
        let streamLength: Gauge
        let pendingEntries: Gauge
        let secondsSinceProgress: Gauge
        var consumerGroupLag: Gauge?
        var deadLetterStreamLength: Gauge?
    }

    /// Every dead-letter code, as the `reason` label.
    static let deadLetterReasons = DeadLetterCode.allCases.map(\.rawValue)

    private let factory: any MetricsFactory
    let dimensions: [(String, String)]
    let entriesRead: Counter
    let rowsInserted: Counter
    let entriesAcknowledged: Counter
    let duplicateRowsSkipped: Counter
    /// By reason: every reason in ``deadLetterReasons``.
    let deadLetters: [String: Counter]
    let deadLettersTrimmed: Counter
    let circuitOpen: [Target: Gauge]
    private var batch: BatchHandles?
    private var queue: QueueHandles?
    private var workersAlive: Gauge?

    init(stream: String, shard: Int?, factory: any MetricsFactory) {
        let dimensions = [("stream", stream)] + (shard.map { [("shard", "\($0)")] } ?? [])
        self.factory = factory
        self.dimensions = dimensions
        entriesRead = Counter(label: "adworker_entries_read_total", dimensions: dimensions, factory: factory)
        rowsInserted = Counter(label: "adworker_rows_inserted_total", dimensions: dimensions, factory: factory)
        entriesAcknowledged = Counter(label: "adworker_entries_acknowledged_total", dimensions: dimensions, factory: factory)
        duplicateRowsSkipped = Counter(label: "adworker_duplicate_rows_skipped_total", dimensions: dimensions, factory: factory)
        deadLetters = Dictionary(
            uniqueKeysWithValues: Self.deadLetterReasons.map { reason in
                (reason, Counter(label: "adworker_dead_letters_total", dimensions: dimensions + [("reason", reason)], factory: factory))
            }
        )
        deadLettersTrimmed = Counter(label: "adworker_dead_letters_trimmed_total", dimensions: dimensions, factory: factory)
        circuitOpen = Dictionary(
            uniqueKeysWithValues: Target.allCases.map { target in
                (target, Gauge(label: "adworker_circuit_open", dimensions: dimensions + [("target", target.rawValue)], factory: factory))
            }
        )
    }

    /// The counters at 0, so that the first dead letters are a change a rule's `increase()` can
    /// see, and a dashboard shows 0 rather than no data.
    func declare() {
        for counter in deadLetters.values { counter.increment(by: 0) }
        for counter in [deadLettersTrimmed, entriesRead, rowsInserted, entriesAcknowledged, duplicateRowsSkipped] {
            counter.increment(by: 0)
        }
    }

    /// A dead letter's counter, made with the stream's other handles.
    func deadLetter(_ code: DeadLetterCode) -> Counter {
        deadLetters[code.rawValue] ?? Counter(label: "adworker_dead_letters_total", dimensions: dimensions + [("reason", code.rawValue)], factory: factory)
    }

    /// The gauge of the stream's circuits to `target` (a target outside ``Target`` gets a handle of its own).
    func circuit(_ target: String) -> Gauge {
        Target(rawValue: target).flatMap { circuitOpen[$0] }
            ?? Gauge(label: "adworker_circuit_open", dimensions: dimensions + [("target", target)], factory: factory)
    }

    mutating func batchHandles() -> BatchHandles {
        if let batch { return batch }
        let handles = BatchHandles(
            batchSize: Recorder(label: "adworker_batch_size", dimensions: dimensions, factory: factory),
            insertDuration: Timer(label: "adworker_insert_duration_seconds", dimensions: dimensions, factory: factory),
            endToEndLatency: Timer(label: "adworker_end_to_end_latency_seconds", dimensions: dimensions, factory: factory)
        )
        batch = handles
        return handles
    }

    mutating func queueHandles(lag: Bool, deadLetters: Bool) -> QueueHandles {
        var handles = queue ?? QueueHandles(
            streamLength: Gauge(label: "adworker_stream_length", dimensions: dimensions, factory: factory),
            pendingEntries: Gauge(label: "adworker_pending_entries", dimensions: dimensions, factory: factory),
            secondsSinceProgress: Gauge(label: "adworker_seconds_since_progress", dimensions: dimensions, factory: factory)
        )
        if lag, handles.consumerGroupLag == nil {
            handles.consumerGroupLag = Gauge(label: "adworker_consumer_group_lag", dimensions: dimensions, factory: factory)
        }
        if deadLetters, handles.deadLetterStreamLength == nil {
            handles.deadLetterStreamLength = Gauge(label: "adworker_dead_letter_stream_length", dimensions: dimensions, factory: factory)
        }
        queue = handles
        return handles
    }

    mutating func workersAliveGauge() -> Gauge {
        if let workersAlive { return workersAlive }
        let gauge = Gauge(label: "adworker_workers_alive", dimensions: dimensions, factory: factory)
        workersAlive = gauge
        return gauge
    }

    /// A failed attempt, by target and the error's code. Failures are retried with backoff, so
    /// this handle is made per failure: its labels come from the error.
    func recordFailure(target: String, error: any Error) {
        Counter(label: "adworker_errors_total", dimensions: dimensions + [("target", target)] + Self.errorLabels(error), factory: factory).increment()
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
}

extension StreamMetrics.BatchHandles {
    func record(_ report: BatchReport, insertDuration duration: Duration, latencies: [Int64]) {
        batchSize.record(report.entries)
        insertDuration.record(duration: duration)
        for milliseconds in latencies { endToEndLatency.recordMilliseconds(milliseconds) }
    }
}

extension StreamMetrics.QueueHandles {
    func record(length: Int, lag: Int?, pending: Int, deadLetters: Int?, sinceProgress: Duration) {
        streamLength.record(length)
        pendingEntries.record(pending)
        if let lag { consumerGroupLag?.record(lag) }
        if let deadLetters { deadLetterStreamLength?.record(deadLetters) }
        secondsSinceProgress.record(sinceProgress.inSeconds)
    }
}

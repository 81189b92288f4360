public import AdTelemetryRecords

/// Where a batch's time goes between its read and its acknowledgement, for `adworker bench`.
/// The reader and then one sink call it at each stage boundary when one is installed
/// (``WorkerService/init(configuration:logger:status:stageObserver:onBatch:)``); with none the
/// consumer makes no call and keeps no timing.
public protocol BatchStageObserver: Sendable {
    /// `batch` reached `boundary` at `instant` (on the monotonic clock). Called from the
    /// consumer's own tasks: keep it cheap.
    func batch(_ batch: BatchStageKey, reached boundary: BatchStageBoundary, at instant: ContinuousClock.Instant)
}

/// Names a batch: no two batches a consumer has in flight share an entry.
public struct BatchStageKey: Hashable, Sendable {
    public var stream: String
    public var consumer: String
    /// Its first entry's id.
    public var firstEntry: StreamEntryID
}

/// The boundaries between a batch's stages, in the order it reaches them.
public enum BatchStageBoundary: Sendable {
    /// The reader handed it to the sinks; `buffered`: how long since the read that returned its
    /// oldest entry it waited for a free sink (zero for redelivered entries).
    case handedOver(buffered: Duration)
    /// A sink took it.
    case taken
    /// Its entries are decoded and their rows encoded; the COPY starts.
    case prepared
    /// Its rows are committed; `microsecondsSinceEpoch` is the wall clock then.
    case committed(microsecondsSinceEpoch: Int64)
    /// Its entries are acknowledged and its dead letters written: the last call about it.
    case acknowledged(BatchReport)
}

extension Optional where Wrapped == any BatchStageObserver {
    /// Tells the observer, if one is installed, that `batch` reached the boundary `boundary`
    /// makes of the instant now; with none, nothing is read or built.
    func batch(_ batch: EntryBatch, of stream: String, consumer: String, reached boundary: (ContinuousClock.Instant) -> BatchStageBoundary) {
        guard case .some(let observer) = self, let first = batch.entries.first else { return }
        let now = ContinuousClock.now
        observer.batch(BatchStageKey(stream: stream, consumer: consumer, firstEntry: first.id), reached: boundary(now), at: now)
    }
}

import AdWorkerCore
import Synchronization

/// The stages of one batch's way through the worker, on the monotonic clock; `bench` subtracts
/// their sum from an entry's end-to-end latency to get its time in Redis and in the reply's way
/// to the reader.
struct BatchStages: Sendable {
    /// From the read that returned the batch's oldest entry to its hand-over: waiting for a free sink.
    var buffered: Duration = .zero
    /// From the hand-over until a sink took the batch from the channel.
    var queued: Duration = .zero
    /// Decoding the entries and encoding their rows.
    var prepared: Duration = .zero
    /// COPY and COMMIT, with any retries.
    var inserted: Duration = .zero
    /// When the commit returned, wall clock in microseconds since the epoch (`committedAt` has milliseconds).
    var committedAtMicroseconds: Int64 = 0
    /// From the commit to the XACK's reply (and the dead letters'): the sink is busy meanwhile,
    /// though the batch's latency has ended.
    var acknowledged: Duration = .zero

    /// The batch's time in the worker, from the read to the commit.
    var inWorker: Duration { buffered + queued + prepared + inserted }
}

/// What `bench` installs as the worker's ``BatchStageObserver``: puts each batch's boundaries
/// together into its ``BatchStages`` and hands them over with the batch's report once it is
/// acknowledged. Only batches in flight are kept.
final class BatchStageRecorder: BatchStageObserver {
    /// A batch on its way: its stages so far, and the instant of the last boundary it reached.
    private struct Partial {
        var stages = BatchStages()
        var last: ContinuousClock.Instant
    }

    private let inFlight = Mutex<[BatchStageKey: Partial]>([:])
    private let onBatch: @Sendable (BatchReport, BatchStages) -> Void

    init(onBatch: @escaping @Sendable (BatchReport, BatchStages) -> Void) {
        self.onBatch = onBatch
    }

    func batch(_ batch: BatchStageKey, reached boundary: BatchStageBoundary, at instant: ContinuousClock.Instant) {
        let done = inFlight.withLock { inFlight -> (BatchReport, BatchStages)? in
            if case .handedOver(let buffered) = boundary {
                inFlight[batch] = Partial(stages: BatchStages(buffered: buffered), last: instant)
                return nil
            }
            guard var partial = inFlight[batch] else { return nil }
            let stage = partial.last.duration(to: instant)
            partial.last = instant
            switch boundary {
            case .handedOver: return nil
            case .taken: partial.stages.queued = stage
            case .prepared: partial.stages.prepared = stage
            case .committed(let microseconds):
                partial.stages.inserted = stage
                partial.stages.committedAtMicroseconds = microseconds
            case .acknowledged(let report):
                partial.stages.acknowledged = stage
                inFlight[batch] = nil
                return (report, partial.stages)
            }
            inFlight[batch] = partial
            return nil
        }
        if let (report, stages) = done { onBatch(report, stages) }
    }
}

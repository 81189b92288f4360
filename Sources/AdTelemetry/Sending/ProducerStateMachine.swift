import AdTelemetryRecords
import AdWorkerConnectionThread
import AdWorkerRedis

/// Every decision of the producer, as a value type: what to send and what to hold, when to look
/// for records whose outcome is unknown, what goes to the spool and what is read back from it, and
/// when to give up (at ``Configuration/maximumRetryDuration``, and at the shutdown grace). The
/// producer actor feeds it calls (`send`, `submit`, shutdown) and its flusher feeds it what each
/// round did; it returns what to do next. Generic over the clock, so tests move time by hand, and
/// over who waits for an outcome (a continuation in the producer, a number in tests).
///
/// A flush round leaves the machine as a ``Round``, whose own decisions (after a lookup, after a
/// pipeline) are made off the actor, and comes back in the next ``next(_:)``: one visit to the
/// actor per round.
struct ProducerStateMachine<Clock: _Concurrency.Clock, Waiter: Sendable> where Clock.Duration == Duration {
    typealias Instant = Clock.Instant
    typealias Send = PendingSend<Instant, Waiter>
    typealias Results = [Result<StreamEntryID, TelemetryProducerError>]

    struct Configuration: Sendable {
        /// Every stream records go to: a record's route is an index into these.
        var streams: [String]
        var maximumBufferedRecords: Int
        var maximumPipelineLength: Int
        var maximumRetryDuration: Duration
        var shutdownRetryDuration: Duration
    }

    /// Why records were not taken.
    enum Refusal: Equatable, Sendable {
        case shutDown
        /// The buffer holds this many records already.
        case bufferFull(waiting: Int)
    }

    /// Where the records of a ``TelemetryProducer/submit(_:)`` go.
    enum SubmitDecision: Equatable, Sendable {
        /// Into memory, to be sent.
        case queued
        /// To the spool (counted in ``spooledRecords`` already); then ``submitSpilled(refused:unwritable:)``.
        case spill
        case refused(Refusal)
    }

    let configuration: Configuration
    let clock: Clock
    var pending: [Send] = []
    /// Records queued and not yet settled, a spool batch being sent included.
    var bufferedRecords = 0
    private(set) var isClosed = false
    var closedAt: Instant?
    /// Since when sends have been held back for retries (nil: Redis answers).
    var unavailableSince: Instant?
    /// Whether a spool is open (the producer runs with a spool directory).
    var spoolOpen = false
    /// Records on disk, as far as the producer knows (appends under way included): while there
    /// are any, new ``submit(_:)`` records go there too, so they are sent in order.
    var spooledRecords = 0
    /// The spool holds records for a stream this configuration does not write: it is not read.
    var spoolBlocked = false
    /// Records of the batch read back from the spool and being sent (counted in ``spooledRecords``).
    var spoolBatchInFlight = 0
    /// When the spool's disk last refused records.
    var spoolRefusedAt: Instant?
    /// ``submit(_:)`` calls between choosing the spool and its answer.
    var submitSpills = 0
    /// Each stream's newest id Redis confirmed: where to look for records of a pipeline cut later.
    var lastConfirmed: [StreamEntryID?]
    /// Pauses between rounds that Redis did not take, jittered so that many producers coming
    /// back after a Redis restart do not retry in step.
    var backoff = Self.retryBackoff
    /// 50 ms doubling to ``DeliveryContract/longestRetryPause``: retries while Redis restarts or
    /// fails over, without spinning.
    static var retryBackoff: Backoff { Backoff(initial: .milliseconds(50), maximum: DeliveryContract.longestRetryPause) }
    /// A spool batch given up in this flush (shutting down, or cancelled) stays on disk: it is not
    /// read again now, or the flusher would take it, give it up and take it again without end.
    var spoolBatchReleased = false

    init(configuration: Configuration, clock: Clock) {
        self.configuration = configuration
        self.clock = clock
        self.lastConfirmed = Array(repeating: nil, count: configuration.streams.count)
    }

    // MARK: Calls

    /// Counts `count` more records into the bounded buffer, or says why not.
    mutating func admit(_ count: Int) -> Refusal? {
        guard !isClosed else { return .shutDown }
        guard bufferedRecords + count <= configuration.maximumBufferedRecords else { return .bufferFull(waiting: bufferedRecords) }
        bufferedRecords += count
        return nil
    }

    /// Queues admitted records (``admit(_:)``).
    mutating func append(_ records: [PendingRecord], waiter: Waiter?) {
        pending.append(Send(records: records, waiter: waiter, enqueuedAt: clock.now))
    }

    /// Queues a ``TelemetryProducer/submit(_:)``'s records in memory, or sends them to the spool:
    /// when memory is full, Redis is away, or the spool holds records not yet handed out (which go first).
    mutating func submit(_ records: [PendingRecord]) -> SubmitDecision {
        let count = records.count
        // The batch being sent from the spool is not waiting: once it is all that is left, new
        // records go to memory again, though records keep coming while it is out.
        let waitingOnDisk = spooledRecords - spoolBatchInFlight > 0
        let redisAway = unavailableSince != nil && spoolTakesRecords
        if spoolOpen, !isClosed, waitingOnDisk || redisAway || bufferedRecords + count > configuration.maximumBufferedRecords {
            spooledRecords += count
            submitSpills += 1
            return .spill
        }
        if let refusal = admit(count) { return .refused(refusal) }
        append(records, waiter: nil)
        return .queued
    }

    /// A ``SubmitDecision/spill`` was written, all but `refused` records.
    mutating func submitSpilled(refused: Int, unwritable: Bool) {
        submitSpills -= 1
        spilled(refused: refused, unwritable: unwritable)
    }

    /// Records given to the spool were written, all but `refused`; `unwritable`: the disk refused them.
    mutating func spilled(refused: Int, unwritable: Bool) {
        spooledRecords -= refused
        if unwritable { spoolRefusedAt = clock.now }
    }

    /// Whether records go to the spool while Redis is away: not for a while after its disk refused
    /// one (full, an I/O error), so that they wait in memory, as without a spool, and are not refused.
    var spoolTakesRecords: Bool {
        spoolRefusedAt.map { $0.duration(to: clock.now) > .seconds(5) } ?? true
    }

    /// The spool was opened holding `records` from an earlier run: they are sent first.
    mutating func spoolOpened(records: Int) {
        spoolOpen = true
        spooledRecords = records
    }

    /// The spool is closed: nothing goes there any more.
    mutating func spoolClosed() { spoolOpen = false }

    /// Graceful shutdown began: no new records; held ones are retried for the shutdown grace.
    mutating func close() {
        guard !isClosed else { return }
        isClosed = true
        closedAt = clock.now
    }
}

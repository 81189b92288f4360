import AdTelemetryRecords

/// Every decision of one stream consumer's reader, as a value type: the reader loop feeds it
/// events (a read returned, sinks became free, a claim returned, shutdown) and performs the action
/// it returns. Generic over the clock's instant, so tests move time by hand.
///
/// Batching adapts to load: a free sink gets whatever has been read at once, so at low load rows
/// arrive within one read and one commit; while every sink is busy, entries keep accumulating up
/// to ``Configuration/maximumEntries`` and ``Configuration/maximumBytes``, so under backlog the
/// COPYs grow toward one large COPY. Memory is bounded by those limits (plus one read) per buffer.
///
/// Every read, claim and re-read asks for as many entries as fit ``Configuration/maximumBytes``
/// at what entries weigh, each kind from what it has returned itself: `>` reads from the reads
/// before; a claim pass and a scan of own pending entries from their own earlier steps, starting
/// at ``Configuration/initialEntryBytes`` on each pass (what the last pass, or the reads, met says
/// nothing of what is idle or pending now). A reply holds more than the bound only when its
/// entries are heavier than those of the same kind before it, and the next one is sized by them.
struct ConsumerStateMachine<Instant: InstantProtocol> where Instant.Duration == Duration {
    struct Configuration {
        /// Most entries in one COPY.
        var maximumEntries: Int
        /// Most bytes of entry fields in one COPY (at least one entry, whatever its size).
        var maximumBytes: Int
        /// How long a partial batch may wait for more entries while a sink is free; zero hands it
        /// over at once.
        var linger: Duration
        /// Sinks taking batches in turn.
        var lanes: Int
        /// How often idle entries of other consumers are claimed.
        var claimInterval: Duration
        /// The longest a read blocks: shutdown and claims are noticed within it.
        var maximumReadBlock: Duration
        /// Stop once nothing new and nothing pending is left.
        var drain: Bool
        /// Draining, how long a read waits for new entries before the stream counts as drained.
        var drainReadBlock: Duration
        /// What an entry is taken to weigh until one has been read: the most one may weigh and
        /// still decode, so the first read, claim or re-read stays within ``maximumBytes``.
        var initialEntryBytes: Int
    }

    /// Entries to hand to a sink as one batch.
    struct Batch: Equatable, Sendable {
        var entries: [StreamEntry]
        var redelivered: Bool
        /// Delivery counts of redelivered entries; fresh entries have been delivered once.
        var deliveries: [StreamEntryID: Int] = [:]
        /// When the read that returned the oldest of these fresh entries ended (for what is left of
        /// a batch split under its bounds, when the first part was handed over); nil when redelivered.
        var readAt: Instant? = nil

        /// The same entries (by id), path and counts.
        static func == (lhs: Batch, rhs: Batch) -> Bool {
            lhs.entries.map(\.id) == rhs.entries.map(\.id) && lhs.redelivered == rhs.redelivered && lhs.deliveries == rhs.deliveries
        }
    }

    enum Action: Equatable {
        /// This consumer's own pending entries after an id (a previous run's, or a read's whose
        /// reply was lost), up to a count.
        case readOwnPending(after: StreamEntryID, count: Int)
        /// New entries (`>`), up to a count; block for up to the duration, or not at all (nil).
        case readNew(count: Int, block: Duration?)
        /// One XAUTOCLAIM step from a cursor.
        case claim(cursor: StreamEntryID, count: Int)
        case handOff(Batch)
        /// Every sink is busy and nothing useful can be read meanwhile.
        case waitForSink
        /// Draining: ask Redis whether entries are pending anywhere in the group.
        case checkPending
        case sleep(Duration)
        /// Nothing more will be handed over: close the sinks' channel and return.
        case finish
    }

    private enum Phase: Equatable {
        case running
        case shuttingDown
        case finished
    }

    let configuration: Configuration
    private var phase: Phase = .running
    /// Where the scan of this consumer's own pending entries goes on; nil when none is under way.
    /// It runs first at start (a previous run's entries) and again after a lost reply.
    private var pendingScan: StreamEntryID? = StreamEntryID(milliseconds: 0, sequence: 0)
    private var buffer: [StreamEntry] = []
    private var bufferBytes = 0
    private var oldestArrival: Instant?
    /// Own pending and claimed entries waiting for a sink; never mixed with fresh ones, which
    /// take the fast path.
    private var redelivered: [Batch] = []
    private(set) var freeLanes: Int
    private var nextClaim: Instant
    private var claimCursor = StreamEntryID(milliseconds: 0, sequence: 0)
    private var circuitOpen = false
    /// The last read found nothing new: do not read again before something changes.
    private var lastReadWasEmpty = false
    /// Draining: Redis said others still hold pending entries; wait before asking again.
    private var othersHoldPending = false
    /// What entries weigh, from those `>` reads returned (nil before any): `>` reads are sized by it.
    private var entryBytes: Int?
    /// The same for the claim pass under way (nil at its start).
    private var claimEntryBytes: Int?
    /// The same for the scan of own pending entries under way (nil at its start).
    private var pendingEntryBytes: Int?
    /// A claim pass is not through the pending list: one `>` read goes before its next step.
    private var readBeforeClaim = false

    init(configuration: Configuration, now: Instant) {
        precondition(
            configuration.maximumEntries > 0 && configuration.maximumBytes > 0 && configuration.lanes > 0 && configuration.initialEntryBytes > 0
        )
        self.configuration = configuration
        self.freeLanes = configuration.lanes
        self.nextClaim = now
    }

    var bufferedEntries: Int { buffer.count }
    var bufferedBytes: Int { bufferBytes }

    // MARK: Events

    /// A read of this consumer's own pending entries returned: `last` is the last id Redis
    /// returned (nil: none, the scan is done); `batch` holds those of them not already in a sink
    /// (the reader drops those). Entries still in the buffer are dropped here, or they would be
    /// stored twice.
    mutating func ownPendingReturned(_ batch: Batch, through last: StreamEntryID?) {
        guard phase == .running, pendingScan != nil else { return }
        pendingScan = last
        pendingEntryBytes = Self.weighed(batch.entries, from: pendingEntryBytes)
        var batch = batch
        dropBuffered(from: &batch)
        if !batch.entries.isEmpty { redelivered.append(batch) }
    }

    /// A read of new entries, or a claim, failed after Redis may have run it (the connection
    /// broke, or the reply did not come in time): entries may have been delivered to this
    /// consumer and never seen. They are in its pending list: re-read it at once, instead of
    /// leaving them to a claim after the claim idle time.
    mutating func replyLost() {
        guard phase == .running else { return }
        pendingScan = StreamEntryID(milliseconds: 0, sequence: 0)
        pendingEntryBytes = nil
    }

    mutating func readReturned(_ entries: [StreamEntry], at now: Instant) {
        lastReadWasEmpty = entries.isEmpty
        guard !entries.isEmpty else { return }
        let bytes = entries.reduce(0) { $0 + $1.fields.byteCount }
        if buffer.isEmpty { oldestArrival = now }
        buffer.append(contentsOf: entries)
        bufferBytes += bytes
        entryBytes = Self.weighed(bytes: bytes, entries: entries.count, from: entryBytes)
    }

    /// One XAUTOCLAIM step's outcome: `batch` is nil when it claimed nothing new. Entries still
    /// in the buffer (read, waiting for a sink for longer than the claim idle time) come back from
    /// a claim too; they are dropped here, or they would be stored twice.
    mutating func claimReturned(_ batch: Batch?, next cursor: StreamEntryID, at now: Instant) {
        claimCursor = cursor
        if var batch {
            claimEntryBytes = Self.weighed(batch.entries, from: claimEntryBytes)
            dropBuffered(from: &batch)
            if !batch.entries.isEmpty { redelivered.append(batch) }
        }
        let passDone = cursor == StreamEntryID(milliseconds: 0, sequence: 0)
        if passDone { claimEntryBytes = nil }
        // A pass not yet through the pending list goes on at once (a step examines only about
        // ten times its count, and counts are small when entries are large), after one `>` read:
        // thousands of steps claiming nothing (entries still in flight) must not hold up new entries.
        readBeforeClaim = !passDone
        nextClaim = passDone ? now.advanced(by: configuration.claimInterval) : now
    }

    mutating func sinksFreed(_ count: Int) {
        guard count > 0 else { return }
        freeLanes = min(configuration.lanes, freeLanes + count)
        lastReadWasEmpty = false
    }

    /// Whether any of this consumer's sinks has a circuit open: claiming then would only pile up
    /// delivery counts on entries whose fault the outage is not.
    mutating func sinkCircuit(isOpen: Bool) {
        circuitOpen = isOpen
    }

    mutating func pendingChecked(othersHoldPending: Bool, at now: Instant) {
        self.othersHoldPending = othersHoldPending
        if othersHoldPending {
            // Their entries may become idle enough to claim.
            nextClaim = now
        } else {
            phase = .finished
        }
    }

    mutating func slept() {
        othersHoldPending = false
        lastReadWasEmpty = false
    }

    /// Graceful shutdown: hand over what was read, read nothing more.
    mutating func shutDown() {
        if phase != .finished { phase = .shuttingDown }
    }

    // MARK: Decisions

    mutating func nextAction(at now: Instant) -> Action {
        switch phase {
        case .finished:
            return .finish
        case .shuttingDown:
            if !redelivered.isEmpty || !buffer.isEmpty {
                return freeLanes > 0 ? handOff(at: now) : .waitForSink
            }
            return .finish
        case .running:
            return running(at: now)
        }
    }

    private mutating func running(at now: Instant) -> Action {
        if !redelivered.isEmpty {
            return freeLanes > 0 ? handOff(at: now) : .waitForSink
        }
        if freeLanes > 0, !buffer.isEmpty, isFull || lingerEnds(at: now) <= now {
            return handOff(at: now)
        }
        if let after = pendingScan {
            return .readOwnPending(after: after, count: redeliveryCount(weighing: pendingEntryBytes))
        }
        let claimDue = now >= nextClaim && !circuitOpen
        if claimDue && !readBeforeClaim {
            return .claim(cursor: claimCursor, count: redeliveryCount(weighing: claimEntryBytes))
        }
        let next = reading(at: now)
        guard claimDue else { return next }
        // The claim pass's `>` read between steps; when no read is to be made, the step goes on.
        if case .readNew = next {
            readBeforeClaim = false
            return next
        }
        return .claim(cursor: claimCursor, count: redeliveryCount(weighing: claimEntryBytes))
    }

    /// What comes once nothing is to be handed over, re-read or claimed.
    private func reading(at now: Instant) -> Action {
        if isFull { return .waitForSink }
        if !buffer.isEmpty {
            if freeLanes > 0 {
                // Lingering: wait for more, no longer than the linger.
                return .readNew(count: readCount, block: max(.milliseconds(1), now.duration(to: lingerEnds(at: now))))
            }
            // Every sink busy: take what has arrived meanwhile, without waiting for more.
            return lastReadWasEmpty ? .waitForSink : .readNew(count: readCount, block: nil)
        }
        if configuration.drain && lastReadWasEmpty {
            if freeLanes < configuration.lanes { return .waitForSink }
            if othersHoldPending { return .sleep(min(configuration.claimInterval, .milliseconds(200))) }
            return .checkPending
        }
        let block = configuration.drain ? configuration.drainReadBlock : configuration.maximumReadBlock
        let untilClaim = circuitOpen ? block : now.duration(to: nextClaim)
        return .readNew(count: readCount, block: max(.milliseconds(1), min(block, untilClaim)))
    }

    /// Claims and re-reads return entries still in the buffer (read, waiting for a sink): those
    /// are dropped from their batch.
    private func dropBuffered(from batch: inout Batch) {
        guard let first = buffer.first?.id, let last = buffer.last?.id else { return }
        batch.entries.removeAll { $0.id >= first && $0.id <= last && isBuffered($0.id) }
    }

    private static func weighed(_ entries: [StreamEntry], from current: Int?) -> Int? {
        weighed(bytes: entries.reduce(0) { $0 + $1.fields.byteCount }, entries: entries.count, from: current)
    }

    /// Takes in what a reply's entries weighed: up to their average at once (the next reply must
    /// not hold thousands of large entries because earlier ones were small), down halfway to it
    /// (a run of small entries after large ones lets counts grow back within a few replies).
    private static func weighed(bytes: Int, entries: Int, from current: Int?) -> Int? {
        guard entries > 0 else { return current }
        let average = max(1, bytes / entries)
        if let current, average < current { return (current + average) / 2 }
        return average
    }

    /// The buffer holds fresh entries in id order (reads return them so): a binary search.
    private func isBuffered(_ id: StreamEntryID) -> Bool {
        var low = 0
        var high = buffer.count
        while low < high {
            let middle = (low + high) / 2
            if buffer[middle].id < id { low = middle + 1 } else { high = middle }
        }
        return low < buffer.count && buffer[low].id == id
    }

    private var isFull: Bool { buffer.count >= configuration.maximumEntries || bufferBytes >= configuration.maximumBytes }

    private func lingerEnds(at now: Instant) -> Instant {
        (oldestArrival ?? now).advanced(by: configuration.linger)
    }

    /// New entries: as many as still fit the buffer, by count and (at what entries weigh) by bytes.
    private var readCount: Int {
        let byCount = configuration.maximumEntries - buffer.count
        let byBytes = (configuration.maximumBytes - bufferBytes) / (entryBytes ?? configuration.initialEntryBytes)
        return max(1, min(byCount, byBytes))
    }

    /// Claimed and own pending entries: a batch of their own, so as many as fit one batch at what
    /// the pass's entries weighed so far.
    private func redeliveryCount(weighing entryBytes: Int?) -> Int {
        max(1, min(configuration.maximumEntries, configuration.maximumBytes / (entryBytes ?? configuration.initialEntryBytes)))
    }

    /// Below this many entries a batch is not split between free sinks: a COPY's fixed costs
    /// (a round trip, a commit) would outweigh what the split saves.
    static var minimumSplit: Int { 64 }

    /// Redelivered batches first; otherwise the buffer's oldest entries up to the batch bounds.
    /// With several sinks free (a burst after a quiet spell), the buffer is shared between them,
    /// so the burst's COPYs run side by side instead of one after another.
    private mutating func handOff(at now: Instant) -> Action {
        let lanes = freeLanes
        freeLanes -= 1
        if !redelivered.isEmpty { return .handOff(redelivered.removeFirst()) }
        let share = buffer.count >= 2 * Self.minimumSplit ? (buffer.count + lanes - 1) / lanes : buffer.count
        var count = 0
        var bytes = 0
        while count < share && count < configuration.maximumEntries {
            let size = buffer[count].fields.byteCount
            if count > 0 && bytes + size > configuration.maximumBytes { break }
            bytes += size
            count += 1
        }
        let entries = Array(buffer.prefix(count))
        let readAt = oldestArrival
        if count == buffer.count {
            buffer.removeAll(keepingCapacity: true)
        } else {
            buffer.removeFirst(count)
        }
        bufferBytes -= bytes
        oldestArrival = buffer.isEmpty ? nil : now
        return .handOff(Batch(entries: entries, redelivered: false, readAt: readAt))
    }
}

import AdTelemetryRecords

/// Every decision of one stream consumer, as a value type: the one place its reader and its sinks
/// meet. The reader feeds it what its reads and claims returned and performs the action it
/// returns; the sinks report each batch committed or failed and each circuit opened or closed.
/// It holds the batches in flight, so whether a claimed or re-read entry is already this
/// consumer's is decided here alone. ``SharedConsumerMachine`` keeps it behind one lock. Generic
/// over the clock's instant, so tests move time by hand.
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

    /// What a sink's event asks of the reader, done outside the lock.
    enum SinkEventAction: Equatable {
        case none
        /// The reader waits for a sink (``Action/waitForSink``): resume it.
        case resumeReader
    }

    enum Action: Equatable {
        /// This consumer's own pending entries after an id (a previous run's, or a read's whose
        /// reply was lost), up to a count.
        case readOwnPending(after: StreamEntryID, count: Int)
        /// New entries (`>`), up to a count; block for up to the duration, or not at all (nil).
        case readNew(count: Int, block: Duration?)
        /// One XAUTOCLAIM step from a cursor.
        case claim(cursor: StreamEntryID, count: Int)
        case handOff(EntryBatch)
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
    /// A rescan from the start was asked for (a sink failed a batch) after the re-read that is out
    /// began: when that read returns, the scan starts over instead of going on past it.
    private var rescanAsked = false
    private var buffer: [StreamEntry] = []
    private var bufferBytes = 0
    /// When the oldest buffered entry was read (or the buffer's last split handed over): the
    /// linger runs from it, and a fresh batch handed over now has waited for a sink since.
    private(set) var oldestArrival: Instant?
    /// Own pending and claimed entries waiting for a sink; never mixed with fresh ones, which
    /// take the fast path.
    private var redelivered: [EntryBatch] = []
    private(set) var freeLanes: Int
    /// Handed to a sink and not yet committed (or failed).
    private var inFlight = InFlightBatches()
    /// The last action was ``Action/waitForSink`` and no sink has reported since.
    private(set) var readerWaits = false
    private var nextClaim: Instant
    private var claimCursor = StreamEntryID(milliseconds: 0, sequence: 0)
    /// Sink circuits open now: claiming while any is would only pile up delivery counts on
    /// entries whose fault the outage is not.
    private var openCircuits = 0
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

    /// A read of this consumer's own pending entries returned `entries`; `last` is the last id
    /// Redis returned (nil: none, the scan is done). Returns those not already this consumer's
    /// (buffered, in a sink, or acknowledged while the read was out): the reader reads their
    /// delivery counts and queues them (``redeliveredCounted(_:)``).
    mutating func ownPendingReturned(_ entries: [StreamEntry], through last: StreamEntryID?) -> [StreamEntry] {
        defer { inFlight.endPendingRead() }
        guard phase == .running, pendingScan != nil else { return [] }
        pendingScan = rescanAsked ? StreamEntryID(milliseconds: 0, sequence: 0) : last
        rescanAsked = false
        pendingEntryBytes = Self.weighed(entries, from: pendingEntryBytes)
        return notOwned(entries)
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

    /// A read of new entries returned (possibly nothing).
    mutating func readReturned(_ entries: [StreamEntry], at now: Instant) {
        lastReadWasEmpty = entries.isEmpty
        guard !entries.isEmpty else { return }
        let bytes = entries.reduce(0) { $0 + $1.fields.byteCount }
        if buffer.isEmpty { oldestArrival = now }
        buffer.append(contentsOf: entries)
        bufferBytes += bytes
        entryBytes = Self.weighed(bytes: bytes, entries: entries.count, from: entryBytes)
    }

    /// One XAUTOCLAIM step returned `entries`, and where the next step starts. Entries read and
    /// waiting for a sink, or in a sink, for longer than the claim idle time come back from a
    /// claim too. Returns those not already this consumer's: the reader reads their delivery
    /// counts and queues them (``redeliveredCounted(_:)``).
    mutating func claimReturned(_ entries: [StreamEntry], next cursor: StreamEntryID, at now: Instant) -> [StreamEntry] {
        defer { inFlight.endPendingRead() }
        claimCursor = cursor
        claimEntryBytes = Self.weighed(entries, from: claimEntryBytes)
        let passDone = cursor == StreamEntryID(milliseconds: 0, sequence: 0)
        if passDone { claimEntryBytes = nil }
        // A pass not yet through the pending list goes on at once (a step examines only about
        // ten times its count, and counts are small when entries are large), after one `>` read:
        // thousands of steps claiming nothing (entries still in flight) must not hold up new entries.
        readBeforeClaim = !passDone
        nextClaim = passDone ? now.advanced(by: configuration.claimInterval) : now
        return notOwned(entries)
    }

    /// Claimed or own pending entries, with their delivery counts: queued for a sink.
    mutating func redeliveredCounted(_ batch: EntryBatch) {
        if !batch.entries.isEmpty { redelivered.append(batch) }
    }

    /// A sink committed a batch's rows and acknowledged its entries: they leave the in-flight
    /// set and the sink takes the next batch.
    mutating func committed(_ batch: EntryBatch) -> SinkEventAction {
        inFlight.remove(batch.entries)
        freeLanes = min(configuration.lanes, freeLanes + 1)
        return sinkReported()
    }

    /// A sink gave up on a batch (it threw: cancelled past the shutdown timeout). Its entries
    /// stay pending on this consumer, not in flight: a re-read of own pending entries finds them.
    /// The sink has ended, so its lane does not come back.
    mutating func failed(_ batch: EntryBatch) -> SinkEventAction {
        inFlight.remove(batch.entries)
        if phase == .running {
            pendingScan = StreamEntryID(milliseconds: 0, sequence: 0)
            pendingEntryBytes = nil
            rescanAsked = true
        }
        return sinkReported()
    }

    /// One of the sinks' circuits opened or closed: no claims while any is open.
    mutating func circuit(isOpen: Bool) {
        openCircuits += isOpen ? 1 : -1
    }

    /// A sink is free or gone: what the reader waited for may be possible now.
    private mutating func sinkReported() -> SinkEventAction {
        lastReadWasEmpty = false
        guard readerWaits else { return .none }
        readerWaits = false
        return .resumeReader
    }

    /// Whether a batch is in a sink: an empty read with none is the stream caught up.
    var hasBatchesInFlight: Bool { !inFlight.isEmpty }

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

    /// What the reader does next. A claim or re-read of own pending entries opens the window in
    /// which batches given back still count as in flight (see ``InFlightBatches``).
    mutating func nextAction(at now: Instant) -> Action {
        let action = deciding(at: now)
        switch action {
        case .waitForSink: readerWaits = true
        case .claim, .readOwnPending: inFlight.beginPendingRead()
        default: break
        }
        return action
    }

    private mutating func deciding(at now: Instant) -> Action {
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
            // A read that starts now sees whatever a failed batch left pending.
            rescanAsked = false
            return .readOwnPending(after: after, count: redeliveryCount(weighing: pendingEntryBytes))
        }
        let claimDue = now >= nextClaim && openCircuits == 0
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
        let untilClaim = openCircuits > 0 ? block : now.duration(to: nextClaim)
        return .readNew(count: readCount, block: max(.milliseconds(1), min(block, untilClaim)))
    }

    /// What a claim or re-read returned, less entries already this consumer's: still in the
    /// buffer (read, waiting for a sink) or in flight. Storing those again would store them twice.
    private func notOwned(_ entries: [StreamEntry]) -> [StreamEntry] {
        guard let first = buffer.first?.id, let last = buffer.last?.id else { return entries.filter { !inFlight.contains($0.id) } }
        return entries.filter { entry in
            !(entry.id >= first && entry.id <= last && buffer.idOrderedContains(entry.id)) && !inFlight.contains(entry.id)
        }
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
        if !redelivered.isEmpty {
            let batch = redelivered.removeFirst()
            inFlight.insert(batch.entries)
            return .handOff(batch)
        }
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
        if count == buffer.count {
            buffer.removeAll(keepingCapacity: true)
        } else {
            buffer.removeFirst(count)
        }
        bufferBytes -= bytes
        oldestArrival = buffer.isEmpty ? nil : now
        inFlight.insert(entries)
        return .handOff(EntryBatch(entries: entries, redelivered: false))
    }
}

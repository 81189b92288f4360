import AdTelemetryRecords
@testable import AdWorkerCore
import Testing

@Suite("Consumer state machine")
struct ConsumerStateMachineTests {
    typealias Machine = ConsumerStateMachine<ContinuousClock.Instant>
    let start = ContinuousClock.Instant.now

    static func configuration(
        entries: Int = 100, bytes: Int = 1 << 20, linger: Duration = .zero, drain: Bool = false, initialEntryBytes: Int = 1 << 10
    ) -> Machine.Configuration {
        Machine.Configuration(
            maximumEntries: entries, maximumBytes: bytes, linger: linger, lanes: 2, claimInterval: .seconds(30),
            maximumReadBlock: .seconds(1), drain: drain, drainReadBlock: .milliseconds(10), initialEntryBytes: initialEntryBytes
        )
    }

    /// The worker's defaults: 5000 entries or 4 MiB a batch, entries of at most 1 MiB.
    static let defaults = configuration(entries: 5000, bytes: 4 << 20, initialEntryBytes: 1 << 20)
    /// An entry of 0.9 MiB: four fit 4 MiB.
    static let largeEntry = 900 << 10
    static let zero = StreamEntryID(milliseconds: 0, sequence: 0)

    static func id(_ sequence: UInt64) -> StreamEntryID {
        StreamEntryID(milliseconds: 1, sequence: sequence)
    }

    static func sequences(_ batch: EntryBatch?) -> [UInt64]? {
        batch?.entries.map(\.id.sequence)
    }

    static func entries(_ range: Range<UInt64>, bytes: Int = 10) -> [StreamEntry] {
        range.map { sequence in
            var fields = StreamFields()
            fields.append(name: Array("f".utf8), value: [UInt8](repeating: 0x61, count: bytes - 1))
            return StreamEntry(id: StreamEntryID(milliseconds: 1, sequence: sequence), fields: fields)
        }
    }

    static func handedOff(_ action: Machine.Action) -> EntryBatch? {
        if case .handOff(let batch) = action { return batch }
        return nil
    }

    /// Past the own pending entries (none) and the first claim (nothing idle).
    func running(_ configuration: Machine.Configuration = Self.configuration()) -> Machine {
        var machine = Machine(configuration: configuration, now: start)
        guard case .readOwnPending(after: Self.zero, count: _) = machine.nextAction(at: start) else {
            Issue.record("expected the own pending entries to be read first")
            return machine
        }
        #expect(machine.ownPendingReturned([], through: nil).isEmpty)
        guard case .claim(cursor: Self.zero, count: _) = machine.nextAction(at: start) else {
            Issue.record("expected a claim")
            return machine
        }
        #expect(machine.claimReturned([], next: Self.zero, at: start).isEmpty)
        return machine
    }

    /// Running, with each sink holding a one-entry batch (sequences 0 and 1); returns those batches.
    func withBothSinksBusy(_ configuration: Machine.Configuration = Self.configuration(), bytes: Int = 10) -> (Machine, [EntryBatch]) {
        var machine = running(configuration)
        var busy: [EntryBatch] = []
        for sequence in UInt64(0)..<2 {
            machine.readReturned(Self.entries(sequence..<sequence + 1, bytes: bytes), at: start)
            let batch = Self.handedOff(machine.nextAction(at: start))
            #expect(batch?.entries.count == 1)
            busy += batch.map { [$0] } ?? []
        }
        #expect(machine.freeLanes == 0)
        return (machine, busy)
    }

    /// A sink reports `batch` committed.
    @discardableResult
    static func commit(_ batch: EntryBatch?, to machine: inout Machine) -> Machine.SinkEventAction? {
        guard let batch else {
            Issue.record("no batch to commit")
            return nil
        }
        return machine.committed(batch)
    }

    /// What the reader does with a re-read of own pending entries: the machine drops those that
    /// are its own already, and the rest come back with their delivery counts.
    static func ownPending(_ batch: EntryBatch, through last: StreamEntryID?, to machine: inout Machine) {
        let left = machine.ownPendingReturned(batch.entries, through: last)
        machine.redeliveredCounted(EntryBatch(entries: left, redelivered: true, deliveries: batch.deliveries))
    }

    /// The same for one claim step.
    static func claimed(_ batch: EntryBatch, next: StreamEntryID, at now: ContinuousClock.Instant, to machine: inout Machine) {
        let left = machine.claimReturned(batch.entries, next: next, at: now)
        machine.redeliveredCounted(EntryBatch(entries: left, redelivered: true, deliveries: batch.deliveries))
    }

    @Test func ownPendingEntriesGoFirstAsRedeliveredBatches() {
        var machine = Machine(configuration: Self.configuration(), now: start)
        #expect(machine.nextAction(at: start) == .readOwnPending(after: StreamEntryID(milliseconds: 0, sequence: 0), count: 100))
        let pending = EntryBatch(entries: Self.entries(0..<3), redelivered: true, deliveries: [StreamEntryID(milliseconds: 1, sequence: 0): 2])
        Self.ownPending(pending, through: Self.id(2), to: &machine)
        #expect(machine.nextAction(at: start) == .handOff(pending))
        #expect(machine.nextAction(at: start) == .readOwnPending(after: StreamEntryID(milliseconds: 1, sequence: 2), count: 100))
    }

    @Test func anIdleConsumerHandsWhatItReadToAFreeSinkAtOnce() {
        var machine = running()
        #expect(machine.nextAction(at: start) == .readNew(count: 100, block: .seconds(1)))
        machine.readReturned(Self.entries(0..<3), at: start)
        #expect(machine.nextAction(at: start) == .handOff(.init(entries: Self.entries(0..<3), redelivered: false)))
        #expect(machine.freeLanes == 1)
    }

    @Test func underBacklogBatchesGrowWhileEverySinkIsBusy() {
        var machine = running()
        machine.readReturned(Self.entries(0..<10), at: start)
        let first = Self.handedOff(machine.nextAction(at: start))
        #expect(first?.entries.count == 10)
        machine.readReturned(Self.entries(10..<20), at: start)
        #expect(Self.handedOff(machine.nextAction(at: start))?.entries.count == 10)
        // Both sinks busy and nothing buffered: a read may block, nothing waits on it.
        #expect(machine.nextAction(at: start) == .readNew(count: 100, block: .seconds(1)))
        machine.readReturned(Self.entries(20..<60), at: start)
        // Entries buffered: keep reading without blocking, accumulating.
        #expect(machine.nextAction(at: start) == .readNew(count: 60, block: nil))
        machine.readReturned(Self.entries(60..<200), at: start)
        // Full (the buffer may hold one read beyond): wait; a freed sink gets the maximum.
        #expect(machine.nextAction(at: start) == .waitForSink)
        #expect(Self.commit(first, to: &machine) == .resumeReader)
        #expect(Self.handedOff(machine.nextAction(at: start))?.entries.map(\.id.sequence) == Array(20..<120))
        #expect(machine.bufferedEntries == 80)
    }

    /// What a fresh batch waited for a sink runs from the read of its oldest entry (bench's
    /// buffered stage, read by the reader before the hand-over).
    @Test func theBufferKnowsWhenItsOldestEntryWasRead() {
        var (machine, busy) = withBothSinksBusy()
        let firstRead = start.advanced(by: .milliseconds(3))
        machine.readReturned(Self.entries(2..<5), at: firstRead)
        machine.readReturned(Self.entries(5..<9), at: firstRead.advanced(by: .milliseconds(2)))
        #expect(machine.oldestArrival == firstRead)
        Self.commit(busy[0], to: &machine)
        #expect(Self.handedOff(machine.nextAction(at: firstRead.advanced(by: .milliseconds(7))))?.entries.count == 7)
        #expect(machine.oldestArrival == nil)
    }

    @Test func anEmptyReadWithEverySinkBusyWaitsForASink() {
        var (machine, busy) = withBothSinksBusy()
        machine.readReturned(Self.entries(2..<3), at: start)
        #expect(machine.nextAction(at: start) == .readNew(count: 99, block: nil))
        machine.readReturned([], at: start)
        #expect(machine.nextAction(at: start) == .waitForSink)
        #expect(Self.commit(busy[0], to: &machine) == .resumeReader)
        #expect(Self.handedOff(machine.nextAction(at: start))?.entries.count == 1)
    }

    @Test func aBurstIsSharedBetweenFreeSinks() {
        var machine = running()
        machine.readReturned(Self.entries(0..<200), at: start)
        let first = Self.handedOff(machine.nextAction(at: start))
        #expect(first?.entries.map(\.id.sequence) == Array(0..<100))
        // The second sink gets the rest at once; a burst too small to be worth two COPYs is not split.
        #expect(Self.handedOff(machine.nextAction(at: start))?.entries.map(\.id.sequence) == Array(100..<200))
        var few = running()
        few.readReturned(Self.entries(0..<100), at: start)
        #expect(Self.handedOff(few.nextAction(at: start))?.entries.count == 100)
    }

    @Test func batchesAreBoundedByBytes() {
        var machine = running(Self.configuration(entries: 1000, bytes: 100))
        machine.readReturned(Self.entries(0..<25, bytes: 10), at: start)
        #expect(Self.handedOff(machine.nextAction(at: start))?.entries.count == 10)
        #expect(machine.bufferedBytes == 150)
        // One entry larger than the bound still goes, alone.
        var big = running(Self.configuration(entries: 1000, bytes: 100))
        big.readReturned(Self.entries(0..<2, bytes: 500), at: start)
        #expect(Self.handedOff(big.nextAction(at: start))?.entries.count == 1)
    }

    @Test func readsAreSizedByTheRemainingBytes() {
        var (machine, _) = withBothSinksBusy(Self.configuration(entries: 1000, bytes: 1000), bytes: 100)
        machine.readReturned(Self.entries(2..<7, bytes: 100), at: start)
        // 500 of 1000 bytes buffered at about 100 bytes an entry (the average adapts).
        guard case .readNew(let count, nil) = machine.nextAction(at: start) else {
            Issue.record("expected a non-blocking read")
            return
        }
        #expect(count < 20)
    }

    /// Before any entry has been read, nothing says how much one weighs: the first read of each
    /// kind asks only for what fits the byte bound at the most an entry may weigh.
    @Test func theFirstReadOfEachKindAsksOnlyForWhatFitsTheByteBoundAtTheLargestEntryWeight() {
        var machine = Machine(configuration: Self.defaults, now: start)
        #expect(machine.nextAction(at: start) == .readOwnPending(after: Self.zero, count: 4))
        Self.ownPending(.init(entries: [], redelivered: true), through: nil, to: &machine)
        #expect(machine.nextAction(at: start) == .claim(cursor: Self.zero, count: 4))
        _ = machine.claimReturned([], next: Self.zero, at: start)
        #expect(machine.nextAction(at: start) == .readNew(count: 4, block: .seconds(1)))
    }

    @Test func readsGrowFromWhatTheEntriesWeigh() {
        var machine = running(Self.defaults)
        machine.readReturned(Self.entries(0..<4, bytes: 100), at: start)
        #expect(Self.handedOff(machine.nextAction(at: start))?.entries.count == 4)
        #expect(machine.nextAction(at: start) == .readNew(count: 5000, block: .seconds(1)))
    }

    /// 300 large entries left by a dead consumer: each claim takes what fits one batch, not
    /// `maximumEntries` of them.
    @Test func claimsOfLargeEntriesAskForWhatFitsOneBatch() {
        var machine = running(Self.defaults)
        let later = start + .seconds(30)
        #expect(machine.nextAction(at: later) == .claim(cursor: Self.zero, count: 4))
        let claimed = EntryBatch(entries: Self.entries(0..<4, bytes: Self.largeEntry), redelivered: true)
        Self.claimed(claimed, next: Self.id(4), at: later, to: &machine)
        #expect(machine.nextAction(at: later) == .handOff(claimed))
        #expect(machine.nextAction(at: later) == .readNew(count: 4, block: .milliseconds(1)))
        machine.readReturned([], at: later)
        #expect(machine.nextAction(at: later) == .claim(cursor: Self.id(4), count: 4))
        // Entries heavier than any that decode (dead letters to be): one a claim.
        let heavy = EntryBatch(entries: Self.entries(4..<8, bytes: 3 << 20), redelivered: true)
        Self.claimed(heavy, next: Self.id(8), at: later, to: &machine)
        #expect(machine.nextAction(at: later) == .handOff(heavy))
        #expect(machine.nextAction(at: later) == .readNew(count: 4, block: .milliseconds(1)))
        machine.readReturned([], at: later)
        #expect(machine.nextAction(at: later) == .claim(cursor: Self.id(8), count: 1))
    }

    @Test func reReadsOfLargeOwnPendingEntriesAskForWhatFitsOneBatch() {
        var machine = Machine(configuration: Self.defaults, now: start)
        #expect(machine.nextAction(at: start) == .readOwnPending(after: Self.zero, count: 4))
        let pending = EntryBatch(entries: Self.entries(0..<4, bytes: Self.largeEntry), redelivered: true)
        Self.ownPending(pending, through: Self.id(3), to: &machine)
        #expect(machine.nextAction(at: start) == .handOff(pending))
        #expect(machine.nextAction(at: start) == .readOwnPending(after: Self.id(3), count: 4))
    }

    /// After thousands of small entries, large ones: the next read asks for what still fits at
    /// their weight, not at the small ones'.
    @Test func aReadOfLargeEntriesShrinksTheNextReadAtOnce() {
        var (machine, _) = withBothSinksBusy(Self.defaults, bytes: 100)
        #expect(machine.nextAction(at: start) == .readNew(count: 5000, block: .seconds(1)))
        machine.readReturned(Self.entries(2..<4, bytes: Self.largeEntry), at: start)
        // 1.8 of 4 MiB buffered: two more fit.
        #expect(machine.nextAction(at: start) == .readNew(count: 2, block: nil))
    }

    @Test func afterLargeEntriesReadsGrowBackWithinAFewReadsOfSmallOnes() {
        var machine = running(Self.defaults)
        machine.readReturned(Self.entries(0..<1, bytes: 1 << 20), at: start)
        Self.commit(Self.handedOff(machine.nextAction(at: start)), to: &machine)
        var reads = 0
        var sequence: UInt64 = 1
        while case .readNew(let count, _) = machine.nextAction(at: start), count < 5000, reads < 100 {
            machine.readReturned(Self.entries(sequence..<sequence + 1, bytes: 100), at: start)
            sequence += 1
            reads += 1
            Self.commit(Self.handedOff(machine.nextAction(at: start)), to: &machine)
        }
        #expect(reads <= 16)
    }

    /// The connection broke after Redis ran an XREADGROUP: the entries it delivered are pending
    /// on this consumer, and only a re-read of its pending entries finds them before a claim would.
    @Test func aReadWhoseReplyWasLostIsFollowedAtOnceByAReReadOfOwnPendingEntries() {
        var machine = running()
        #expect(machine.nextAction(at: start) == .readNew(count: 100, block: .seconds(1)))
        // Redis delivered 0..<5 and the reply was lost; the read retried returned 5..<8.
        machine.readReturned(Self.entries(5..<8), at: start)
        machine.replyLost()
        #expect(Self.sequences(Self.handedOff(machine.nextAction(at: start))) == [5, 6, 7])
        #expect(machine.nextAction(at: start) == .readOwnPending(after: Self.zero, count: 100))
        // Redis returns 0...7; 5...7 are in a sink, and the machine drops them.
        Self.ownPending(.init(entries: Self.entries(0..<8), redelivered: true), through: Self.id(7), to: &machine)
        let lost = Self.handedOff(machine.nextAction(at: start))
        #expect(Self.sequences(lost) == Array(0..<5))
        #expect(lost?.redelivered == true)
        #expect(machine.nextAction(at: start) == .readOwnPending(after: Self.id(7), count: 100))
        Self.ownPending(.init(entries: [], redelivered: true), through: nil, to: &machine)
        #expect(machine.nextAction(at: start) == .readNew(count: 100, block: .seconds(1)))
    }

    @Test func aReReadAfterALostReplyDropsEntriesInTheSinksOrStillInTheBuffer() {
        var (machine, busy) = withBothSinksBusy()
        machine.readReturned(Self.entries(5..<8), at: start)
        machine.replyLost()
        #expect(machine.nextAction(at: start) == .readOwnPending(after: Self.zero, count: 100))
        // 0 and 1 are in the sinks; 5...7 wait in the buffer.
        Self.ownPending(.init(entries: Self.entries(0..<8), redelivered: true), through: Self.id(7), to: &machine)
        Self.commit(busy[0], to: &machine)
        #expect(Self.sequences(Self.handedOff(machine.nextAction(at: start))) == [2, 3, 4])
        #expect(machine.nextAction(at: start) == .readOwnPending(after: Self.id(7), count: 100))
        Self.ownPending(.init(entries: [], redelivered: true), through: nil, to: &machine)
        Self.commit(busy[1], to: &machine)
        #expect(Self.sequences(Self.handedOff(machine.nextAction(at: start))) == [5, 6, 7])
    }

    /// XAUTOCLAIM gives the entries to this consumer before its reply: lost, they would wait for
    /// another claim idle time.
    @Test func aClaimWhoseReplyWasLostIsFollowedByAReReadOfOwnPendingEntries() {
        var machine = running()
        let later = start + .seconds(30)
        #expect(machine.nextAction(at: later) == .claim(cursor: Self.zero, count: 100))
        _ = machine.claimReturned([], next: Self.zero, at: later)
        machine.replyLost()
        #expect(machine.nextAction(at: later) == .readOwnPending(after: Self.zero, count: 100))
    }

    @Test func noReReadAfterALostReplyOnceShuttingDown() {
        var machine = running()
        machine.shutDown()
        machine.replyLost()
        #expect(machine.nextAction(at: start) == .finish)
    }

    /// A step examines about ten times its count of pending entries: with small counts (large
    /// entries) and a long pending list of entries still in flight, a pass takes thousands of
    /// steps that claim nothing. It goes on at once, but one `>` read goes between its steps.
    @Test func aClaimScanNotThroughThePendingListGoesOnAfterOneReadOfNewEntries() {
        var machine = running(Self.defaults)
        let later = start + .seconds(30)
        #expect(machine.nextAction(at: later) == .claim(cursor: Self.zero, count: 4))
        _ = machine.claimReturned([], next: Self.id(40), at: later)
        #expect(machine.nextAction(at: later) == .readNew(count: 4, block: .milliseconds(1)))
        machine.readReturned(Self.entries(0..<3, bytes: 100), at: later)
        #expect(Self.sequences(Self.handedOff(machine.nextAction(at: later))) == [0, 1, 2])
        #expect(machine.nextAction(at: later) == .claim(cursor: Self.id(40), count: 4))
        _ = machine.claimReturned([], next: Self.id(80), at: later)
        #expect(machine.nextAction(at: later) == .readNew(count: 5000, block: .milliseconds(1)))
        machine.readReturned([], at: later)
        #expect(machine.nextAction(at: later) == .claim(cursor: Self.id(80), count: 4))
    }

    /// Draining with nothing new to read, the steps go on back to back: no poll or sleep between.
    @Test func drainingAClaimScanWithNothingNewToReadGoesOnAtOnce() {
        var machine = running(Self.configuration(drain: true))
        #expect(machine.nextAction(at: start) == .readNew(count: 100, block: .milliseconds(10)))
        machine.readReturned([], at: start)
        #expect(machine.nextAction(at: start) == .checkPending)
        machine.pendingChecked(othersHoldPending: true, at: start)
        #expect(machine.nextAction(at: start) == .claim(cursor: Self.zero, count: 100))
        _ = machine.claimReturned([], next: Self.id(1000), at: start)
        #expect(machine.nextAction(at: start) == .claim(cursor: Self.id(1000), count: 100))
    }

    /// A worker has been reading light entries when a dead replica's heavy ones become idle: the
    /// claim pass does not ask for thousands of them at the light entries' weight. Each pass starts
    /// at the most an entry may weigh and is sized by what it has claimed.
    @Test func eachClaimPassIsSizedFromTheLargestEntryWeightNotFromWhatReadsWeighed() {
        var machine = running(Self.defaults)
        machine.readReturned(Self.entries(0..<5000, bytes: 300), at: start)
        let halves = [Self.handedOff(machine.nextAction(at: start)), Self.handedOff(machine.nextAction(at: start))]
        #expect(halves.map { $0?.entries.count } == [2500, 2500])
        for half in halves { Self.commit(half, to: &machine) }
        let later = start + .seconds(30)
        #expect(machine.nextAction(at: later) == .claim(cursor: Self.zero, count: 4))
        // Light entries claimed: the pass's next step grows.
        let light = EntryBatch(entries: Self.entries(5000..<5004, bytes: 300), redelivered: true)
        Self.claimed(light, next: Self.id(9000), at: later, to: &machine)
        #expect(machine.nextAction(at: later) == .handOff(light))
        Self.commit(light, to: &machine)
        #expect(machine.nextAction(at: later) == .readNew(count: 5000, block: .milliseconds(1)))
        machine.readReturned([], at: later)
        #expect(machine.nextAction(at: later) == .claim(cursor: Self.id(9000), count: 5000))
        _ = machine.claimReturned([], next: Self.zero, at: later)
        // The next pass starts over: what the last one claimed says nothing of what is idle now.
        #expect(machine.nextAction(at: later + .seconds(30)) == .claim(cursor: Self.zero, count: 4))
    }

    /// The same for a re-read of own pending entries after a lost reply, however light the
    /// entries read before it were.
    @Test func eachReReadOfOwnPendingEntriesStartsAtTheLargestEntryWeight() {
        var machine = running(Self.defaults)
        machine.readReturned(Self.entries(0..<5000, bytes: 300), at: start)
        machine.replyLost()
        let first = Self.handedOff(machine.nextAction(at: start))
        #expect(first?.entries.count == 2500)
        #expect(Self.handedOff(machine.nextAction(at: start))?.entries.count == 2500)
        Self.commit(first, to: &machine)
        #expect(machine.nextAction(at: start) == .readOwnPending(after: Self.zero, count: 4))
        Self.ownPending(.init(entries: Self.entries(5000..<5004, bytes: 300), redelivered: true), through: Self.id(5003), to: &machine)
        #expect(Self.handedOff(machine.nextAction(at: start))?.entries.count == 4)
        #expect(machine.nextAction(at: start) == .readOwnPending(after: Self.id(5003), count: 5000))
        Self.ownPending(.init(entries: [], redelivered: true), through: nil, to: &machine)
        machine.replyLost()
        #expect(machine.nextAction(at: start) == .readOwnPending(after: Self.zero, count: 4))
    }

    @Test func aLingerWaitsForMoreWhileASinkIsFree() {
        var machine = running(Self.configuration(linger: .milliseconds(5)))
        machine.readReturned(Self.entries(0..<2), at: start)
        #expect(machine.nextAction(at: start + .milliseconds(1)) == .readNew(count: 98, block: .milliseconds(4)))
        machine.readReturned(Self.entries(2..<4), at: start + .milliseconds(5))
        #expect(Self.handedOff(machine.nextAction(at: start + .milliseconds(5)))?.entries.count == 4)
    }

    /// Two of the sinks' circuits open, then one closes: no claim until the other closes too.
    @Test func noClaimsWhileASinkCircuitIsOpen() {
        var machine = running()
        machine.circuit(isOpen: true)
        machine.circuit(isOpen: true)
        let later = start + .seconds(31)
        #expect(machine.nextAction(at: later) == .readNew(count: 100, block: .seconds(1)))
        machine.readReturned([], at: later)
        machine.circuit(isOpen: false)
        #expect(machine.nextAction(at: later) == .readNew(count: 100, block: .seconds(1)))
        machine.readReturned([], at: later)
        machine.circuit(isOpen: false)
        #expect(machine.nextAction(at: later) == .claim(cursor: StreamEntryID(milliseconds: 0, sequence: 0), count: 100))
    }

    @Test func theClaimScanContinuesAtItsCursorAndStartsOverWhenDone() {
        var machine = running()
        let later = start + .seconds(30)
        #expect(machine.nextAction(at: later) == .claim(cursor: StreamEntryID(milliseconds: 0, sequence: 0), count: 100))
        let claimed = EntryBatch(entries: Self.entries(0..<2), redelivered: true)
        Self.claimed(claimed, next: StreamEntryID(milliseconds: 5, sequence: 0), at: later, to: &machine)
        #expect(machine.nextAction(at: later) == .handOff(claimed))
        #expect(machine.nextAction(at: later) == .readNew(count: 100, block: .milliseconds(1)))
        machine.readReturned([], at: later)
        #expect(machine.nextAction(at: later) == .claim(cursor: StreamEntryID(milliseconds: 5, sequence: 0), count: 100))
        _ = machine.claimReturned([], next: StreamEntryID(milliseconds: 0, sequence: 0), at: later)
        // Scan complete: the next one starts from the beginning, an interval later.
        #expect(machine.nextAction(at: later) == .readNew(count: 100, block: .seconds(1)))
        machine.readReturned([], at: later)
        #expect(machine.nextAction(at: later + .seconds(30)) == .claim(cursor: StreamEntryID(milliseconds: 0, sequence: 0), count: 100))
    }

    /// Entries read and still waiting for a sink longer than the claim idle time come back from
    /// XAUTOCLAIM: handing them over again would store them twice.
    @Test func aClaimDropsEntriesStillInTheBuffer() {
        var (machine, busy) = withBothSinksBusy()
        machine.readReturned(Self.entries(2..<10), at: start)
        let later = start + .seconds(30)
        #expect(machine.nextAction(at: later) == .claim(cursor: StreamEntryID(milliseconds: 0, sequence: 0), count: 100))
        let claimed = Self.entries(5..<12)
        Self.claimed(.init(entries: claimed, redelivered: true), next: StreamEntryID(milliseconds: 0, sequence: 0), at: later, to: &machine)
        Self.commit(busy[0], to: &machine)
        #expect(Self.handedOff(machine.nextAction(at: later))?.entries.map(\.id.sequence) == [10, 11])
        #expect(Self.handedOff(machine.nextAction(at: later)) == nil)
    }

    @Test func readsNeverBlockPastTheNextClaim() {
        var machine = running()
        #expect(machine.nextAction(at: start + .milliseconds(29_700)) == .readNew(count: 100, block: .milliseconds(300)))
    }

    @Test func theDrainEndsOnlyOnceItsOwnSinksAreDoneAndNothingIsPending() {
        var machine = running(Self.configuration(drain: true))
        #expect(machine.nextAction(at: start) == .readNew(count: 100, block: .milliseconds(10)))
        machine.readReturned(Self.entries(0..<5), at: start)
        let committing = Self.handedOff(machine.nextAction(at: start))
        #expect(machine.nextAction(at: start) == .readNew(count: 100, block: .milliseconds(10)))
        machine.readReturned([], at: start)
        // A sink is still committing: its acknowledgement ends the drain, not a poll.
        #expect(machine.nextAction(at: start) == .waitForSink)
        #expect(Self.commit(committing, to: &machine) == .resumeReader)
        #expect(machine.nextAction(at: start) == .readNew(count: 100, block: .milliseconds(10)))
        machine.readReturned([], at: start)
        #expect(machine.nextAction(at: start) == .checkPending)
        machine.pendingChecked(othersHoldPending: true, at: start)
        #expect(machine.nextAction(at: start) == .claim(cursor: StreamEntryID(milliseconds: 0, sequence: 0), count: 100))
        _ = machine.claimReturned([], next: StreamEntryID(milliseconds: 0, sequence: 0), at: start)
        #expect(machine.nextAction(at: start) == .sleep(.milliseconds(200)))
        machine.slept()
        #expect(machine.nextAction(at: start) == .readNew(count: 100, block: .milliseconds(10)))
        machine.readReturned([], at: start)
        #expect(machine.nextAction(at: start) == .checkPending)
        machine.pendingChecked(othersHoldPending: false, at: start)
        #expect(machine.nextAction(at: start) == .finish)
    }

    @Test func shutdownHandsOverWhatWasReadAndThenFinishes() {
        var (machine, busy) = withBothSinksBusy()
        machine.readReturned(Self.entries(2..<5), at: start)
        machine.shutDown()
        #expect(machine.nextAction(at: start) == .waitForSink)
        #expect(Self.commit(busy[0], to: &machine) == .resumeReader)
        #expect(Self.handedOff(machine.nextAction(at: start))?.entries.count == 3)
        #expect(machine.nextAction(at: start) == .finish)
    }

    // MARK: The sinks' events

    /// A claim returns entries idle longer than the claim idle time, a batch stuck in a sink's
    /// retries among them: handing them over again would store them twice.
    @Test func aClaimOfEntriesAlreadyInASinkDropsThem() {
        var (machine, busy) = withBothSinksBusy()
        let later = start + .seconds(30)
        #expect(machine.nextAction(at: later) == .claim(cursor: Self.zero, count: 100))
        #expect(machine.claimReturned(Self.entries(0..<4), next: Self.zero, at: later).map(\.id.sequence) == [2, 3])
        #expect(machine.hasBatchesInFlight)
        Self.commit(busy[0], to: &machine)
        Self.commit(busy[1], to: &machine)
        #expect(!machine.hasBatchesInFlight)
    }

    /// A committed batch leaves the in-flight set: once the claim or re-read under way when it
    /// was committed has returned, its entries no longer count as this consumer's.
    @Test func aCommittedBatchFreesItsSinkAndItsEntries() {
        var (machine, busy) = withBothSinksBusy()
        #expect(Self.commit(busy[0], to: &machine) == Machine.SinkEventAction.none)
        #expect(machine.freeLanes == 1)
        let later = start + .seconds(30)
        #expect(machine.nextAction(at: later) == .claim(cursor: Self.zero, count: 100))
        #expect(machine.claimReturned(Self.entries(0..<2), next: Self.zero, at: later).map(\.id.sequence) == [0])
    }

    /// The claim's reply shows the pending list as Redis saw it when it ran the claim: a batch
    /// acknowledged meanwhile is in it, and still this consumer's (the flake where 200 entries
    /// were stored twice). Only until that reply: the next claim no longer drops them.
    @Test func entriesCommittedWhileAClaimIsOutStillCountAsThisConsumersUntilItReturns() {
        var (machine, busy) = withBothSinksBusy()
        let later = start + .seconds(30)
        #expect(machine.nextAction(at: later) == .claim(cursor: Self.zero, count: 100))
        Self.commit(busy[0], to: &machine)
        #expect(machine.claimReturned(Self.entries(0..<1), next: Self.id(5), at: later).isEmpty)
        #expect(machine.nextAction(at: later) == .readNew(count: 100, block: .milliseconds(1)))
        machine.readReturned([], at: later)
        #expect(machine.nextAction(at: later) == .claim(cursor: Self.id(5), count: 100))
        #expect(machine.claimReturned(Self.entries(0..<1), next: Self.zero, at: later).map(\.id.sequence) == [0])
    }

    /// The same for a re-read of own pending entries after a lost reply.
    @Test func entriesCommittedWhileAReReadIsOutStillCountAsThisConsumersUntilItReturns() {
        var (machine, busy) = withBothSinksBusy()
        machine.replyLost()
        #expect(machine.nextAction(at: start) == .readOwnPending(after: Self.zero, count: 100))
        Self.commit(busy[1], to: &machine)
        #expect(machine.ownPendingReturned(Self.entries(0..<3), through: Self.id(2)).map(\.id.sequence) == [2])
    }

    /// A sink that gives up on a batch (it threw) ends: its lane does not come back, and the
    /// batch's entries, pending on this consumer and in no sink now, are re-read.
    @Test func aFailedBatchLeavesTheInFlightSetAndItsEntriesAreReReadAsOwnPending() {
        var (machine, busy) = withBothSinksBusy()
        machine.readReturned([], at: start)
        #expect(machine.nextAction(at: start) == .readNew(count: 100, block: .seconds(1)))
        machine.readReturned(Self.entries(2..<3), at: start)
        machine.readReturned([], at: start)
        #expect(machine.nextAction(at: start) == .waitForSink)
        #expect(machine.failed(busy[0]) == .resumeReader)
        #expect(machine.freeLanes == 0)
        #expect(machine.nextAction(at: start) == .readOwnPending(after: Self.zero, count: 100))
        #expect(machine.ownPendingReturned(Self.entries(0..<3), through: Self.id(2)).map(\.id.sequence) == [0])
    }

    @Test func aBatchFailedWhileAReReadIsOutIsReReadOnceThatReadReturns() {
        var (machine, busy) = withBothSinksBusy()
        machine.replyLost()
        guard case .readOwnPending(let after, _) = machine.nextAction(at: start) else { Issue.record("no re-read"); return }
        #expect(after == Self.zero)
        // The re-read is out; a sink fails its batch, whose entries the read saw as in flight.
        _ = machine.failed(busy[0])
        #expect(machine.ownPendingReturned(Self.entries(0..<3), through: Self.id(2)).map(\.id.sequence) == [2])
        guard case .readOwnPending(let again, _) = machine.nextAction(at: start) else { Issue.record("no second re-read"); return }
        #expect(again == Self.zero, "the scan starts over rather than going on past the failed batch's entries")
    }

    @Test func aFailedBatchWhileShuttingDownIsNotReRead() {
        var (machine, busy) = withBothSinksBusy()
        machine.shutDown()
        #expect(machine.failed(busy[0]) == Machine.SinkEventAction.none)
        #expect(machine.nextAction(at: start) == .finish)
    }
}

@Suite("Consumer state machine behind its lock", .timeLimit(.minutes(1)))
struct SharedConsumerMachineTests {
    typealias Machine = ConsumerStateMachine<ContinuousClock.Instant>

    /// Both sinks busy, and the machine has just told the reader to wait for one.
    static func waitingReader() -> (SharedConsumerMachine, [EntryBatch]) {
        let start = ContinuousClock.now
        let tests = ConsumerStateMachineTests()
        var (machine, busy) = tests.withBothSinksBusy()
        machine.readReturned(ConsumerStateMachineTests.entries(2..<3), at: start)
        machine.readReturned([], at: start)
        #expect(machine.nextAction(at: start) == .waitForSink)
        return (SharedConsumerMachine(machine), busy)
    }

    @Test func aCommittedBatchResumesTheWaitingReader() async {
        let (shared, busy) = Self.waitingReader()
        async let waited: Void = shared.waitForSink()
        shared.committed(busy[0])
        await waited
        #expect(shared.withMachine { $0.freeLanes } == 1)
    }

    /// A sink's report between the machine's decision and the reader's wait: the wait returns at once.
    @Test func aSinkThatReportsBeforeTheReaderWaitsIsNotMissed() async {
        let (shared, busy) = Self.waitingReader()
        shared.failed(busy[1])
        await shared.waitForSink()
        #expect(shared.withMachine { $0.readerWaits } == false)
    }

    @Test func aCancelledWaitReturns() async {
        let (shared, _) = Self.waitingReader()
        let waiting = Task { await shared.waitForSink() }
        waiting.cancel()
        await waiting.value
    }
}

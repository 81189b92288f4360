import AdTelemetryRecords
@testable import AdWorkerCore
import Testing

@Suite("Consumer state machine")
struct ConsumerStateMachineTests {
    typealias Machine = ConsumerStateMachine<ContinuousClock.Instant>
    let start = ContinuousClock.Instant.now

    static func configuration(
        entries: Int = 100, bytes: Int = 1 << 20, linger: Duration = .zero, drain: Bool = false
    ) -> Machine.Configuration {
        Machine.Configuration(
            maximumEntries: entries, maximumBytes: bytes, linger: linger, lanes: 2, claimInterval: .seconds(30),
            maximumReadBlock: .seconds(1), drain: drain, drainReadBlock: .milliseconds(10)
        )
    }

    static func entries(_ range: Range<UInt64>, bytes: Int = 10) -> [StreamEntry] {
        range.map { sequence in
            var fields = StreamFields()
            fields.append(name: Array("f".utf8), value: [UInt8](repeating: 0x61, count: bytes - 1))
            return StreamEntry(id: StreamEntryID(milliseconds: 1, sequence: sequence), fields: fields)
        }
    }

    static func handedOff(_ action: Machine.Action) -> Machine.Batch? {
        if case .handOff(let batch) = action { return batch }
        return nil
    }

    /// Past the own pending entries (none) and the first claim (nothing idle).
    func running(_ configuration: Machine.Configuration = Self.configuration()) -> Machine {
        var machine = Machine(configuration: configuration, now: start)
        #expect(machine.nextAction(at: start) == .readOwnPending(after: StreamEntryID(milliseconds: 0, sequence: 0), count: configuration.maximumEntries))
        machine.ownPendingReturned(.init(entries: [], redelivered: true))
        #expect(machine.nextAction(at: start) == .claim(cursor: StreamEntryID(milliseconds: 0, sequence: 0), count: configuration.maximumEntries))
        machine.claimReturned(nil, next: StreamEntryID(milliseconds: 0, sequence: 0), at: start)
        return machine
    }

    /// Running, with each sink holding a one-entry batch (sequences 0 and 1).
    func withBothSinksBusy(_ configuration: Machine.Configuration = Self.configuration(), bytes: Int = 10) -> Machine {
        var machine = running(configuration)
        for sequence in UInt64(0)..<2 {
            machine.readReturned(Self.entries(sequence..<sequence + 1, bytes: bytes), at: start)
            #expect(Self.handedOff(machine.nextAction(at: start))?.entries.count == 1)
        }
        #expect(machine.freeLanes == 0)
        return machine
    }

    @Test func ownPendingEntriesGoFirstAsRedeliveredBatches() {
        var machine = Machine(configuration: Self.configuration(), now: start)
        #expect(machine.nextAction(at: start) == .readOwnPending(after: StreamEntryID(milliseconds: 0, sequence: 0), count: 100))
        let pending = Machine.Batch(entries: Self.entries(0..<3), redelivered: true, deliveries: [StreamEntryID(milliseconds: 1, sequence: 0): 2])
        machine.ownPendingReturned(pending)
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
        #expect(Self.handedOff(machine.nextAction(at: start))?.entries.count == 10)
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
        machine.sinksFreed(1)
        #expect(Self.handedOff(machine.nextAction(at: start))?.entries.map(\.id.sequence) == Array(20..<120))
        #expect(machine.bufferedEntries == 80)
    }

    @Test func aBatchCarriesWhenItsOldestEntryWasRead() {
        var machine = withBothSinksBusy()
        let firstRead = start.advanced(by: .milliseconds(3))
        machine.readReturned(Self.entries(2..<5), at: firstRead)
        machine.readReturned(Self.entries(5..<9), at: firstRead.advanced(by: .milliseconds(2)))
        machine.sinksFreed(1)
        let batch = Self.handedOff(machine.nextAction(at: firstRead.advanced(by: .milliseconds(7))))
        #expect(batch?.entries.count == 7)
        #expect(batch?.readAt == firstRead)
    }

    @Test func anEmptyReadWithEverySinkBusyWaitsForASink() {
        var machine = withBothSinksBusy()
        machine.readReturned(Self.entries(2..<3), at: start)
        #expect(machine.nextAction(at: start) == .readNew(count: 99, block: nil))
        machine.readReturned([], at: start)
        #expect(machine.nextAction(at: start) == .waitForSink)
        machine.sinksFreed(1)
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
        var machine = withBothSinksBusy(Self.configuration(entries: 1000, bytes: 1000), bytes: 100)
        machine.readReturned(Self.entries(2..<7, bytes: 100), at: start)
        // 500 of 1000 bytes buffered at about 100 bytes an entry (the average adapts).
        guard case .readNew(let count, nil) = machine.nextAction(at: start) else {
            Issue.record("expected a non-blocking read")
            return
        }
        #expect(count < 20)
    }

    @Test func aLingerWaitsForMoreWhileASinkIsFree() {
        var machine = running(Self.configuration(linger: .milliseconds(5)))
        machine.readReturned(Self.entries(0..<2), at: start)
        #expect(machine.nextAction(at: start + .milliseconds(1)) == .readNew(count: 98, block: .milliseconds(4)))
        machine.readReturned(Self.entries(2..<4), at: start + .milliseconds(5))
        #expect(Self.handedOff(machine.nextAction(at: start + .milliseconds(5)))?.entries.count == 4)
    }

    @Test func noClaimsWhileACircuitIsOpen() {
        var machine = running()
        machine.sinkCircuit(isOpen: true)
        let later = start + .seconds(31)
        #expect(machine.nextAction(at: later) == .readNew(count: 100, block: .seconds(1)))
        machine.readReturned([], at: later)
        machine.sinkCircuit(isOpen: false)
        #expect(machine.nextAction(at: later) == .claim(cursor: StreamEntryID(milliseconds: 0, sequence: 0), count: 100))
    }

    @Test func theClaimScanContinuesAtItsCursorAndStartsOverWhenDone() {
        var machine = running()
        let later = start + .seconds(30)
        #expect(machine.nextAction(at: later) == .claim(cursor: StreamEntryID(milliseconds: 0, sequence: 0), count: 100))
        let claimed = Machine.Batch(entries: Self.entries(0..<2), redelivered: true)
        machine.claimReturned(claimed, next: StreamEntryID(milliseconds: 5, sequence: 0), at: later)
        #expect(machine.nextAction(at: later) == .handOff(claimed))
        #expect(machine.nextAction(at: later) == .claim(cursor: StreamEntryID(milliseconds: 5, sequence: 0), count: 100))
        machine.claimReturned(nil, next: StreamEntryID(milliseconds: 0, sequence: 0), at: later)
        // Scan complete: the next one starts from the beginning, an interval later.
        #expect(machine.nextAction(at: later) == .readNew(count: 100, block: .seconds(1)))
        machine.readReturned([], at: later)
        #expect(machine.nextAction(at: later + .seconds(30)) == .claim(cursor: StreamEntryID(milliseconds: 0, sequence: 0), count: 100))
    }

    /// Entries read and still waiting for a sink longer than the claim idle time come back from
    /// XAUTOCLAIM: handing them over again would store them twice.
    @Test func aClaimDropsEntriesStillInTheBuffer() {
        var machine = withBothSinksBusy()
        machine.readReturned(Self.entries(2..<10), at: start)
        let later = start + .seconds(30)
        #expect(machine.nextAction(at: later) == .claim(cursor: StreamEntryID(milliseconds: 0, sequence: 0), count: 100))
        let claimed = Self.entries(5..<12)
        machine.claimReturned(.init(entries: claimed, redelivered: true), next: StreamEntryID(milliseconds: 0, sequence: 0), at: later)
        machine.sinksFreed(1)
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
        #expect(Self.handedOff(machine.nextAction(at: start)) != nil)
        #expect(machine.nextAction(at: start) == .readNew(count: 100, block: .milliseconds(10)))
        machine.readReturned([], at: start)
        // A sink is still committing: its acknowledgement ends the drain, not a poll.
        #expect(machine.nextAction(at: start) == .waitForSink)
        machine.sinksFreed(1)
        #expect(machine.nextAction(at: start) == .readNew(count: 100, block: .milliseconds(10)))
        machine.readReturned([], at: start)
        #expect(machine.nextAction(at: start) == .checkPending)
        machine.pendingChecked(othersHoldPending: true, at: start)
        #expect(machine.nextAction(at: start) == .claim(cursor: StreamEntryID(milliseconds: 0, sequence: 0), count: 100))
        machine.claimReturned(nil, next: StreamEntryID(milliseconds: 0, sequence: 0), at: start)
        #expect(machine.nextAction(at: start) == .sleep(.milliseconds(200)))
        machine.slept()
        #expect(machine.nextAction(at: start) == .readNew(count: 100, block: .milliseconds(10)))
        machine.readReturned([], at: start)
        #expect(machine.nextAction(at: start) == .checkPending)
        machine.pendingChecked(othersHoldPending: false, at: start)
        #expect(machine.nextAction(at: start) == .finish)
    }

    @Test func shutdownHandsOverWhatWasReadAndThenFinishes() {
        var machine = withBothSinksBusy()
        machine.readReturned(Self.entries(2..<5), at: start)
        machine.shutDown()
        #expect(machine.nextAction(at: start) == .waitForSink)
        machine.sinksFreed(1)
        #expect(Self.handedOff(machine.nextAction(at: start))?.entries.count == 3)
        #expect(machine.nextAction(at: start) == .finish)
    }
}

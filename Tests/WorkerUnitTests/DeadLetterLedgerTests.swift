import AdTelemetryRecords
@testable import AdWorkerCore
import Testing

@Suite struct DeadLetterLedgerTests {
    typealias State = DeadLetterLedger.State

    static func id(_ milliseconds: UInt64, _ sequence: UInt64 = 0) -> StreamEntryID {
        StreamEntryID(milliseconds: milliseconds, sequence: sequence)
    }

    @Test func theFirstLookupReadsFromAMinuteBeforeTheOldestEntry() {
        var state = State()
        #expect(state.readStart(forOldest: Self.id(1_000_000, 5)) == Self.id(1_000_000 - 60_000))
        var early = State()
        #expect(early.readStart(forOldest: Self.id(1_000, 5)) == Self.id(0))
    }

    @Test func entriesWithALetterAmongThoseReadAreFound() {
        var state = State()
        _ = state.readStart(forOldest: Self.id(100_000))
        state.read([(Self.id(100_001), Self.id(100_000)), (Self.id(100_002), nil), (Self.id(100_003), Self.id(100_010))])
        #expect(state.alreadyLettered([Self.id(100_000), Self.id(100_005), Self.id(100_010)], oldest: Self.id(100_000)) == [Self.id(100_000), Self.id(100_010)])
    }

    @Test func aLaterLookupReadsOnlyLettersAfterThoseAlreadyRead() {
        var state = State()
        _ = state.readStart(forOldest: Self.id(100_000))
        state.read([(Self.id(100_001), Self.id(100_000)), (Self.id(100_007, 3), Self.id(100_002))])
        #expect(state.readStart(forOldest: Self.id(100_050)) == Self.id(100_007, 4))
        // What was read before still counts.
        #expect(state.alreadyLettered([Self.id(100_002)], oldest: Self.id(100_002)) == [Self.id(100_002)])
    }

    @Test func anOlderEntryThanTheReadsCoverReadsEverythingAgainFromIt() {
        var state = State()
        _ = state.readStart(forOldest: Self.id(500_000))
        state.read([(Self.id(500_001), Self.id(500_000))])
        #expect(state.readStart(forOldest: Self.id(200_000)) == Self.id(140_000))
        #expect(state.readThrough == nil)
        #expect(state.lettered.isEmpty)
    }

    @Test func pastItsBoundItForgetsEntriesTooOldToBeAskedAboutAgain() {
        var state = State()
        _ = state.readStart(forOldest: Self.id(0))
        let many = (0..<UInt64(State.maximumRemembered + 10)).map { (id: Self.id(10_000_000, $0), entry: Optional(Self.id($0 * 100))) }
        state.read(many)
        let oldest = Self.id(UInt64(State.maximumRemembered) * 100)
        #expect(state.alreadyLettered([oldest], oldest: oldest) == [oldest])
        #expect(state.lettered.allSatisfy { $0 >= State.earliestLetter(for: oldest) })
        #expect(state.coveredFrom == State.earliestLetter(for: oldest))
        // Entries at or after that oldest are still answered from memory; older ones read again.
        #expect(state.readStart(forOldest: oldest) == Self.id(10_000_000, UInt64(State.maximumRemembered + 10)))
        #expect(state.alreadyLettered([Self.id(UInt64(State.maximumRemembered + 5) * 100)], oldest: oldest).count == 1)
        #expect(state.readStart(forOldest: Self.id(0)) == Self.id(0))
        #expect(state.lettered.isEmpty)
    }

    @Test func underAFloodOfLettersItKeepsTheNewestAndReadsOnInsteadOfStartingOver() {
        // One letter a millisecond for two minutes (about 120,000), each batch of 1,000 entries
        // looked up before its letters are written: over the bound within the clock margin.
        var state = State()
        let start: UInt64 = 10_000_000
        var written: [(id: StreamEntryID, entry: StreamEntryID?)] = []
        var letters = 0
        for batch in 0..<UInt64(120) {
            let oldest = Self.id(start + batch * 1_000)
            let readFrom = state.readStart(forOldest: oldest)
            if batch > 1 {
                // Goes on after the last letter read (the batch before last's), never from the
                // batch's earliest letter again.
                #expect(readFrom == Self.id(start + (batch - 1) * 1_000 - 1, 2))
            }
            // The letters written since the last lookup: the previous batch's.
            state.read(written)
            let ids = (0..<UInt64(1_000)).map { Self.id(start + batch * 1_000 + $0) }
            #expect(state.alreadyLettered(ids, oldest: oldest).isEmpty)
            #expect(state.lettered.count <= State.maximumRemembered)
            written = ids.map { (id: Self.id($0.milliseconds, 1), entry: Optional($0)) }
            letters += ids.count
        }
        state.read(written)
        #expect(letters > 2 * State.maximumRemembered)
        // The newest are still answered from memory; an entry older than those kept reads again.
        let recent = Self.id(start + 119_500)
        #expect(state.readStart(forOldest: recent) == Self.id(start + 119_999, 2))
        #expect(state.alreadyLettered([recent], oldest: recent) == [recent])
        let forgotten = Self.id(start + 60_000)
        #expect(state.readStart(forOldest: forgotten) == State.earliestLetter(for: forgotten))
        #expect(state.lettered.isEmpty)
    }
}

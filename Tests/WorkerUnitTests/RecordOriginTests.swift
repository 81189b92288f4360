@testable import AdTelemetry
import AdTelemetryRecords
import Testing

@Suite("Record origins and looking up records of a cut pipeline")
struct RecordOriginTests {
    @Test func originFieldRoundTripsAndRefusesOtherText() {
        let origin = RecordOrigin(instance: 0x00ab_cdef_0123_4567, sequence: 42)
        #expect(String(decoding: origin.fieldValue, as: UTF8.self) == "00abcdef01234567-42")
        #expect(RecordOrigin(fieldValue: origin.fieldValue) == origin)
        let largest = RecordOrigin(instance: .max, sequence: .max)
        #expect(RecordOrigin(fieldValue: largest.fieldValue) == largest)
        for text in ["", "00abcdef01234567", "00abcdef01234567-", "00ABCDEF01234567-1", "0abcdef01234567-1", "00abcdef01234567-x", "00abcdef01234567-18446744073709551616"] {
            #expect(RecordOrigin(fieldValue: Array(text.utf8)) == nil, "\(text)")
        }
    }

    @Test func lookupStartsBeforeTheLastConfirmedIDOrTheSendTime() {
        let confirmed = StreamEntryID(milliseconds: 1_700_000_005_000, sequence: 7)
        #expect(UnknownOutcomeLookup.start(lastConfirmed: confirmed, sentAtMilliseconds: 1_700_000_009_000) == .entry(StreamEntryID(milliseconds: 1_700_000_004_000, sequence: 0)))
        #expect(UnknownOutcomeLookup.start(lastConfirmed: StreamEntryID(milliseconds: 10, sequence: 0), sentAtMilliseconds: 3) == .entry(StreamEntryID(milliseconds: 0, sequence: 0)))
        // With nothing confirmed, the send time by the host's clock: turned into Redis's before looking.
        #expect(UnknownOutcomeLookup.start(lastConfirmed: nil, sentAtMilliseconds: 1_700_000_009_000) == .sentAt(hostMilliseconds: 1_700_000_009_000))
        #expect(UnknownOutcomeLookup.entryID(for: .sentAt(hostMilliseconds: 1_700_000_009_000), redisAhead: 0) == StreamEntryID(milliseconds: 1_700_000_004_000, sequence: 0))
        #expect(UnknownOutcomeLookup.entryID(for: .sentAt(hostMilliseconds: 3), redisAhead: 0) == StreamEntryID(milliseconds: 0, sequence: 0))
        #expect(UnknownOutcomeLookup.entryID(for: .entry(confirmed), redisAhead: -60_000) == confirmed)
    }

    @Test func aHostClockAheadOfRedisStillLooksFromBeforeTheSend() {
        // The host runs 10 s ahead: it sent at its 1_700_000_019_000, Redis stored the record at its
        // 1_700_000_009_000. The old start (host time less 5 s) lay 5 s past the stored entry.
        let stored = StreamEntryID(milliseconds: 1_700_000_009_000, sequence: 0)
        let start = UnknownOutcomeLookup.start(lastConfirmed: nil, sentAtMilliseconds: 1_700_000_019_000)
        #expect(UnknownOutcomeLookup.entryID(for: start, redisAhead: -10_000) <= stored)
        // And 10 s behind: still no later than the entry, and no more than the margin before it.
        let behind = UnknownOutcomeLookup.entryID(for: .sentAt(hostMilliseconds: 1_699_999_999_000), redisAhead: 10_000)
        #expect(behind <= stored && stored.milliseconds - behind.milliseconds == UnknownOutcomeLookup.hostClockMargin)
    }

    @Test func onlyThisInstancesWantedRecordsAreFound() {
        func entry(_ milliseconds: UInt64, _ fields: [(String, String)]) -> StreamEntry {
            StreamEntry(id: StreamEntryID(milliseconds: milliseconds, sequence: 0), fields: StreamFields(fields))
        }
        let mine: UInt64 = 0x1111_2222_3333_4444
        let other: UInt64 = 0x5555_6666_7777_8888
        let entries = [
            entry(1, [("v", "1"), ("origin", String(decoding: RecordOrigin(instance: mine, sequence: 5).fieldValue, as: UTF8.self))]),
            entry(2, [("v", "1"), ("origin", String(decoding: RecordOrigin(instance: other, sequence: 6).fieldValue, as: UTF8.self))]),
            entry(3, [("v", "1"), ("request_id", "no origin, another client")]),
            entry(4, [("origin", String(decoding: RecordOrigin(instance: mine, sequence: 7).fieldValue, as: UTF8.self))]),
            entry(5, [("origin", String(decoding: RecordOrigin(instance: mine, sequence: 9).fieldValue, as: UTF8.self))]),
            // A copy re-added by someone else later: the first stays the record's id.
            entry(6, [("origin", String(decoding: RecordOrigin(instance: mine, sequence: 5).fieldValue, as: UTF8.self))]),
            entry(7, [("origin", "garbage")]),
        ]
        let wanted: Set<RecordOrigin> = Set([5, 6, 7, 8].map { RecordOrigin(instance: mine, sequence: $0) })
        let found = UnknownOutcomeLookup.stored(in: entries, wanted: wanted)
        #expect(found == [
            RecordOrigin(instance: mine, sequence: 5): StreamEntryID(milliseconds: 1, sequence: 0),
            RecordOrigin(instance: mine, sequence: 7): StreamEntryID(milliseconds: 4, sequence: 0),
        ])
    }
}

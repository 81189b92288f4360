import AdTelemetryRecords
import Testing

@Suite("Stream entry ids")
struct StreamEntryIDTests {
    @Test func parsesAndPrintsTheRedisForm() throws {
        let id = try #require(StreamEntryID("1700000000123-7"))
        #expect(id.milliseconds == 1_700_000_000_123)
        #expect(id.sequence == 7)
        #expect(id.description == "1700000000123-7")
        #expect(id.timestamp.millisecondsSinceEpoch == 1_700_000_000_123)
    }

    @Test func successorIsTheNextPossibleID() throws {
        #expect(try #require(StreamEntryID("5-1")).successor?.description == "5-2")
        #expect(try #require(StreamEntryID("5-18446744073709551615")).successor?.description == "6-0")
    }

    @Test(arguments: ["0-0", "1700000000123-7", "18446744073709551615-18446744073709551615"])
    func writesTheSameBytesAsItsDescription(text: String) throws {
        let id = try #require(StreamEntryID(text))
        #expect(id.withUTF8 { Array($0) } == Array(text.utf8))
    }

    @Test(arguments: ["", "-", "1-", "-1", "1", "1-2-3", "a-1", "1-b", "99999999999999999999999-0", " 1-2"])
    func refusesMalformedIDs(text: String) {
        #expect(StreamEntryID(text) == nil)
    }

    @Test func ordersByTimeThenSequence() throws {
        let ids = ["5-1", "5-0", "4-9", "10-0"].compactMap { StreamEntryID($0) }
        #expect(ids.sorted().map(\.description) == ["4-9", "5-0", "5-1", "10-0"])
    }
}

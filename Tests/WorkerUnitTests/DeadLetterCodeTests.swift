import AdTelemetryRecords
@testable import AdWorkerCore
import AdWorkerRedis
import Testing

@Suite("Dead-letter codes")
struct DeadLetterCodeTests {
    static func entry(_ pairs: [(String, String)] = [("v", "1"), ("prediction", "{")]) -> StreamEntry {
        StreamEntry(id: StreamEntryID(milliseconds: 7, sequence: 1), fields: StreamFields(pairs))
    }

    @Test func everyCodeRoundTripsThroughItsTextAndNoTwoShareOne() {
        let texts = DeadLetterCode.allCases.map(\.rawValue)
        #expect(Set(texts).count == texts.count)
        #expect(texts.count == RecordError.Code.allCases.count + 2)
        for code in DeadLetterCode.allCases { #expect(DeadLetterCode(rawValue: code.rawValue) == code) }
        #expect(DeadLetterCode(rawValue: "invalid_json") == .undecodable(.invalidJSON))
        #expect(DeadLetterCode(rawValue: "rejected_by_database") == .rejectedByDatabase)
        #expect(DeadLetterCode(rawValue: "max_deliveries_exceeded") == .maxDeliveriesExceeded)
        #expect(DeadLetterCode(rawValue: "invalid") == nil)
        #expect(DeadLetterCode(rawValue: "invalid_json: input") == nil)
    }

    @Test func aLetterCarriesItsCodeInADeadCodeFieldThatReplayLeavesOut() {
        let entry = Self.entry()
        let letter = DeadLetter(entry: entry, reason: "invalid_json: prediction", code: .undecodable(.invalidJSON))
        let written = letter.fields(from: "s", at: Timestamp(millisecondsSinceEpoch: 9))
        #expect(written.value(of: DeadLetter.Field.code).map { Array($0) } == Array("invalid_json".utf8))
        #expect(DeadLetter.code(of: written) == .undecodable(.invalidJSON))
        func pairs(_ fields: StreamFields) -> [[UInt8]] { fields.flatMap { [Array($0.name), Array($0.value)] } }
        #expect(pairs(DeadLetter.originalFields(of: written)) == pairs(entry.fields))
    }

    /// Letters written before `dead.code` existed have only their reason, which always began with the code.
    @Test func aLetterWithoutADeadCodeFieldHasTheCodeItsReasonBeginsWith() {
        func code(reason: String) -> DeadLetterCode? { DeadLetter.code(of: StreamFields([("dead.reason", reason), ("v", "1")])) }
        #expect(code(reason: "missing_field: request_id") == .undecodable(.missingField))
        #expect(code(reason: "entry_too_large") == .undecodable(.entryTooLarge))
        #expect(code(reason: "rejected_by_database: sqlstate 22021") == .rejectedByDatabase)
        #expect(code(reason: "max_deliveries_exceeded") == .maxDeliveriesExceeded)
        #expect(code(reason: "something else") == nil)
        #expect(DeadLetter.code(of: StreamFields([("v", "1")])) == nil)
        // The field, where there is one, is what counts.
        #expect(DeadLetter.code(of: StreamFields([("dead.reason", "invalid_json: x"), ("dead.code", "nul_byte")])) == .undecodable(.nulByte))
    }
}

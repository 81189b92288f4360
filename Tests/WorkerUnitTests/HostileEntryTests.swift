import AdTelemetryRecords
@testable import AdWorkerCore
import AdWorkerPostgres
import Testing

/// Entries no producer of ours writes but anyone with XADD can: every one must decode to a row
/// that encodes, or be refused with a reason. A trap here would crash the worker on every restart.
@Suite("Hostile entries")
struct HostileEntryTests {
    static func fields(_ pairs: [(String, String)]) -> StreamFields {
        var fields = StreamFields()
        for (name, value) in pairs { fields.append(name: name.utf8, value: value.utf8) }
        return fields
    }

    static let valid = fields([("v", "1"), ("model", "m"), ("request_id", "r"), ("ts", "1700000000000"), ("prediction", "1")])

    @Test(arguments: [
        (UInt64(9_223_372_036_854_776), false), (UInt64(Timestamp.acceptedRange.upperBound), true),
        (UInt64(Timestamp.acceptedRange.upperBound) + 1, false), (UInt64.max, false), (0, true),
    ])
    func anEntryIDWhoseTimeCannotBeStoredIsRefused(milliseconds: UInt64, storable: Bool) throws {
        let entry = StreamEntry(id: StreamEntryID(milliseconds: milliseconds, sequence: .max), fields: Self.valid)
        if storable {
            var rows = BinaryCopyRows()
            RowEncoder.append(try WireDecoder().decode(entry, as: .inference), id: entry.id, to: &rows)
            #expect(rows.count == 1)
        } else {
            #expect(throws: RecordError(.outOfRange, field: "entry_id")) { try WireDecoder().decode(entry, as: .inference) }
        }
    }

    @Test func theLargestIDHasNoSuccessor() {
        #expect(StreamEntryID(milliseconds: .max, sequence: .max).successor == nil)
        #expect(StreamEntryID(milliseconds: 1, sequence: .max).successor == StreamEntryID(milliseconds: 2, sequence: 0))
    }

    /// A seeded sweep of extreme values in every numeric field and the id: whatever decodes must encode.
    @Test func extremeValuesDecodeToRowsOrAreRefused() {
        let numbers = [
            "0", "-0", "-1", "9223372036854775807", "-9223372036854775808", "9223372036854775808", "18446744073709551615",
            "253402300799999", "253402300800000", "2147483647", "2147483648", "-2147483648", "1e308", "1e309", "-1e309",
            "5e-324", "1e-400", "0x10", "+5", "nan", "inf", "00000000000000000001", "1.", ".1", "", "-", "1e", "١",
        ]
        var random = SplitMix64(seed: 9)
        let decoder = WireDecoder()
        var refused = 0
        for _ in 0..<5_000 {
            func pick() -> String { numbers[Int(random.next() % UInt64(numbers.count))] }
            let fields = Self.fields([
                ("v", "1"), ("model", "m"), ("request_id", "r"), ("ts", pick()), ("prediction", pick()), ("confidence", pick()),
                ("anomaly_score", pick()), ("is_anomaly", ["0", "1", "true", "2", ""][Int(random.next() % 5)]), ("processing_ms", pick()),
            ])
            let id = StreamEntryID(milliseconds: random.next() >> (random.next() % 64), sequence: random.next())
            do {
                var rows = BinaryCopyRows()
                RowEncoder.append(try decoder.decode(StreamEntry(id: id, fields: fields), as: .inference), id: id, to: &rows)
                #expect(rows.count == 1)
            } catch {
                refused += 1
            }
        }
        #expect(refused > 0 && refused < 5_000)
    }
}

import Testing
import TelemetryRecords
@testable import Postgres
@testable import Worker

@Suite("Binary COPY encoding")
struct BinaryCopyRowsTests {
    @Test func framesAnyRunOfRowsWithHeaderAndTrailer() {
        var rows = BinaryCopyRows()
        for value in [Int32(1), 2, 3] {
            rows.beginRow(fieldCount: 1)
            rows.writeInt4(value)
            rows.endRow()
        }
        let middle = rows.chunks(for: 1..<2)
        #expect(Array(middle[0]) == Array("PGCOPY\n".utf8) + [0xFF, 0x0D, 0x0A, 0x00, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(Array(middle[1]) == [0, 1, 0, 0, 0, 4, 0, 0, 0, 2])
        #expect(Array(middle[2]) == [0xFF, 0xFF])
        #expect(rows.chunks(for: 0..<3)[1].count == 30)
    }

    @Test func encodesPostgresBinaryTypes() {
        var rows = BinaryCopyRows()
        rows.beginRow(fieldCount: 5)
        rows.writeTimestamp(Timestamp(millisecondsSinceEpoch: 946_684_800_001))
        rows.writeJSONB(JSONText(["a": 1]))
        rows.writeInet(IPAddress("192.168.1.2")!)
        rows.writeBool(true)
        rows.writeNull()
        rows.endRow()
        let bytes = Array(rows.chunks(for: 0..<1)[1])
        let expected: [UInt8] =
            [0, 5]
            + [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x03, 0xE8]  // 1 ms after 2000-01-01 = 1000 µs
            + [0, 0, 0, 8, 1] + Array(#"{"a":1}"#.utf8)
            + [0, 0, 0, 8, 2, 32, 0, 4, 192, 168, 1, 2]
            + [0, 0, 0, 1, 1]
            + [0xFF, 0xFF, 0xFF, 0xFF]
        #expect(bytes == expected)
    }

    @Test func rowEncoderWritesOneFieldPerTargetColumn() {
        var rows = BinaryCopyRows()
        let id = StreamEntryID(milliseconds: 1_700_000_000_000, sequence: 3)
        var telemetry = SyntheticTelemetry(seed: 1)
        let (training, inference) = telemetry.request(number: 1)
        RowEncoder.append(.training(training), id: id, to: &rows)
        RowEncoder.append(.inference(inference), id: id, to: &rows)
        let trainingFields = rows.chunks(for: 0..<1)[1].prefix(2)
        let inferenceFields = rows.chunks(for: 1..<2)[1].prefix(2)
        #expect(Array(trainingFields) == [0, UInt8(RowEncoder.trainingTarget.columns.count)])
        #expect(Array(inferenceFields) == [0, UInt8(RowEncoder.inferenceTarget.columns.count)])
    }
}

@Suite("SQLSTATE classification")
struct PostgresErrorTests {
    @Test(arguments: [
        ("23505", PostgresError.Code.uniqueViolation),
        ("23502", .constraintViolation),
        ("22P02", .dataError),
        ("22021", .dataError),
        ("08006", .connectionLost),
        ("57P01", .connectionLost),
        ("57014", .timeout),
        ("40P01", .transient),
        ("53100", .transient),
        ("42P01", .serverError),
    ])
    func classifies(state: String, code: PostgresError.Code) {
        #expect(PostgresError.code(forSQLState: state) == code)
    }

    @Test func descriptionNeverCarriesTheServerMessage() {
        let error = PostgresError(.dataError, "the server refused a value", sqlState: "22P02", serverMessage: "invalid input: \"secret-value\"")
        #expect(!error.description.contains("secret-value"))
        #expect(error.description.contains("22P02"))
    }

    @Test func configurationDescriptionHidesThePassword() {
        let configuration = PostgresConfiguration(password: "hunter2")
        #expect(!configuration.description.contains("hunter2"))
        #expect(configuration.connectionInfo.contains("password='hunter2'"))
        let quoted = PostgresConfiguration(password: "it's\\x")
        #expect(quoted.connectionInfo.contains(#"password='it\'s\\x'"#))
    }
}

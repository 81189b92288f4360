import AdTelemetryRecords
@testable import AdWorkerCore
@testable import AdWorkerPostgres
import Testing

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
        ("XX000", .unnamed),
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
        #expect(configuration.connectionParameters.contains { $0 == ("password", "hunter2") })
        let withURL = PostgresConfiguration(url: "postgres://u:secret@db/x")
        #expect(!withURL.description.contains("secret"))
    }

    @Test func everyTransactionCommitsSynchronouslyAndBoundsItsWaits() throws {
        var configuration = PostgresConfiguration()
        configuration.searchPath = "s1"
        let parameters = Dictionary(configuration.connectionParameters, uniquingKeysWith: { _, last in last })
        // No startup options: PgBouncer refuses them, and a transaction pool could not keep them.
        #expect(parameters["options"] == nil)
        #expect(
            configuration.transactionSettings
                == "SET LOCAL statement_timeout = 60000; SET LOCAL synchronous_commit = on; SET LOCAL client_connection_check_interval = 1000; SET LOCAL search_path = s1; "
        )
        #expect(parameters["keepalives"] == "1")
        #expect(parameters["tcp_user_timeout"] == "65000")
    }

    @Test func urlIsTheBaseAndOnlyExplicitFieldsOverrideIt() {
        var configuration = PostgresConfiguration(host: "from-env", database: "other", password: "filled-in", url: "postgres://u@db:6432/x")
        var keys = configuration.connectionParameters.map(\.0)
        // The URL first (libpq expands it), then only what it lacks or what a flag set.
        #expect(keys.prefix(2) == ["dbname", "password"])
        #expect(!keys.contains("host"))
        configuration.urlOverrides = [.database]
        keys = configuration.connectionParameters.map(\.0)
        #expect(keys.filter { $0 == "dbname" }.count == 2)
        // A URL that carries its own password keeps it.
        configuration.url = "postgres://u:own@db/x"
        #expect(!configuration.connectionParameters.contains { $0.0 == "password" })
    }

    @Test func malformedURLIsRefusedWithLibpqsReason() {
        #expect(throws: PostgresError.self) { try PostgresConfiguration.inspect(url: "postgres://u@db:notaport/x?bogus=1") }
        #expect((try? PostgresConfiguration.inspect(url: "postgresql://u:p@h:5432/d"))?.hasPassword == true)
        #expect((try? PostgresConfiguration.inspect(url: "host=h dbname=d"))?.hasPassword == false)
    }
}

import AdTelemetryRecords
import Testing

/// Collects encoded fields the way XADD would send them.
struct FieldCollector: StreamFieldWriter {
    var fields = StreamFields()

    mutating func writeField(_ name: String, _ value: some Collection<UInt8>) {
        fields.append(name: name.utf8, value: value)
    }
}

@Suite("Wire format v1")
struct WireFormatTests {
    let decoder = WireDecoder()

    static let training = TrainingRecord(
        model: "fraud_detection", requestID: "req-1", eventTime: Timestamp(millisecondsSinceEpoch: 1_764_000_000_123),
        input: JSONText(["user_id": "u-1", "transaction_amount": 12.5, "features": [0.1, 0.2]]),
        metadata: JSONText(["api_version": "v1"]), sourceIP: IPAddress("2001:db8::1")
    )

    static let inference = InferenceRecord(
        model: "fraud_detection", requestID: "req-1", eventTime: Timestamp(millisecondsSinceEpoch: 1_764_000_000_456),
        prediction: JSONText(["label": "fraud", "probability": 0.93]), confidence: 0.87, anomalyScore: 0.1234567890123,
        isAnomaly: true, processingTime: .milliseconds(42), metadata: nil
    )

    @Test func trainingRoundTrips() throws {
        var collector = FieldCollector()
        WireFormat.encode(Self.training, into: &collector)
        #expect(collector.fields.map(\.nameString) == ["v", "model", "request_id", "ts", "input", "meta", "source_ip"])
        #expect(try decoder.decodeTraining(collector.fields) == Self.training)
    }

    @Test func inferenceRoundTripsIncludingFloatsExactly() throws {
        var collector = FieldCollector()
        WireFormat.encode(Self.inference, into: &collector)
        let decoded = try decoder.decodeInference(collector.fields)
        #expect(decoded == Self.inference)
        #expect(decoded.anomalyScore == 0.1234567890123)
    }

    /// One list of names: each matches its own bytes and no other's, and everything the encoder
    /// writes is on it.
    @Test func everyFieldNameIsMatchedOnItsBytesAndTheEncoderWritesOnlyThose() {
        for name in WireFormat.FieldName.allCases {
            #expect(WireFormat.FieldName(Array(name.utf8)[...]) == name, "\(name)")
            #expect(WireFormat.FieldName(Array((name.rawValue + "x").utf8)[...]) == nil)
        }
        #expect(WireFormat.FieldName(Array("request".utf8)[...]) == nil && WireFormat.FieldName([][...]) == nil)
        var collector = FieldCollector()
        WireFormat.encode(Self.training, into: &collector)
        WireFormat.encode(Self.inference, into: &collector)
        for field in collector.fields {
            #expect(WireFormat.FieldName(field.name)?.rawValue == field.nameString)
        }
    }

    @Test func decodesAnEntryWrittenByHand() throws {
        // As `redis-cli XADD adserving:inference * v 1 model m request_id r ts 1700000000000 prediction 0.7 is_anomaly 0`.
        let fields = StreamFields([
            ("v", "1"), ("model", "m"), ("request_id", "r"), ("ts", "1700000000000"), ("prediction", "0.7"), ("is_anomaly", "0"),
        ])
        let record = try decoder.decodeInference(fields)
        #expect(record.prediction.description == "0.7")
        #expect(record.isAnomaly == false)
        #expect(record.confidence == nil)
        #expect(record.eventTime.millisecondsSinceEpoch == 1_700_000_000_000)
    }

    @Test func keepsUnknownFieldsInMetadata() throws {
        let fields = StreamFields([
            ("v", "1"), ("model", "m"), ("request_id", "r"), ("ts", "1"), ("input", "{}"),
            ("meta", #"{"api_version":"v2"}"#), ("campaign", "summer \"sale\""),
        ])
        let record = try decoder.decodeTraining(fields)
        #expect(record.metadata?.description == #"{"extra_fields":{"campaign":"summer \"sale\""},"api_version":"v2"}"#)
    }

    static let base: [(String, String)] = [("v", "1"), ("model", "m"), ("request_id", "r"), ("ts", "1700000000000"), ("input", #"{"a":1}"#)]

    static func replacing(_ name: String, with value: String?) -> StreamFields {
        var pairs = base.filter { $0.0 != name }
        if let value { pairs.append((name, value)) }
        return StreamFields(pairs)
    }

    @Test(arguments: [
        (replacing("model", with: nil), RecordError(.missingField, field: "model")),
        (replacing("input", with: nil), RecordError(.missingField, field: "input")),
        (replacing("v", with: "2"), RecordError(.unknownVersion, field: "v")),
        (replacing("ts", with: "yesterday"), RecordError(.invalidNumber, field: "ts")),
        (replacing("ts", with: "-5"), RecordError(.outOfRange, field: "ts")),
        (replacing("ts", with: "99999999999999999999"), RecordError(.outOfRange, field: "ts")),
        (replacing("input", with: #"{"a":1"#), RecordError(.invalidJSON, field: "input")),
        (replacing("input", with: "[1,2]"), RecordError(.notAnObject, field: "input")),
        (replacing("input", with: #"{"a":"\u0000"}"#), RecordError(.invalidJSON, field: "input")),
        (replacing("model", with: "a\u{0}b"), RecordError(.nulByte, field: "model")),
        (replacing("model", with: String(repeating: "m", count: 2000)), RecordError(.fieldTooLarge, field: "model")),
        (replacing("source_ip", with: "300.1.1.1"), RecordError(.invalidIPAddress, field: "source_ip")),
        (replacing("meta", with: "\"text\""), RecordError(.notAnObject, field: "meta")),
        (StreamFields(), RecordError(.emptyEntry)),
        (StreamFields([("unrelated", "x")]), RecordError(.missingField, field: "v")),
        (StreamFields(base + [("model", "again")]), RecordError(.duplicateField, field: "model")),
    ])
    func refusesBadTrainingEntries(fields: StreamFields, expected: RecordError) {
        #expect(throws: expected) { try decoder.decodeTraining(fields) }
    }

    @Test func refusesInvalidUTF8() {
        var fields = StreamFields(Self.base.filter { $0.0 != "request_id" })
        fields.append(name: Array("request_id".utf8), value: [0x72, 0xFF, 0x65])
        #expect(throws: RecordError(.invalidUTF8, field: "request_id")) { try decoder.decodeTraining(fields) }
        var json = StreamFields(Self.base.filter { $0.0 != "input" })
        json.append(name: Array("input".utf8), value: Array(#"{"k":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8))
        #expect(throws: RecordError(.invalidUTF8, field: "input")) { try decoder.decodeTraining(json) }
    }

    @Test func refusesOversizedEntries() {
        let small = WireDecoder(maximumEntryBytes: 1024)
        let fields = Self.replacing("input", with: #"{"blob":""# + String(repeating: "x", count: 2000) + #""}"#)
        #expect(throws: RecordError(.entryTooLarge)) { try small.decodeTraining(fields) }
    }

    @Test(arguments: [
        ("confidence", "high", RecordError(.invalidNumber, field: "confidence")),
        ("confidence", "nan", RecordError(.invalidNumber, field: "confidence")),
        ("confidence", "0x1p3", RecordError(.invalidNumber, field: "confidence")),
        ("confidence", "1e999", RecordError(.outOfRange, field: "confidence")),
        ("is_anomaly", "maybe", RecordError(.invalidBoolean, field: "is_anomaly")),
        ("processing_ms", "3000000000", RecordError(.outOfRange, field: "processing_ms")),
        ("processing_ms", "-1", RecordError(.outOfRange, field: "processing_ms")),
        ("prediction", "{oops", RecordError(.invalidJSON, field: "prediction")),
    ])
    func refusesBadInferenceValues(name: String, value: String, expected: RecordError) {
        var pairs: [(String, String)] = [("v", "1"), ("model", "m"), ("request_id", "r"), ("ts", "1"), ("prediction", "1")]
        pairs.removeAll { $0.0 == name }
        pairs.append((name, value))
        #expect(throws: expected) { try decoder.decodeInference(StreamFields(pairs)) }
    }

    /// PostgreSQL 15's float8 input (checked with psql) refuses a nonzero decimal that rounds to 0 as
    /// it refuses one past the largest double (22003, "out of range for type double precision"), and
    /// takes a subnormal and a zero however it is spelled: the decoder draws the same lines.
    static let decimalsAtTheEdges: [(String, Double?)] = [
        ("1e-400", nil), ("-1e-400", nil), ("2e-324", nil), ("2.4703282292062327e-324", nil), ("0.00001e-320", nil),
        ("1e400", nil), ("-1e400", nil),
        // Subnormal literals would draw a compiler warning.
        ("1e-310", Double("1e-310")), ("5e-324", .leastNonzeroMagnitude), ("3e-324", .leastNonzeroMagnitude),
        ("2.4703282292062328e-324", .leastNonzeroMagnitude),
        ("0e-400", 0), ("0.000", 0), ("-0e-999", -0.0), ("0.0000000000e-500", 0), ("00000e5", 0),
    ]

    @Test(arguments: decimalsAtTheEdges)
    func takesTheDecimalsPostgreSQLsFloat8TakesAndRefusesTheOthers(text: String, stored: Double?) throws {
        for name in ["confidence", "anomaly_score"] {
            let fields = StreamFields([("v", "1"), ("model", "m"), ("request_id", "r"), ("ts", "1"), ("prediction", "1"), (name, text)])
            if let stored {
                let record = try decoder.decodeInference(fields)
                let value = name == "confidence" ? record.confidence : record.anomalyScore
                #expect(value?.bitPattern == stored.bitPattern, "\(name)=\(text)")
            } else {
                #expect(throws: RecordError(.outOfRange, field: name), "\(name)=\(text)") { try decoder.decodeInference(fields) }
            }
        }
    }
}

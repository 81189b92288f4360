/// Turns stream entries back into records, refusing anything PostgreSQL would refuse, so that a
/// record that decodes is a row that inserts.
public struct WireDecoder: Sendable {
    /// Entries whose names and values add up to more than this are refused (`entry_too_large`).
    public var maximumEntryBytes: Int
    /// Plain text fields (model, request id) longer than this are refused (`field_too_large`).
    public var maximumTextFieldBytes: Int

    /// The name a refused entry id has in a dead-letter reason (`out_of_range: entry_id`).
    public static let entryIDName = "entry_id"

    public init(maximumEntryBytes: Int = 1 << 20, maximumTextFieldBytes: Int = 1024) {
        self.maximumEntryBytes = maximumEntryBytes
        self.maximumTextFieldBytes = maximumTextFieldBytes
    }

    public func decode(_ entry: StreamEntry, as kind: RecordKind) throws(RecordError) -> TelemetryRecord {
        // The id becomes enqueued_at: one whose time PostgreSQL cannot hold is refused like a bad field.
        guard entry.id.isStorable else { throw RecordError(.outOfRange, field: Self.entryIDName) }
        return switch kind {
        case .training: .training(try decodeTraining(entry.fields))
        case .inference: .inference(try decodeInference(entry.fields))
        }
    }

    public func decodeTraining(_ fields: StreamFields) throws(RecordError) -> TrainingRecord {
        var common = CommonFields()
        var input: JSONText?
        var sourceIP: IPAddress?
        try scan(fields, into: &common) { (field, value) throws(RecordError) in
            let name = field.rawValue
            switch field {
            case .input:
                guard input == nil else { throw RecordError(.duplicateField, field: name) }
                let json = try JSONText(validating: value, field: name)
                guard json.kind == .object else { throw RecordError(.notAnObject, field: name) }
                input = json
            case .sourceIP:
                guard sourceIP == nil else { throw RecordError(.duplicateField, field: name) }
                let text = try self.text(value, field: name)
                guard let address = IPAddress(text) else { throw RecordError(.invalidIPAddress, field: name) }
                sourceIP = address
            default:
                return false
            }
            return true
        }
        let required = try common.required()
        guard let input else { throw RecordError(.missingField, field: WireFormat.FieldName.input) }
        return TrainingRecord(
            model: required.model, requestID: required.requestID, eventTime: required.eventTime,
            input: input, metadata: try common.mergedMetadata(), sourceIP: sourceIP
        )
    }

    public func decodeInference(_ fields: StreamFields) throws(RecordError) -> InferenceRecord {
        var common = CommonFields()
        var prediction: JSONText?
        var confidence: Double?
        var anomalyScore: Double?
        var isAnomaly: Bool?
        var processingTime: Duration?
        try scan(fields, into: &common) { (field, value) throws(RecordError) in
            let name = field.rawValue
            switch field {
            case .prediction:
                guard prediction == nil else { throw RecordError(.duplicateField, field: name) }
                prediction = try JSONText(validating: value, field: name)
            case .confidence:
                guard confidence == nil else { throw RecordError(.duplicateField, field: name) }
                confidence = try double(value, field: name)
            case .anomalyScore:
                guard anomalyScore == nil else { throw RecordError(.duplicateField, field: name) }
                anomalyScore = try double(value, field: name)
            case .isAnomaly:
                guard isAnomaly == nil else { throw RecordError(.duplicateField, field: name) }
                isAnomaly = try boolean(value, field: name)
            case .processingMilliseconds:
                guard processingTime == nil else { throw RecordError(.duplicateField, field: name) }
                let milliseconds = try integer(value, field: name)
                guard let fitsInt4 = Int32(exactly: milliseconds), fitsInt4 >= 0 else {
                    throw RecordError(.outOfRange, field: name)
                }
                processingTime = .milliseconds(fitsInt4)
            default:
                return false
            }
            return true
        }
        let required = try common.required()
        guard let prediction else { throw RecordError(.missingField, field: WireFormat.FieldName.prediction) }
        return InferenceRecord(
            model: required.model, requestID: required.requestID, eventTime: required.eventTime,
            prediction: prediction, confidence: confidence, anomalyScore: anomalyScore, isAnomaly: isAnomaly,
            processingTime: processingTime, metadata: try common.mergedMetadata()
        )
    }

    /// Fields every record has, plus what the format does not know (kept, never dropped).
    private struct CommonFields {
        var version: Bool = false
        var model: String?
        var requestID: String?
        var eventTime: Timestamp?
        var metadata: JSONText?
        var extras: [(String, ArraySlice<UInt8>)] = []

        func required() throws(RecordError) -> (model: String, requestID: String, eventTime: Timestamp) {
            guard version else { throw RecordError(.missingField, field: WireFormat.FieldName.version) }
            guard let model else { throw RecordError(.missingField, field: WireFormat.FieldName.model) }
            guard let requestID else { throw RecordError(.missingField, field: WireFormat.FieldName.requestID) }
            guard let eventTime else { throw RecordError(.missingField, field: WireFormat.FieldName.eventTime) }
            return (model, requestID, eventTime)
        }

        /// The `meta` object with unknown fields added under ``WireFormat/extraFieldsKey``.
        func mergedMetadata() throws(RecordError) -> JSONText? {
            guard !extras.isEmpty else { return metadata }
            var merged: [UInt8] = [UInt8(ascii: "{")]
            JSONValue.writeString(WireFormat.extraFieldsKey, into: &merged)
            merged.append(contentsOf: ":{".utf8)
            for (index, (name, value)) in extras.enumerated() {
                if index > 0 { merged.append(UInt8(ascii: ",")) }
                JSONValue.writeString(name, into: &merged)
                merged.append(UInt8(ascii: ":"))
                JSONValue.writeString(utf8: value, into: &merged)
            }
            merged.append(UInt8(ascii: "}"))
            if let metadata {
                // `metadata` is a validated object: splice its members after ours.
                let body = metadata.utf8.drop { $0 != UInt8(ascii: "{") }.dropFirst()
                let isEmpty = body.allSatisfy { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 || $0 == UInt8(ascii: "}") }
                if isEmpty {
                    merged.append(UInt8(ascii: "}"))
                } else {
                    merged.append(UInt8(ascii: ","))
                    merged.append(contentsOf: body)
                }
            } else {
                merged.append(UInt8(ascii: "}"))
            }
            return try JSONText(validating: merged[...], field: WireFormat.FieldName.metadata)
        }
    }

    /// The field names of wire format v1, matched on bytes so that recognising a field makes no String of its name.
    enum KnownField: String, CaseIterable {
        case version = "v", model, requestID = "request_id", eventTime = "ts", input, metadata = "meta"
        case sourceIP = "source_ip", prediction, confidence, anomalyScore = "anomaly_score", isAnomaly = "is_anomaly"
        case processingMilliseconds = "processing_ms"
        case origin

        private static let table: [(bytes: [UInt8], field: KnownField)] = allCases.map { (Array($0.rawValue.utf8), $0) }

        init?(_ name: ArraySlice<UInt8>) {
            guard let match = Self.table.first(where: { $0.bytes.count == name.count && $0.bytes.elementsEqual(name) }) else {
                return nil
            }
            self = match.field
        }
    }

    /// Walks the fields once: common ones here, kind-specific ones in `specific` (which returns
    /// false for a field it does not take), the rest into extras.
    private func scan(
        _ fields: StreamFields, into common: inout CommonFields,
        specific: (KnownField, ArraySlice<UInt8>) throws(RecordError) -> Bool
    ) throws(RecordError) {
        guard !fields.isEmpty else { throw RecordError(.emptyEntry) }
        guard fields.byteCount <= maximumEntryBytes else { throw RecordError(.entryTooLarge) }
        for field in fields {
            let value = field.value
            guard let known = KnownField(field.name) else {
                let name = try text(field.name, field: "field name")
                _ = try text(value, field: name)
                common.extras.append((name, value))
                continue
            }
            let name = known.rawValue
            switch known {
            case .version:
                guard !common.version else { throw RecordError(.duplicateField, field: name) }
                guard value.elementsEqual(WireFormat.version.utf8) else { throw RecordError(.unknownVersion, field: name) }
                common.version = true
            case .model:
                guard common.model == nil else { throw RecordError(.duplicateField, field: name) }
                common.model = try boundedText(value, field: name)
            case .requestID:
                guard common.requestID == nil else { throw RecordError(.duplicateField, field: name) }
                common.requestID = try boundedText(value, field: name)
            case .eventTime:
                guard common.eventTime == nil else { throw RecordError(.duplicateField, field: name) }
                let milliseconds = try integer(value, field: name)
                guard Timestamp.acceptedRange.contains(milliseconds) else { throw RecordError(.outOfRange, field: name) }
                common.eventTime = Timestamp(millisecondsSinceEpoch: milliseconds)
            case .origin:
                // The producer's identity for the entry, read by the producer alone (after a cut
                // pipeline); not part of the row.
                continue
            case .metadata:
                guard common.metadata == nil else { throw RecordError(.duplicateField, field: name) }
                let json = try JSONText(validating: value, field: name)
                guard json.kind == .object else { throw RecordError(.notAnObject, field: name) }
                common.metadata = json
            default:
                if try !specific(known, value) {
                    // A v1 name that belongs to the other record kind: kept like any unknown field.
                    _ = try text(value, field: name)
                    common.extras.append((name, value))
                }
            }
        }
    }

    /// Text PostgreSQL can store: valid UTF-8 without NUL bytes.
    private func text(_ bytes: ArraySlice<UInt8>, field: String) throws(RecordError) -> String {
        try bytes.withUnsafeBufferPointer { (buffer) throws(RecordError) -> String in
            guard !buffer.contains(0) else { throw RecordError(.nulByte, field: field) }
            guard UTF8Validation.isValid(buffer) else { throw RecordError(.invalidUTF8, field: field) }
            return String(decoding: buffer, as: UTF8.self)
        }
    }

    private func boundedText(_ bytes: ArraySlice<UInt8>, field: String) throws(RecordError) -> String {
        guard bytes.count <= maximumTextFieldBytes else { throw RecordError(.fieldTooLarge, field: field) }
        return try text(bytes, field: field)
    }

    private func integer(_ bytes: ArraySlice<UInt8>, field: String) throws(RecordError) -> Int64 {
        guard !bytes.isEmpty, bytes.count <= 20 else { throw RecordError(.invalidNumber, field: field) }
        var value: Int64 = 0
        var negative = false
        for (offset, byte) in bytes.enumerated() {
            if offset == 0 && byte == UInt8(ascii: "-") && bytes.count > 1 {
                negative = true
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { throw RecordError(.invalidNumber, field: field) }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (plus, overflow2) = times.addingReportingOverflow(Int64(byte - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { throw RecordError(.outOfRange, field: field) }
            value = plus
        }
        return negative ? -value : value
    }

    private func double(_ bytes: ArraySlice<UInt8>, field: String) throws(RecordError) -> Double {
        guard bytes.count <= 64, let value = DecimalText.double(bytes) else {
            throw RecordError(.invalidNumber, field: field)
        }
        // PostgreSQL's float8 input refuses both ends (22003): a decimal past the largest double,
        // and a nonzero one so small it rounds to 0. A subnormal, which keeps some of it, is taken.
        guard value.isFinite, value != 0 || !DecimalText.hasNonzeroDigit(bytes) else {
            throw RecordError(.outOfRange, field: field)
        }
        return value
    }

    private func boolean(_ bytes: ArraySlice<UInt8>, field: String) throws(RecordError) -> Bool {
        switch String(decoding: bytes, as: UTF8.self) {
        case "1", "true": true
        case "0", "false": false
        default: throw RecordError(.invalidBoolean, field: field)
        }
    }
}

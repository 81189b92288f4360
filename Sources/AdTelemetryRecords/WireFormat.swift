/// Where the encoder puts an entry's field/value pairs: the Redis XADD builder, or a test.
public protocol StreamFieldWriter {
    mutating func writeField(_ name: String, _ value: some Collection<UInt8>)
}

extension StreamFieldWriter {
    public mutating func writeField(_ name: WireFormat.FieldName, _ value: some Collection<UInt8>) {
        writeField(name.rawValue, value)
    }
}

/// Wire format version 1 (DESIGN.md §2): flat field/value pairs, JSON only for nested objects, so
/// `redis-cli XRANGE` shows every entry readably.
public enum WireFormat {
    public static let version = "1"

    /// The field names of the format: the one list, which the encoder writes and the decoder
    /// matches (on bytes, through ``init(_:)``).
    public enum FieldName: String, CaseIterable, Sendable {
        case version = "v"
        case model
        case requestID = "request_id"
        case eventTime = "ts"
        case input
        case metadata = "meta"
        case sourceIP = "source_ip"
        case prediction
        case confidence
        case anomalyScore = "anomaly_score"
        case isAnomaly = "is_anomaly"
        case processingMilliseconds = "processing_ms"
        /// `<producer instance, 16 hex digits>-<sequence number>`: the producer's own identity for
        /// the entry, so that after a pipeline cut mid-way it can find which of its records Redis
        /// stored before resending the others. The worker skips it.
        case origin

        /// The name's bytes, as an entry carries them.
        public var utf8: String.UTF8View { rawValue.utf8 }

        private static let table: [(bytes: [UInt8], name: FieldName)] = allCases.map { (Array($0.rawValue.utf8), $0) }

        /// The field an entry's name bytes spell, compared byte by byte; nil for a name the format
        /// does not know.
        public init?(_ bytes: ArraySlice<UInt8>) {
            guard let match = Self.table.first(where: { $0.bytes.count == bytes.count && $0.bytes.elementsEqual(bytes) }) else {
                return nil
            }
            self = match.name
        }
    }

    /// The key under which fields the format does not know are kept inside the metadata object.
    public static let extraFieldsKey = "extra_fields"

    public static func encode(_ record: TrainingRecord, into writer: inout some StreamFieldWriter) {
        writeCommon(model: record.model, requestID: record.requestID, eventTime: record.eventTime, into: &writer)
        writer.writeField(FieldName.input, record.input.utf8)
        if let metadata = record.metadata { writer.writeField(FieldName.metadata, metadata.utf8) }
        if let sourceIP = record.sourceIP { writer.writeField(FieldName.sourceIP, sourceIP.description.utf8) }
    }

    public static func encode(_ record: InferenceRecord, into writer: inout some StreamFieldWriter) {
        writeCommon(model: record.model, requestID: record.requestID, eventTime: record.eventTime, into: &writer)
        writer.writeField(FieldName.prediction, record.prediction.utf8)
        if let confidence = record.confidence { writer.writeField(FieldName.confidence, String(confidence).utf8) }
        if let anomalyScore = record.anomalyScore { writer.writeField(FieldName.anomalyScore, String(anomalyScore).utf8) }
        if let isAnomaly = record.isAnomaly { writer.writeField(FieldName.isAnomaly, (isAnomaly ? "1" : "0").utf8) }
        if let processingTime = record.processingTime {
            writer.writeField(FieldName.processingMilliseconds, String(processingTime.wholeMilliseconds).utf8)
        }
        if let metadata = record.metadata { writer.writeField(FieldName.metadata, metadata.utf8) }
    }

    public static func encode(_ record: TelemetryRecord, into writer: inout some StreamFieldWriter) {
        switch record {
        case .training(let training): encode(training, into: &writer)
        case .inference(let inference): encode(inference, into: &writer)
        }
    }

    private static func writeCommon(
        model: String, requestID: String, eventTime: Timestamp, into writer: inout some StreamFieldWriter
    ) {
        writer.writeField(FieldName.version, version.utf8)
        writer.writeField(FieldName.model, model.utf8)
        writer.writeField(FieldName.requestID, requestID.utf8)
        writer.writeField(FieldName.eventTime, String(eventTime.millisecondsSinceEpoch).utf8)
    }
}

extension Duration {
    /// Whole milliseconds, truncated toward zero.
    public var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// In seconds, as a floating-point number (rates, uptimes).
    public var inSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

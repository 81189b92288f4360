/// Where the encoder puts an entry's field/value pairs: the Redis XADD builder, or a test.
public protocol StreamFieldWriter {
    mutating func writeField(_ name: String, _ value: some Collection<UInt8>)
}

/// Wire format version 1 (DESIGN.md §2): flat field/value pairs, JSON only for nested objects, so
/// `redis-cli XRANGE` shows every entry readably.
public enum WireFormat {
    public static let version = "1"

    // Field names, in one place.
    public enum FieldName {
        public static let version = "v"
        public static let model = "model"
        public static let requestID = "request_id"
        public static let eventTime = "ts"
        public static let input = "input"
        public static let metadata = "meta"
        public static let sourceIP = "source_ip"
        public static let prediction = "prediction"
        public static let confidence = "confidence"
        public static let anomalyScore = "anomaly_score"
        public static let isAnomaly = "is_anomaly"
        public static let processingMilliseconds = "processing_ms"
        /// `<producer instance, 16 hex digits>-<sequence number>`: the producer's own identity for
        /// the entry, so that after a pipeline cut mid-way it can find which of its records Redis
        /// stored before resending the others. The worker skips it.
        public static let origin = "origin"
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

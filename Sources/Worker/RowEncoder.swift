public import Postgres
public import TelemetryRecords

/// Turns decoded records into binary COPY rows for `training_data` and `inference_results`.
///
/// - Important: Every row starts with (stream_id, enqueued_at) taken from the Redis entry id: the
///   table's key, which makes a redelivered entry a duplicate the idempotent path skips.
public enum RowEncoder {
    public static let trainingTarget = CopyTarget(
        table: "training_data",
        columns: ["stream_id", "enqueued_at", "event_time", "model_name", "request_id", "input_data", "metadata", "source_ip"]
    )

    public static let inferenceTarget = CopyTarget(
        table: "inference_results",
        columns: [
            "stream_id", "enqueued_at", "event_time", "model_name", "request_id", "prediction", "confidence",
            "anomaly_score", "is_anomaly", "processing_time_ms", "metadata",
        ]
    )

    public static func target(for kind: RecordKind) -> CopyTarget {
        switch kind {
        case .training: trainingTarget
        case .inference: inferenceTarget
        }
    }

    public static func append(_ record: TelemetryRecord, id: StreamEntryID, to rows: inout BinaryCopyRows) {
        switch record {
        case .training(let training): append(training, id: id, to: &rows)
        case .inference(let inference): append(inference, id: id, to: &rows)
        }
    }

    public static func append(_ record: TrainingRecord, id: StreamEntryID, to rows: inout BinaryCopyRows) {
        rows.beginRow(fieldCount: Int16(trainingTarget.columns.count))
        writeKey(id, to: &rows)
        rows.writeTimestamp(record.eventTime)
        rows.writeText(record.model)
        rows.writeText(record.requestID)
        rows.writeJSONB(record.input)
        if let metadata = record.metadata { rows.writeJSONB(metadata) } else { rows.writeNull() }
        if let sourceIP = record.sourceIP { rows.writeInet(sourceIP) } else { rows.writeNull() }
        rows.endRow()
    }

    public static func append(_ record: InferenceRecord, id: StreamEntryID, to rows: inout BinaryCopyRows) {
        rows.beginRow(fieldCount: Int16(inferenceTarget.columns.count))
        writeKey(id, to: &rows)
        rows.writeTimestamp(record.eventTime)
        rows.writeText(record.model)
        rows.writeText(record.requestID)
        rows.writeJSONB(record.prediction)
        if let confidence = record.confidence { rows.writeFloat8(confidence) } else { rows.writeNull() }
        if let anomalyScore = record.anomalyScore { rows.writeFloat8(anomalyScore) } else { rows.writeNull() }
        if let isAnomaly = record.isAnomaly { rows.writeBool(isAnomaly) } else { rows.writeNull() }
        if let processingTime = record.processingTime {
            rows.writeInt4(Int32(clamping: processingTime.wholeMilliseconds))
        } else {
            rows.writeNull()
        }
        if let metadata = record.metadata { rows.writeJSONB(metadata) } else { rows.writeNull() }
        rows.endRow()
    }

    private static func writeKey(_ id: StreamEntryID, to rows: inout BinaryCopyRows) {
        id.withUTF8 { rows.writeText(ascii: $0) }
        rows.writeTimestamp(id.timestamp)
    }
}

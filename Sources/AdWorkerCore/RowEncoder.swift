public import AdTelemetryRecords
public import AdWorkerPostgres

/// Turns decoded records into binary COPY rows for `training_data` and `inference_results`.
///
/// - Important: Every row starts with (stream_id, enqueued_at, shard): the Redis entry id and the
///   shard of the stream it came from, the table's key, which makes a redelivered entry a
///   duplicate the idempotent path skips (shards number their entries independently).
public enum RowEncoder {
    public static let trainingTarget = CopyTarget(
        table: "training_data",
        columns: ["stream_id", "enqueued_at", "shard", "event_time", "model_name", "request_id", "input_data", "metadata", "source_ip"]
    )

    public static let inferenceTarget = CopyTarget(
        table: "inference_results",
        columns: [
            "stream_id", "enqueued_at", "shard", "event_time", "model_name", "request_id", "prediction", "confidence",
            "anomaly_score", "is_anomaly", "processing_time_ms", "metadata",
        ]
    )

    public static func target(for kind: RecordKind) -> CopyTarget {
        switch kind {
        case .training: trainingTarget
        case .inference: inferenceTarget
        }
    }

    public static func append(_ record: TelemetryRecord, id: StreamEntryID, shard: Int16 = 0, to rows: inout BinaryCopyRows) {
        switch record {
        case .training(let training): append(training, id: id, shard: shard, to: &rows)
        case .inference(let inference): append(inference, id: id, shard: shard, to: &rows)
        }
    }

    public static func append(_ record: TrainingRecord, id: StreamEntryID, shard: Int16 = 0, to rows: inout BinaryCopyRows) {
        rows.beginRow(fieldCount: Int16(trainingTarget.columns.count))
        writeKey(id, shard: shard, to: &rows)
        rows.writeTimestamp(record.eventTime)
        rows.writeText(record.model)
        rows.writeText(record.requestID)
        rows.writeJSONB(record.input)
        if let metadata = record.metadata { rows.writeJSONB(metadata) } else { rows.writeNull() }
        if let sourceIP = record.sourceIP { rows.writeInet(sourceIP) } else { rows.writeNull() }
        rows.endRow()
    }

    public static func append(_ record: InferenceRecord, id: StreamEntryID, shard: Int16 = 0, to rows: inout BinaryCopyRows) {
        rows.beginRow(fieldCount: Int16(inferenceTarget.columns.count))
        writeKey(id, shard: shard, to: &rows)
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

    private static func writeKey(_ id: StreamEntryID, shard: Int16, to rows: inout BinaryCopyRows) {
        id.withUTF8 { rows.writeText(ascii: $0) }
        rows.writeTimestamp(id.timestamp)
        rows.writeInt2(shard)
    }
}

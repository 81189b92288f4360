/// A training record: what a model was asked, for later training.
public struct TrainingRecord: Sendable, Equatable {
    public var model: String
    public var requestID: String
    public var eventTime: Timestamp
    /// Input features; always a JSON object.
    public var input: JSONText
    /// Free-form metadata (api_version, …); a JSON object when present.
    public var metadata: JSONText?
    public var sourceIP: IPAddress?

    public init(
        model: String, requestID: String, eventTime: Timestamp = .now(), input: JSONText,
        metadata: JSONText? = nil, sourceIP: IPAddress? = nil
    ) {
        self.model = model
        self.requestID = requestID
        self.eventTime = eventTime
        self.input = input
        self.metadata = metadata
        self.sourceIP = sourceIP
    }
}

/// An inference record: what a model answered and how it judged the request.
public struct InferenceRecord: Sendable, Equatable {
    public var model: String
    public var requestID: String
    public var eventTime: Timestamp
    /// The prediction; any JSON value.
    public var prediction: JSONText
    public var confidence: Double?
    public var anomalyScore: Double?
    public var isAnomaly: Bool?
    /// Whole milliseconds on the wire and in PostgreSQL (`int4`).
    public var processingTime: Duration?
    public var metadata: JSONText?

    public init(
        model: String, requestID: String, eventTime: Timestamp = .now(), prediction: JSONText,
        confidence: Double? = nil, anomalyScore: Double? = nil, isAnomaly: Bool? = nil,
        processingTime: Duration? = nil, metadata: JSONText? = nil
    ) {
        self.model = model
        self.requestID = requestID
        self.eventTime = eventTime
        self.prediction = prediction
        self.confidence = confidence
        self.anomalyScore = anomalyScore
        self.isAnomaly = isAnomaly
        self.processingTime = processingTime
        self.metadata = metadata
    }
}

/// Which of the two record kinds a stream carries.
public enum RecordKind: String, Sendable, CaseIterable {
    case training
    case inference
}

/// Either kind of record, as one stream entry decodes to.
public enum TelemetryRecord: Sendable, Equatable {
    case training(TrainingRecord)
    case inference(InferenceRecord)
}

/// Realistic ad-serving telemetry for load generation, benchmarks and tests: fraud and CTR
/// models, user ids, transaction amounts, feature vectors, predictions with confidence and
/// anomaly scores. Deterministic for a given seed.
public struct SyntheticTelemetry: Sendable {
    public static let models = ["fraud_detection", "ctr_prediction", "bid_optimizer", "audience_segmentation"]
    private var generator: SplitMix64

    public init(seed: UInt64 = 42) {
        generator = SplitMix64(seed: seed)
    }

    /// A training and an inference record for the same request, as an API service would send them.
    public mutating func request(number: Int, at time: Timestamp = .now()) -> (TrainingRecord, InferenceRecord) {
        let model = Self.models[Int(generator.next() % UInt64(Self.models.count))]
        let requestID = "req-\(number)-\(generator.next() % 1_000_000)"
        return (
            training(model: model, requestID: requestID, at: time),
            inference(model: model, requestID: requestID, at: time)
        )
    }

    public mutating func training(model: String, requestID: String, at time: Timestamp = .now()) -> TrainingRecord {
        let amount = Double(generator.next() % 100_000) / 100
        let features: [JSONValue] = (0..<4).map { _ in .double(unit()) }
        let input: JSONValue = [
            "user_id": .string("u-\(generator.next() % 100_000)"),
            "transaction_amount": .double(amount),
            "merchant_category": .string(["retail", "travel", "gaming", "food"][Int(generator.next() % 4)]),
            "features": .array(features),
        ]
        let octets = (0..<3).map { _ in String(generator.next() % 256) }.joined(separator: ".")
        return TrainingRecord(
            model: model, requestID: requestID, eventTime: time, input: JSONText(input),
            metadata: JSONText(["api_version": "v1", "region": "eu-west-1"]), sourceIP: IPAddress("10.\(octets)")
        )
    }

    public mutating func inference(model: String, requestID: String, at time: Timestamp = .now()) -> InferenceRecord {
        let probability = unit()
        let anomalyScore = unit()
        return InferenceRecord(
            model: model, requestID: requestID, eventTime: time,
            prediction: JSONText(["label": .string(probability > 0.5 ? "fraud" : "legit"), "probability": .double(probability)]),
            confidence: 0.5 + unit() / 2, anomalyScore: anomalyScore, isAnomaly: anomalyScore > 0.95,
            processingTime: .milliseconds(Int(generator.next() % 120) + 1),
            metadata: JSONText(["api_version": "v1"])
        )
    }

    private mutating func unit() -> Double {
        // Three decimals keep the JSON short and the values exact through text.
        Double(generator.next() % 1000) / 1000
    }
}

/// A small fast deterministic generator (Steele, Lea, Flood 2014).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

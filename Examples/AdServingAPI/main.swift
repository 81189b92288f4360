// An ad-serving API as it would use the producer library: every POST /predict answers with a
// prediction and hands its training and inference records to the producer without waiting for
// Redis. Redis slow, hung or down costs the request nothing; what could not be sent shows in
// /metrics (adtelemetry_*) and the log.
//
//   swift run AdServingExample            # EXAMPLE_HTTP=127.0.0.1:8080, REDIS_HOST, REDIS_PORT, ...
//                                         # EXAMPLE_SPOOL_DIR, EXAMPLE_MAX_BUFFERED (records in memory)
//   curl -d '{"model":"ctr-v3","features":{"slot":3,"bid":0.42}}' localhost:8080/predict
import AdTelemetry
import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import UnixSignals

let environment = ProcessInfo.processInfo.environment
var logger = Logger(label: "ad-serving-example")
logger.logLevel = .info

let registry = PrometheusCollectorRegistry()
MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

var configuration = TelemetryProducerConfiguration(
    redis: RedisConfiguration(
        host: environment["REDIS_HOST"] ?? "127.0.0.1", port: Int(environment["REDIS_PORT"] ?? "") ?? 6379,
        username: environment["REDIS_USERNAME"], password: environment["REDIS_PASSWORD"]
    ),
    streamPrefix: environment["ADWORKER_STREAM_PREFIX"] ?? "adserving:"
)
// Records Redis cannot take (past the memory buffer, or still unsent at shutdown) wait on disk.
configuration.spoolDirectory = environment["EXAMPLE_SPOOL_DIR"]
if let limit = environment["EXAMPLE_MAX_BUFFERED"].flatMap(Int.init) { configuration.maximumBufferedRecords = limit }
let producer = TelemetryProducer(configuration: configuration, logger: logger)

struct PredictionRequest: Decodable {
    var model: String
    var requestID: String?

    enum CodingKeys: String, CodingKey {
        case model
        case requestID = "request_id"
    }
}

let router = Router()
router.post("/predict") { request, context -> Response in
    let started = ContinuousClock.now
    let body = try await request.body.collect(upTo: 64 * 1024)
    let bytes = Data(body.readableBytesView)
    let parsed = try JSONDecoder().decode(PredictionRequest.self, from: bytes)
    // The features go to the training record exactly as the client sent them.
    let object = (try JSONSerialization.jsonObject(with: bytes)) as? [String: Any]
    let featureData = try JSONSerialization.data(withJSONObject: object?["features"] ?? [String: Any](), options: [.sortedKeys])
    let features = try JSONText(validating: ArraySlice(featureData), field: "features")
    let requestID = parsed.requestID ?? UUID().uuidString

    // A stand-in for the model: a score derived from the request id.
    let score = Double(abs(requestID.hashValue % 1000)) / 1000
    let training = TrainingRecord(model: parsed.model, requestID: requestID, input: features)
    let inference = InferenceRecord(
        model: parsed.model, requestID: requestID, prediction: JSONText(.double(score)), confidence: 0.5 + score / 2,
        anomalyScore: 1 - score, isAnomaly: score > 0.98, processingTime: started.duration(to: .now)
    )
    var telemetry = "queued"
    do {
        try await producer.submit(training: training, inference: inference)
    } catch {
        telemetry = "dropped: \(error)"
    }
    let answer = try JSONSerialization.data(
        withJSONObject: ["request_id": requestID, "prediction": score, "telemetry": telemetry], options: [.sortedKeys]
    )
    return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer)))
}
router.get("/metrics") { _, _ in
    Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
}

let address = environment["EXAMPLE_HTTP"] ?? "127.0.0.1:8080"
guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
    logger.critical("EXAMPLE_HTTP must be HOST:PORT, not '\(address)'")
    exit(1)
}
let app = Application(router: router, configuration: .init(address: .hostname(String(address[..<colon]), port: port)), logger: logger)
// Either service failing (the spool refused, the port taken) stops the other gracefully:
// cancelled, Hummingbird would log errors of its own beside the one that matters.
let services = ServiceGroup(
    configuration: .init(
        services: [
            .init(service: producer, failureTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: app, failureTerminationBehavior: .gracefullyShutdownGroup),
        ],
        gracefulShutdownSignals: [.sigterm, .sigint], logger: logger
    )
)
do {
    try await services.run()
} catch {
    // One clear line and a non-zero exit: an error thrown from top-level code would crash with a backtrace.
    logger.critical("cannot run: \(error)")
    exit(1)
}

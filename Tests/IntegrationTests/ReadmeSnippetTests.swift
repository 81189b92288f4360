// The README's producer snippet, run as written: this file imports what the snippet imports and
// nothing of the project but AdTelemetry (and the test support, after the snippet). scripts/check-readme-snippet.sh checks that the lines
// between the markers are the README's block.
import AdTelemetry
import AdWorkerTestSupport
import Logging
import ServiceLifecycle
import Testing

@Suite("The README's producer snippet", .timeLimit(.minutes(1)))
struct ReadmeSnippetTests {
    @Test func snippetSendsARequestsRecords() async throws {
        // README snippet begins
        let logger = Logger(label: "ad-api")
        let producer = TelemetryProducer(
            configuration: TelemetryProducerConfiguration(redis: RedisConfiguration(host: "127.0.0.1")),
            logger: logger
        )
        // Run it in the service's ServiceGroup; graceful shutdown sends what is buffered.
        let services = ServiceGroup(services: [producer], logger: logger)
        let running = Task { try await services.run() }

        let training = TrainingRecord(model: "ctr-v3", requestID: "r-1", input: JSONText(["bid": 0.42, "slot": "top"]))
        let inference = InferenceRecord(
            model: "ctr-v3", requestID: "r-1", prediction: JSONText(0.87), confidence: 0.93, processingTime: .milliseconds(4)
        )
        // send returns once Redis stored both; submit(training:inference:) returns at once.
        let (trainingID, inferenceID) = try await producer.send(training: training, inference: inference)

        await services.triggerGracefulShutdown()
        try await running.value
        // README snippet ends
        #expect(try await TestServers.removeEntries(["adserving:training": trainingID, "adserving:inference": inferenceID]) == 2)
    }
}

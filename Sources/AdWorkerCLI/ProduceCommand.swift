import AdTelemetry
import AdTelemetryRecords
import AdWorkerRedis
import ArgumentParser
import Foundation
import Logging

struct ProduceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "produce",
        abstract: "Sends synthetic ad-serving telemetry through the producer library (a load generator)."
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "training, inference, or requests (a training and an inference record per request).")
    var stream: String = "requests"

    @Option(help: "Records to send.")
    var count: Int = 10_000

    @Option(help: "Records per second; as fast as possible when omitted.")
    var rate: Int?

    @Option(help: "Stream name prefix (env ADWORKER_STREAM_PREFIX; default 'adserving:').")
    var streamPrefix: String?

    @Option(help: "Seconds a record Redis certainly did not store (refused connection, LOADING, OOM, CLUSTERDOWN) is retried before it counts as failed.")
    var maxRetrySeconds: Double = 300

    @Option(help: "Seed for the synthetic data.")
    var seed: UInt64 = 42

    func validate() throws {
        guard LoadGenerator.Mix(rawValue: stream) != nil else {
            throw ValidationError("--stream must be one of \(LoadGenerator.Mix.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard count > 0 else { throw ValidationError("--count must be positive") }
        if let rate, rate <= 0 { throw ValidationError("--rate must be positive") }
        guard maxRetrySeconds >= 0 else { throw ValidationError("--max-retry-seconds must not be negative") }
    }

    func run() async throws {
        let settings = try connection.settings()
        let logger = try connection.bootstrap(settings, label: "adworker.produce")
        let mix = LoadGenerator.Mix(rawValue: stream)!
        let redis = try connection.redis(settings)
        var configuration = TelemetryProducerConfiguration(
            redis: redis, streamPrefix: streamPrefix ?? settings.string("ADWORKER_STREAM_PREFIX") ?? "adserving:"
        )
        configuration.maximumRetryDuration = .milliseconds(Int64(maxRetrySeconds * 1000))
        configuration.shards = try connection.layout(settings, prefix: configuration.streamPrefix, redis: redis).count
        let producer = TelemetryProducer(configuration: configuration, logger: logger)
        let result = try await LoadGenerator.withRunningProducer(producer, logger: logger) {
            if let rate {
                return try await LoadGenerator.sendPaced(mix, count: count, rate: rate, seed: seed, through: producer)
            }
            return await LoadGenerator.sendAll(LoadGenerator.records(mix, count: count, seed: seed), through: producer)
        }
        print("sent \(result.sent) records (\(result.failed) failed) in \(String(format: "%.2f", result.elapsed.inSeconds)) s: \(Int(result.ratePerSecond)) records/s")
        for (reason, failure) in result.failures.sorted(by: { $0.value.count > $1.value.count }) {
            print("  \(failure.count) failed: \(reason), e.g. \(failure.example)")
        }
        if result.failed > 0 { throw ExitCode(1) }
    }
}

import AdTelemetry
import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import ArgumentParser
import Foundation
import Logging

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measures raw COPY, producer, end-to-end drain and latency against the configured servers in one run.",
        discussion: """
            Uses its own schema (adworker_bench) and streams (adworker-bench:*), removed afterwards, \
            so it never touches live data. Compare the drain rate with the raw COPY rate of the same \
            run: the ratio holds on a noisy machine where absolute figures do not. Each latency run \
            also shows where its slowest 1 % of entries spent their time, and every run its CPU per \
            row in this process, in every redis-server and every postgres on this machine (from \
            /proc), with the machine's busy share: which resource a figure is bound by. On a Redis \
            Cluster (REDIS_CLUSTER_NODES), every round also runs the producer and the drain against \
            the single Redis at REDIS_HOST:REDIS_PORT, and the report gives cluster / single-node \
            ratios.
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var worker: WorkerOptions

    @Option(help: "Records for the COPY, producer and drain runs.")
    var count: Int = 200_000

    @Option(help: "Record kind: training or inference.")
    var kind: String = "inference"

    @Option(help: "Comma-separated rates (records per second) of the latency runs, one after another.")
    var latencyRates: String = "5000,20000,50000"

    @Option(help: "Seconds each latency run produces for.")
    var latencySeconds: Int = 5

    @Option(help: ArgumentHelp(
        "Milliseconds of records each send of the latency runs carries (1-1000).",
        discussion: "1 (the default) is how Redis sees a fleet of API services, each producer pipelining what came in while its last pipeline was out; 20 sends bursts of 400 records at 20k/s, and the last of each burst waits behind the first's COPY."
    ))
    var latencyBurstMs: Int = 1

    @Option(help: "Rounds of raw COPY, XADD ceiling, producer and drain; the table shows their medians.")
    var rounds: Int = 3

    @Option(help: ArgumentHelp(
        "With Redis over TLS: the same server's plaintext port, to measure what TLS costs.",
        discussion: "Every round then also runs raw COPY, the XADD ceiling, the producer and the drain through the plaintext port, and every latency run too; the report puts the two side by side with TLS / plaintext ratios."
    ))
    var plaintextPort: Int?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Option(help: "Directory of NNN_name.sql files (default as for migrate).")
    var schemaDir: String?

    var rates: [Int] { latencyRates.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) ?? 0 } }

    static let schema = "adworker_bench"
    static let streamPrefix = "adworker-bench:"

    func validate() throws {
        guard RecordKind(rawValue: kind) != nil else { throw ValidationError("--kind must be training or inference") }
        guard (1...1000).contains(latencyBurstMs) else { throw ValidationError("--latency-burst-ms must be 1 to 1000, not \(latencyBurstMs)") }
        guard count > 0, latencySeconds > 0, rounds > 0 else {
            throw ValidationError("counts, seconds and rounds must be positive")
        }
        guard !rates.isEmpty, rates.allSatisfy({ $0 > 0 }) else {
            throw ValidationError("--latency-rates must be positive whole numbers separated by commas, not '\(latencyRates)'")
        }
    }

    func run() async throws {
        let settings = try connection.settings()
        let logger = try connection.bootstrap(settings, label: "adworker.bench")
        let kind = RecordKind(rawValue: kind)!
        var configuration = try worker.workerConfiguration(settings, connection: connection, drain: true)
        configuration.kinds = [kind]
        configuration.streamPrefix = Self.streamPrefix
        configuration.group = "adworker-bench"
        configuration.consumerPrefix = "bench"
        configuration.postgres.searchPath = Self.schema
        let loadBefore = Self.loadAverage()

        let migrations = try Migration.load(from: try MigrateCommand.schemaDirectory(schemaDir ?? settings.string("ADWORKER_SCHEMA_DIR")))
        try await PostgresConnection.withConnection(configuration.postgres, logger: logger) { postgres in
            try await postgres.execute("DROP SCHEMA IF EXISTS \(Self.schema) CASCADE; CREATE SCHEMA \(Self.schema)")
            _ = try await postgres.migrate(migrations)
            // On Citus with worker nodes, the bench's tables are distributed as migrate makes the real ones.
            let citus = try await postgres.query("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')").first?.first == "t"
            let workers = citus
                ? try await postgres.query(CitusSetup.workerNodesQuery).first?.first
                : nil
            if let workers, workers != "0" {
                log("distributing the bench tables over \(workers ?? "?") Citus worker nodes")
                for table in MigrateCommand.tables { try await postgres.execute(CitusSetup.conversion(of: table)) }
            }
        }
        defer { logger.debug("bench finished") }

        log("preparing \(count) \(kind.rawValue) records")
        let records = LoadGenerator.records(kind == .training ? .training : .inference, count: count, seed: 7)
        let comparison = try comparison(to: configuration, settings: settings)
        let (measured, comparisonRounds) = try await measureRounds(records, kind: kind, configuration: configuration, comparison: comparison, logger: logger)
        let appendOnly = try await RedisConnection.withConnection(configuration.redis, logger: logger) { redis in
            try await Self.appendOnlySetting(redis)
        }
        let latency = try await measureLatencies(configuration: configuration, kind: kind, logger: logger)
        let plaintextLatency = comparison?.kind == .plaintext
            ? try await measureLatencies(configuration: comparison!.configuration, kind: kind, logger: logger) : []
        _ = try await PostgresConnection.withConnection(configuration.postgres, logger: logger) { postgres in
            try await postgres.execute("DROP SCHEMA IF EXISTS \(Self.schema) CASCADE")
        }
        try await Self.deleteBenchStreams(configuration, kind: kind, logger: logger)

        let report = summarize(
            kind: kind, configuration: configuration, rounds: measured, appendOnly: appendOnly, latency: latency,
            comparison: comparison.map { ($0, comparisonRounds, plaintextLatency) }, loadBefore: loadBefore
        )
        if json {
            try printJSON(report)
        } else {
            print(Self.table(report))
        }
    }

    /// What the rounds are measured beside: on a cluster, the single Redis at REDIS_HOST:REDIS_PORT;
    /// over TLS with --plaintext-port, the same server in plaintext.
    struct Comparison {
        enum Kind { case singleNode, plaintext }
        var kind: Kind
        var configuration: WorkerConfiguration
        var label: String { kind == .singleNode ? "on the single node \(configuration.redis.host):\(configuration.redis.port)" : "in plaintext" }
    }

    private func comparison(to configuration: WorkerConfiguration, settings: Settings) throws -> Comparison? {
        var other = configuration
        if let plaintextPort {
            guard configuration.redis.tls != nil, !configuration.redis.isCluster else {
                throw ValidationError("--plaintext-port measures what TLS costs: reach a single Redis over TLS (rediss:// in REDIS_URL, or REDIS_TLS=1)")
            }
            other.redis.tls = nil
            other.redis.port = plaintextPort
            return Comparison(kind: .plaintext, configuration: other)
        }
        guard configuration.redis.isCluster else { return nil }
        other.redis = try connection.singleNodeRedis(settings)
        other.shards = 1
        return Comparison(kind: .singleNode, configuration: other)
    }

    /// Every stream the bench writes: the worker's, its dead letters, the XADD ceiling's.
    static func benchStreams(_ stream: String) -> [String] {
        [stream, DeadLetter.stream(for: stream), ceilingStream(stream)]
    }

    /// Deletes every shard's bench streams, each through a connection to its slot's node.
    static func deleteBenchStreams(_ configuration: WorkerConfiguration, kind: RecordKind, logger: Logger) async throws {
        for stream in configuration.streams(for: kind) {
            _ = try await RedisConnection.withConnection(configuration.redis.routed(by: stream), logger: logger) { redis in
                try await redis.delete(Self.benchStreams(stream))
            }
        }
    }

    /// The producer as the worker expects it: the same prefix, Redis and shards.
    static func producerConfiguration(_ configuration: WorkerConfiguration) -> TelemetryProducerConfiguration {
        var producer = TelemetryProducerConfiguration(redis: configuration.redis, streamPrefix: Self.streamPrefix)
        producer.shards = configuration.shards
        return producer
    }

    static func ceilingStream(_ stream: String) -> String { stream + ":ceiling" }

    static func ratio(_ value: Double, _ ceiling: Double) -> Double {
        (value / ceiling * 1000).rounded() / 1000
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    func log(_ message: String) {
        FileHandle.standardError.write(Data("bench: \(message)\n".utf8))
    }

    static func loadAverage() -> String {
        (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "unknown"
    }
}

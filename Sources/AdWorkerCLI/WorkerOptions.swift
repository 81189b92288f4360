import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import ArgumentParser
import Foundation

/// Options for commands that run the worker pipeline (`run`, and `bench` for its drain and latency runs).
struct WorkerOptions: ParsableArguments {
    @Option(help: "Nodes the sinks write through, host[:port],... (env DATABASE_HOSTS): each sink takes the next, e.g. Citus nodes, which all route rows to their shards; DATABASE_HOST stays the node for start-up checks and probes.")
    var databaseHosts: String?

    @Option(help: "Comma-separated record kinds to consume: training, inference (env ADWORKER_STREAMS; default both).")
    var streams: String?

    @Option(help: "Most entries per COPY: a free sink takes whatever has been read, and batches grow toward this only while every sink is busy (env CONSUMER_BATCH_SIZE; default 5000).")
    var batchSize: Int?

    @Option(help: "Most bytes of entries per COPY, bounding what a consumer holds (env ADWORKER_MAX_BATCH_BYTES; default 4194304).")
    var maxBatchBytes: Int?

    @Option(help: "Linger: wait up to this long for more entries before handing a partial batch to a free sink; 0 hands it over at once (env ADWORKER_MAX_WAIT_MS; default 0).")
    var maxWaitMs: Int?

    @Option(help: "Consumer tasks per stream, each with its own connections (env ADWORKER_CONCURRENCY; default 1).")
    var concurrency: Int?

    @Option(help: "Stream name prefix (env ADWORKER_STREAM_PREFIX; default 'adserving:').")
    var streamPrefix: String?

    @Option(help: "Consumer group (env ADWORKER_GROUP; default adworker).")
    var group: String?

    @Option(help: "Consumer name prefix, stable per host (env ADWORKER_CONSUMER_NAME; default the host name).")
    var consumerName: String?

    @Option(help: "Entries larger than this go to the dead-letter stream (env ADWORKER_MAX_ENTRY_BYTES; default 1048576).")
    var maxEntryBytes: Int?

    @Option(help: "Claim entries pending on any consumer for longer than this many seconds (env ADWORKER_CLAIM_IDLE; default 60).")
    var claimIdle: Double?

    @Option(help: "Dead-letter an entry delivered more often than this (env ADWORKER_MAX_DELIVERIES; default 5).")
    var maxDeliveries: Int?

    @Option(help: "Seconds between trims of acknowledged history (XTRIM MINID); 0 turns trimming off (env ADWORKER_TRIM_INTERVAL; default 60).")
    var trimInterval: Double?

    @Option(help: "Remove consumers idle this many seconds that own no pending entries (env ADWORKER_CONSUMER_EXPIRY; default 3600).")
    var consumerExpiry: Double?

    @Option(help: "Keep at most this many dead letters per stream, the newest, trimmed with the streams; 0: unbounded (env ADWORKER_DEAD_LETTER_LIMIT; default 100000).")
    var deadLetterLimit: Int?

    func workerConfiguration(_ settings: Settings, connection: ConnectionOptions, drain: Bool) throws -> WorkerConfiguration {
        let kindNames = (streams ?? settings.string("ADWORKER_STREAMS") ?? "training,inference")
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let kinds = try kindNames.map { name in
            guard let kind = RecordKind(rawValue: name) else {
                throw ValidationError("unknown stream '\(name)'; expected training or inference")
            }
            return kind
        }
        let batchSize = try batchSize ?? settings.integer("CONSUMER_BATCH_SIZE") ?? WorkerConfiguration.defaultBatchSize
        let maxBatchBytes = try maxBatchBytes ?? settings.integer("ADWORKER_MAX_BATCH_BYTES") ?? WorkerConfiguration.defaultMaximumBatchBytes
        let maxWait = try maxWaitMs ?? settings.integer("ADWORKER_MAX_WAIT_MS") ?? 0
        let concurrency = try concurrency ?? settings.integer("ADWORKER_CONCURRENCY") ?? 1
        let maxEntryBytes = try maxEntryBytes ?? settings.integer("ADWORKER_MAX_ENTRY_BYTES") ?? 1 << 20
        let claimIdle = try claimIdle ?? settings.decimal("ADWORKER_CLAIM_IDLE") ?? 60
        let maxDeliveries = try maxDeliveries ?? settings.integer("ADWORKER_MAX_DELIVERIES") ?? 5
        let trimInterval = try trimInterval ?? settings.decimal("ADWORKER_TRIM_INTERVAL") ?? 60
        let consumerExpiry = try consumerExpiry ?? settings.decimal("ADWORKER_CONSUMER_EXPIRY") ?? 3600
        let deadLetterLimit = try deadLetterLimit ?? settings.integer("ADWORKER_DEAD_LETTER_LIMIT") ?? WorkerConfiguration.defaultDeadLetterLimit
        guard deadLetterLimit >= 0 else { throw ValidationError("dead letter limit must not be negative") }
        guard claimIdle >= 0.1 else { throw ValidationError("claim idle must be at least 0.1 s") }
        guard maxDeliveries >= 1 else { throw ValidationError("max deliveries must be at least 1") }
        guard trimInterval >= 0 else { throw ValidationError("trim interval must not be negative") }
        guard consumerExpiry >= 1 else { throw ValidationError("consumer expiry must be at least 1 s") }
        guard !kinds.isEmpty else { throw ValidationError("--streams names no stream") }
        guard (1...100_000).contains(batchSize) else { throw ValidationError("batch size must be 1...100000, not \(batchSize)") }
        guard maxWait >= 0 else { throw ValidationError("max wait must not be negative") }
        guard maxBatchBytes >= 1024 else { throw ValidationError("max batch bytes must be at least 1024") }
        guard (1...64).contains(concurrency) else { throw ValidationError("concurrency must be 1...64, not \(concurrency)") }
        guard maxEntryBytes >= 1024 else { throw ValidationError("max entry bytes must be at least 1024") }
        let redis = try connection.redis(settings)
        let prefix = streamPrefix ?? settings.string("ADWORKER_STREAM_PREFIX") ?? "adserving:"
        let layout = try connection.layout(settings, prefix: prefix, redis: redis)
        var configuration = WorkerConfiguration(
            kinds: kinds,
            streamPrefix: prefix,
            group: group ?? settings.string("ADWORKER_GROUP") ?? "adworker",
            consumerPrefix: consumerName ?? settings.string("ADWORKER_CONSUMER_NAME") ?? ProcessInfo.processInfo.hostName,
            concurrency: concurrency,
            batchSize: batchSize,
            maximumBatchBytes: maxBatchBytes,
            maximumWait: .milliseconds(maxWait),
            drain: drain,
            maximumEntryBytes: maxEntryBytes,
            claimIdle: .milliseconds(Int64(claimIdle * 1000)),
            maximumDeliveries: maxDeliveries,
            trimInterval: trimInterval > 0 ? .milliseconds(Int64(trimInterval * 1000)) : nil,
            consumerExpiry: .milliseconds(Int64(consumerExpiry * 1000)),
            redis: redis,
            postgres: try connection.postgres(settings)
        )
        configuration.shards = layout.count
        configuration.postgresNodes = try postgresNodes(settings, defaultPort: configuration.postgres.port)
        configuration.deadLetterLimit = deadLetterLimit > 0 ? deadLetterLimit : nil
        return configuration
    }

    private func postgresNodes(_ settings: Settings, defaultPort: Int) throws -> [PostgresNodes.Node] {
        guard let hosts = databaseHosts ?? settings.string("DATABASE_HOSTS") else { return [] }
        do {
            return try PostgresNodes.parse(hosts, defaultPort: defaultPort)
        } catch {
            throw ValidationError(error.message)
        }
    }
}

public import Postgres
public import Redis
public import TelemetryRecords

/// Everything `adworker run` needs; resolved from flags, environment and `.env` by the CLI.
public struct WorkerConfiguration: Sendable {
    /// Which record kinds to consume; each has its own stream and table.
    public var kinds: [RecordKind]
    /// Stream names are `<prefix><kind>`: `adserving:training`, `adserving:inference`.
    public var streamPrefix: String
    public var group: String
    /// Consumer names are `<consumerPrefix>-<slot>`; stable per host so a restarted worker
    /// finds its own pending entries.
    public var consumerPrefix: String
    /// Consumer tasks per stream, each with its own Redis and PostgreSQL connections.
    public var concurrency: Int
    public var batchSize: Int
    /// A partial batch is flushed after its oldest entry has waited this long.
    public var maximumWait: Duration
    /// Process until the streams have no new and no pending entries, then return.
    public var drain: Bool
    public var maximumEntryBytes: Int
    public var redis: RedisConfiguration
    public var postgres: PostgresConfiguration

    public init(
        kinds: [RecordKind] = RecordKind.allCases, streamPrefix: String = "adserving:", group: String = "adworker",
        consumerPrefix: String, concurrency: Int = 1, batchSize: Int = 1000, maximumWait: Duration = .milliseconds(200),
        drain: Bool = false, maximumEntryBytes: Int = 1 << 20, redis: RedisConfiguration, postgres: PostgresConfiguration
    ) {
        self.kinds = kinds
        self.streamPrefix = streamPrefix
        self.group = group
        self.consumerPrefix = consumerPrefix
        self.concurrency = concurrency
        self.batchSize = batchSize
        self.maximumWait = maximumWait
        self.drain = drain
        self.maximumEntryBytes = maximumEntryBytes
        self.redis = redis
        self.postgres = postgres
    }

    public func stream(for kind: RecordKind) -> String { streamPrefix + kind.rawValue }

    /// The longest a single XREADGROUP may block: short, so shutdown is noticed within it.
    static let maximumReadBlock: Duration = .seconds(1)
}

/// What one committed batch did; the worker reports one per batch (for `bench` and metrics).
public struct BatchReport: Sendable {
    public var stream: String
    public var entries: Int
    public var insertedRows: Int
    public var duplicateRows: Int
    public var deadLettered: Int
    public var path: InsertPath
    /// When the batch's rows were committed and its entries acknowledged.
    public var acknowledgedAt: Timestamp
    /// Each entry's Redis id time, for end-to-end latency (`acknowledgedAt` minus this).
    public var enqueuedAt: [Timestamp]
}

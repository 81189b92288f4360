public import AdTelemetryRecords
public import AdWorkerPostgres
public import AdWorkerRedis

/// Everything `adworker run` needs; resolved from flags, environment and `.env` by the CLI.
public struct WorkerConfiguration: Sendable {
    /// Which record kinds to consume; each has its own stream and table.
    public var kinds: [RecordKind]
    /// Stream names are `<prefix><kind>`: `adserving:training`, `adserving:inference` (sharded or
    /// on a Redis Cluster, `<prefix>{<kind>.<shard>…}`: see ``ShardLayout``).
    public var streamPrefix: String
    /// Streams per record kind; every worker process consumes all of them. Producers must use the
    /// same count.
    public var shards: Int = 1
    public var group: String
    /// Consumer names are `<consumerPrefix>-<slot>`; stable per host so a restarted worker
    /// finds its own pending entries.
    public var consumerPrefix: String
    /// Consumer tasks per stream, each with its own Redis connections (PostgreSQL connections come
    /// from the record kind's pool, shared by its shards).
    public var concurrency: Int
    /// Most entries in one COPY. Batches are as large as the backlog: a free sink takes whatever
    /// has been read, and entries accumulate up to this while every sink is busy.
    public var batchSize: Int
    /// Most bytes (entry fields) in one COPY, bounding what a consumer holds.
    public var maximumBatchBytes: Int
    /// How long a partial batch may wait for more entries while a sink is free (a linger); zero
    /// hands it over at once.
    public var maximumWait: Duration
    /// Process until the streams have no new entries (none within ``drainReadBlock``) and no
    /// pending ones, then return.
    public var drain: Bool
    public var maximumEntryBytes: Int
    /// Entries pending on any consumer for longer than this are claimed (XAUTOCLAIM) and processed
    /// by a live one: a consumer that died under another name leaves nothing behind.
    public var claimIdle: Duration
    /// An entry delivered more often than this goes to the dead-letter stream instead of being
    /// tried again (it has been in flight when a worker crashed that many times).
    public var maximumDeliveries: Int
    /// How often acknowledged history is trimmed (XTRIM MINID) and long-idle consumers without
    /// pending entries are removed; nil: never.
    public var trimInterval: Duration?
    /// A consumer idle for longer than this, owning no pending entries, is removed.
    public var consumerExpiry: Duration
    /// Each dead-letter stream keeps at most this many letters (the newest), trimmed with the
    /// streams; nil: unbounded.
    public var deadLetterLimit: Int? = WorkerConfiguration.defaultDeadLetterLimit
    public var redis: RedisConfiguration
    public var postgres: PostgresConfiguration
    /// The nodes the sinks write through (`DATABASE_HOSTS`), spread over them sink by sink; empty:
    /// every sink writes through ``postgres``, which start-up checks and probes always use.
    public var postgresNodes: [PostgresNodes.Node] = []
    /// How long the consumer name's lease lasts without renewal (it is renewed every third of
    /// this): how long a restarted worker waits for a holder that died on another host.
    public var consumerLease: Duration = .seconds(10)

    public init(
        kinds: [RecordKind] = RecordKind.allCases, streamPrefix: String = "adserving:", group: String = "adworker",
        consumerPrefix: String, concurrency: Int = 1, batchSize: Int = WorkerConfiguration.defaultBatchSize,
        maximumBatchBytes: Int = WorkerConfiguration.defaultMaximumBatchBytes, maximumWait: Duration = .zero,
        drain: Bool = false, maximumEntryBytes: Int = 1 << 20, claimIdle: Duration = .seconds(60), maximumDeliveries: Int = 5,
        trimInterval: Duration? = .seconds(60), consumerExpiry: Duration = .seconds(3600),
        redis: RedisConfiguration, postgres: PostgresConfiguration
    ) {
        self.kinds = kinds
        self.streamPrefix = streamPrefix
        self.group = group
        self.consumerPrefix = consumerPrefix
        self.concurrency = concurrency
        self.batchSize = batchSize
        self.maximumBatchBytes = maximumBatchBytes
        self.maximumWait = maximumWait
        self.drain = drain
        self.maximumEntryBytes = maximumEntryBytes
        self.claimIdle = claimIdle
        self.maximumDeliveries = maximumDeliveries
        self.trimInterval = trimInterval
        self.consumerExpiry = consumerExpiry
        self.redis = redis
        self.postgres = postgres
    }

    public var layout: ShardLayout { ShardLayout(prefix: streamPrefix, count: shards, tagged: redis.isCluster) }

    /// Every shard's stream of `kind`.
    public func streams(for kind: RecordKind) -> [String] { layout.streams(kind: kind.rawValue) }

    /// Each sharded stream's shard number, for the `shard` metric label; empty when unsharded.
    public var shardNumbers: [String: Int] {
        guard layout.tagged else { return [:] }
        var numbers: [String: Int] = [:]
        for kind in kinds {
            for (shard, stream) in streams(for: kind).enumerated() { numbers[stream] = shard }
        }
        return numbers
    }

    /// Every stream consumed, kind by kind.
    public var allStreams: [String] { kinds.flatMap { streams(for: $0) } }

    public static let defaultBatchSize = 5000
    public static let defaultDeadLetterLimit = 100_000
    public static let defaultMaximumBatchBytes = 4 << 20

    /// The longest a single XREADGROUP may block: short, so shutdown is noticed within it.
    static let maximumReadBlock: Duration = .seconds(1)

    /// Draining, how long a read waits for new entries before the stream counts as drained: a
    /// drain ends within milliseconds of its last commit.
    static let drainReadBlock: Duration = .milliseconds(10)
}

/// What one committed batch did; the worker reports one per batch (for `bench` and metrics).
public struct BatchReport: Sendable {
    public var stream: String
    public var entries: Int
    public var insertedRows: Int
    public var duplicateRows: Int
    public var deadLettered: Int
    public var path: InsertPath
    /// When the batch's rows were committed: end-to-end latency is this minus each entry's id time.
    public var committedAt: Timestamp
    /// When its entries were acknowledged, after the commit.
    public var acknowledgedAt: Timestamp
    /// Each entry's Redis id time, for end-to-end latency (`committedAt` minus this).
    public var enqueuedAt: [Timestamp]
}

public import AdTelemetryRecords
public import AdWorkerRedis

/// How a ``TelemetryProducer`` sends.
public struct TelemetryProducerConfiguration: Sendable {
    public var redis: RedisConfiguration
    /// Stream names are `<prefix>training` and `<prefix>inference`, as the worker reads them.
    public var streamPrefix: String
    /// Records waiting to be sent beyond this are refused with ``TelemetryProducerError/Code/bufferFull``.
    public var maximumBufferedRecords: Int
    /// XADDs sent in one pipelined write.
    public var maximumPipelineLength: Int
    /// How long a record whose XADD certainly did not run (no connection, LOADING, OOM,
    /// CLUSTERDOWN, a moving slot) is held and sent again before it fails; meanwhile it counts
    /// against ``maximumBufferedRecords``.
    public var maximumRetryDuration: Duration = .seconds(300)
    /// After a graceful shutdown began, how long held records are still retried.
    public var shutdownRetryDuration: Duration = .seconds(10)
    /// A directory on local disk for records Redis cannot take: ``TelemetryProducer/submit(_:)``
    /// records past ``maximumBufferedRecords``, those whose XADD failed for want of Redis (at once),
    /// and every new one while Redis is away or the spool holds records, so a crash of the process
    /// loses none of them. They are sent, first and in order, once Redis answers (or on the next
    /// start). Written before `submit` returns, fsynced every second. Nil: no spool; such records
    /// wait in memory, are refused (`bufferFull`) or fail. One producer process per directory.
    public var spoolDirectory: String?
    /// The spool's bound; records past it are refused and counted (`adtelemetry_dropped_total{reason="spool_full"}`).
    public var maximumSpoolBytes: Int = 1 << 30
    /// Streams per record kind, as the workers are configured (`ADWORKER_SHARDS`). A request's
    /// records go to the shard its request id picks, both kinds to the same shard number.
    public var shards: Int = 1

    /// Where each record kind's shards are: tagged names on a cluster or with several shards.
    public var layout: ShardLayout { ShardLayout(prefix: streamPrefix, count: shards, tagged: redis.isCluster) }

    public init(
        redis: RedisConfiguration = RedisConfiguration(), streamPrefix: String = "adserving:",
        maximumBufferedRecords: Int = 100_000, maximumPipelineLength: Int = 8000
    ) {
        self.redis = redis
        self.streamPrefix = streamPrefix
        self.maximumBufferedRecords = maximumBufferedRecords
        self.maximumPipelineLength = maximumPipelineLength
    }
}

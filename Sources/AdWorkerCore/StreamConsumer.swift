import AdTelemetryRecords
import AsyncAlgorithms
import Logging

/// One consumer of one stream: a ``StreamReader`` task that performs what its
/// ``ConsumerStateMachine`` decides, and ``sinkLanes`` ``StreamSink`` tasks that each decode a
/// batch, insert it, write its dead letters and acknowledge it, with connections of their own.
/// They meet only in the machine (``SharedConsumerMachine``): the reader hands a batch over only
/// when a sink is free, so batches are as large as the backlog makes them: small at low load
/// (rows within milliseconds), large under backlog (near one large COPY's rate).
///
/// - Important: Entries are acknowledged only after their rows are committed (or their dead
///   letters written, in the same MULTI as their XACK). A crash at any point leaves them pending,
///   and the restarted consumer, having the same name, reads its pending entries first and
///   inserts them on the idempotent path.
struct StreamConsumer {
    /// Sinks per consumer. A sink waits for its COMMIT (the WAL flush) and then for its XACK; with
    /// a second one, the next batch's COPY runs meanwhile. A third measured no better.
    static let sinkLanes = 2

    let stream: String
    let consumer: String
    let status: WorkerStatus?
    let reader: StreamReader
    let sinks: [StreamSink]

    init(
        kind: RecordKind, shard: Int, stream: String, slot: Int, postgres: [PostgresPool], firstSink: Int,
        configuration: WorkerConfiguration, logger: Logger, status: WorkerStatus?, stageObserver: (any BatchStageObserver)?,
        onBatch: @escaping @Sendable (BatchReport) -> Void
    ) {
        let consumer = "\(configuration.consumerPrefix)-\(slot)"
        self.stream = stream
        self.consumer = consumer
        self.status = status
        var logger = logger
        logger[metadataKey: LogKey.stream] = "\(stream)"
        logger[metadataKey: LogKey.consumer] = "\(consumer)"
        let machine = SharedConsumerMachine(
            SharedConsumerMachine.Machine(configuration: Self.machineConfiguration(configuration), now: ContinuousClock.now)
        )
        // One per task and target: the reader's Redis, and each sink's PostgreSQL and Redis (one
        // lane failing while the other succeeds must not flip a shared circuit open and closed).
        // A sink's circuits are events of the machine: no claims while one is open.
        func breaker(_ target: String, _ role: String, sink: Bool) -> CircuitBreaker {
            CircuitBreaker(
                target: target, role: role,
                onFailure: { status?.recordFailure(stream: stream, target: target, error: $0) },
                onStateChange: { isOpen in
                    status?.circuit(target, role: role, of: consumer, stream: stream, isOpen: isOpen)
                    if sink { machine.circuit(isOpen: isOpen) }
                },
                onPermanentFailure: { status?.permanentFailure("\(target) \(role) of \(stream)/\(consumer)", target: target, $0) }
            )
        }
        self.reader = StreamReader(
            stream: stream, consumer: consumer, configuration: configuration, logger: logger, status: status,
            breaker: breaker("redis", "reader", sink: false), machine: machine, stageObserver: stageObserver
        )
        self.sinks = (1...Self.sinkLanes).map { lane in
            // Sink by sink over the nodes (one pool each): the process's sinks spread evenly.
            let node = (firstSink + lane - 1) % postgres.count
            var logger = logger
            if postgres.count > 1 { logger[metadataKey: LogKey.postgresNode] = "\(configuration.postgresNodes[node])" }
            return StreamSink(
                kind: kind, stream: stream, shard: Int16(shard), consumer: consumer, postgres: postgres[node], configuration: configuration,
                logger: logger, status: status, onBatch: onBatch, postgresBreaker: breaker("postgres", "sink \(lane)", sink: true),
                redisBreaker: breaker("redis", "sink \(lane)", sink: true), machine: machine, stageObserver: stageObserver
            )
        }
    }

    func run() async throws {
        status?.declare(stream: stream)
        status?.consumer(consumer, stream: stream, state: .running)
        defer { status?.consumer(consumer, stream: stream, state: .stopped) }
        let batches = AsyncChannel<EntryBatch>()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { batches.finish() }
                try await reader.run(into: batches)
            }
            for sink in sinks {
                group.addTask { try await sink.run(from: batches) }
            }
            try await group.waitForAll()
        }
    }

    private static func machineConfiguration(_ configuration: WorkerConfiguration) -> SharedConsumerMachine.Machine.Configuration {
        .init(
            maximumEntries: configuration.batchSize, maximumBytes: configuration.maximumBatchBytes, linger: configuration.maximumWait,
            lanes: sinkLanes, claimInterval: min(max(configuration.claimIdle / 2, .milliseconds(100)), .seconds(30)),
            maximumReadBlock: WorkerConfiguration.maximumReadBlock, drain: configuration.drain,
            drainReadBlock: WorkerConfiguration.drainReadBlock, initialEntryBytes: configuration.maximumEntryBytes
        )
    }
}

import AdTelemetry
import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

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

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Option(help: "Directory of NNN_name.sql files (default as for migrate).")
    var schemaDir: String?

    private var rates: [Int] { latencyRates.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) ?? 0 } }

    static let schema = "adworker_bench"
    static let streamPrefix = "adworker-bench:"

    /// One round's figures; the ratios pair figures measured seconds apart.
    struct Round: Encodable {
        var rawCopyRowsPerSecond: Double
        var xaddCeilingEntriesPerSecond: Double
        var producerEntriesPerSecond: Double
        var producerToCeilingRatio: Double
        var drainRowsPerSecond: Double
        var drainToRawCopyRatio: Double
        /// Highest resident memory during the drain above the process's resident memory just
        /// before it: what the worker's buffers, batches and connections took (the bench holds
        /// its own records beside it, so the absolute figure would overstate the worker).
        var drainPeakRSSGrowthBytes: Int
        /// CPU per row during the drain: the worker alone in this process.
        var drainCPU: ProcessCPU.PerRow
    }

    /// A cluster's figures next to one node's, measured in the same rounds (medians).
    struct SingleNodeComparison: Encodable {
        var redis: String
        var producerEntriesPerSecond: Double
        var drainRowsPerSecond: Double
        var clusterToSingleNodeProducerRatio: Double
        var clusterToSingleNodeDrainRatio: Double
    }

    /// End-to-end latency (commit time minus entry id time) at one fixed rate.
    struct Latency: Encodable {
        var rate: Int
        var entries: Int
        var p50Milliseconds: Double
        var p99Milliseconds: Double
        var p999Milliseconds: Double
        var maximumMilliseconds: Double
        /// Where the slowest 1 % of entries (latency at or above p99) spent their time, on average.
        var slowestPercent: LatencyStages
        /// How long a sink stayed busy after a commit, acknowledging (p50, p99 over batches).
        var acknowledgeP50Milliseconds: Double
        var acknowledgeP99Milliseconds: Double
        /// CPU per entry over the run, warm-up included: producer, load generator and worker in
        /// this process, beside Redis and PostgreSQL.
        var cpu: ProcessCPU.PerRow
    }

    /// An entry's end-to-end latency split into its stages, in milliseconds.
    struct LatencyStages: Encodable {
        /// From XADD until the reader had the entry: Redis, the reply's way to the reader, and the
        /// millisecond rounding of the entry id (up to 1 ms).
        var redisToReader: Double = 0
        /// Read, waiting for a free sink.
        var buffered: Double = 0
        /// Handed over, until a sink task ran with it.
        var queued: Double = 0
        /// Decoding and encoding.
        var prepared: Double = 0
        /// COPY and COMMIT.
        var inserted: Double = 0

        static func mean(_ stages: [LatencyStages]) -> LatencyStages {
            guard !stages.isEmpty else { return LatencyStages() }
            let count = Double(stages.count)
            return LatencyStages(
                redisToReader: stages.map(\.redisToReader).reduce(0, +) / count, buffered: stages.map(\.buffered).reduce(0, +) / count,
                queued: stages.map(\.queued).reduce(0, +) / count, prepared: stages.map(\.prepared).reduce(0, +) / count,
                inserted: stages.map(\.inserted).reduce(0, +) / count
            )
        }
    }

    /// One entry's latency and its stages.
    struct LatencySample {
        var milliseconds: Double
        var stages: LatencyStages
    }

    /// Medians over the rounds, and the rounds themselves.
    struct Report: Encodable {
        var kind: String
        var records: Int
        var batchSize: Int
        var concurrency: Int
        var rounds: [Round]
        var rawCopyRowsPerSecond: Double
        var xaddCeilingEntriesPerSecond: Double
        var producerEntriesPerSecond: Double
        var producerToCeilingRatio: Double
        /// Redis's `appendonly` setting ("unknown" when CONFIG is not allowed): AOF on costs
        /// XADD about 40 % of its rate here.
        var redisAppendOnly: String
        /// Milliseconds of records per send in the latency runs (`--latency-burst-ms`).
        var latencyBurstMilliseconds: Int
        var drainRowsPerSecond: Double
        var drainToRawCopyRatio: Double
        var drainPeakRSSGrowthBytes: Int
        /// Each figure the median over the rounds.
        var drainCPU: ProcessCPU.PerRow
        var latency: [Latency]
        /// On a cluster: the same rounds against the single node, and the ratios.
        var singleNode: SingleNodeComparison?
        var loadAverageBefore: String
        var loadAverageAfter: String
    }

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
        var adminPostgres = configuration.postgres
        adminPostgres.searchPath = Self.schema
        configuration.postgres = adminPostgres
        let loadBefore = Self.loadAverage()

        let migrations = try Migration.load(from: try MigrateCommand.schemaDirectory(schemaDir ?? settings.string("ADWORKER_SCHEMA_DIR")))
        try await PostgresConnection.withConnection(adminPostgres, logger: logger) { postgres in
            try await postgres.execute("DROP SCHEMA IF EXISTS \(Self.schema) CASCADE; CREATE SCHEMA \(Self.schema)")
            _ = try await postgres.migrate(migrations)
        }
        defer { logger.debug("bench finished") }

        log("preparing \(count) \(kind.rawValue) records")
        let records = LoadGenerator.records(kind == .training ? .training : .inference, count: count, seed: 7)
        var measured: [Round] = []
        var singleNodeRounds: [Round] = []
        var singleNode = configuration
        singleNode.redis = try connection.singleNodeRedis(settings)
        singleNode.shards = 1
        for number in 1...rounds {
            if configuration.redis.isCluster {
                let single = try await measureRound(records, kind: kind, configuration: singleNode, logger: logger)
                log(String(format: "round %d on the single node %@: producer %.0f entries/s, drain %.0f rows/s", number,
                           "\(singleNode.redis.host):\(singleNode.redis.port)", single.producerEntriesPerSecond, single.drainRowsPerSecond))
                singleNodeRounds.append(single)
            }
            let round = try await measureRound(records, kind: kind, configuration: configuration, logger: logger)
            log(
                String(
                    format: "round %d: raw COPY %.0f rows/s, XADD ceiling %.0f entries/s, producer %.0f entries/s, drain %.0f rows/s (%.3f of raw COPY)",
                    number, round.rawCopyRowsPerSecond, round.xaddCeilingEntriesPerSecond, round.producerEntriesPerSecond,
                    round.drainRowsPerSecond, round.drainToRawCopyRatio
                )
            )
            measured.append(round)
        }
        let appendOnly = try await RedisConnection.withConnection(configuration.redis, logger: logger) { redis in
            try await Self.appendOnlySetting(redis)
        }

        // (d) Latency at fixed rates: commit time minus entry id time, for every entry.
        var latency: [Latency] = []
        for rate in rates {
            let cpuBefore = ProcessCPU.snapshot()
            let (measuredSamples, acknowledgeMilliseconds, sent) = try await measureLatency(rate: rate, configuration: configuration, kind: kind, logger: logger)
            let cpu = ProcessCPU.perRow(from: cpuBefore, to: ProcessCPU.snapshot(), rows: sent)
            let samples = measuredSamples.map(\.milliseconds)
            let p99 = Self.percentile(samples, 0.99)
            latency.append(
                Latency(
                    rate: rate, entries: samples.count, p50Milliseconds: Self.percentile(samples, 0.50),
                    p99Milliseconds: p99, p999Milliseconds: Self.percentile(samples, 0.999),
                    maximumMilliseconds: samples.max() ?? 0,
                    slowestPercent: LatencyStages.mean(measuredSamples.filter { $0.milliseconds >= p99 }.map(\.stages)),
                    acknowledgeP50Milliseconds: Self.percentile(acknowledgeMilliseconds, 0.5),
                    acknowledgeP99Milliseconds: Self.percentile(acknowledgeMilliseconds, 0.99), cpu: cpu
                )
            )
            log(String(format: "latency at %d/s: p50 %.1f ms, p99 %.1f ms, p99.9 %.1f ms", rate, latency.last!.p50Milliseconds,
                       latency.last!.p99Milliseconds, latency.last!.p999Milliseconds))
        }
        _ = try await PostgresConnection.withConnection(adminPostgres, logger: logger) { postgres in
            try await postgres.execute("DROP SCHEMA IF EXISTS \(Self.schema) CASCADE")
        }
        try await Self.deleteBenchStreams(configuration, kind: kind, logger: logger)

        func median(_ figure: (Round) -> Double) -> Double { Self.median(measured.map(figure)) }
        let report = Report(
            kind: kind.rawValue, records: count, batchSize: configuration.batchSize, concurrency: configuration.concurrency,
            rounds: measured,
            rawCopyRowsPerSecond: median(\.rawCopyRowsPerSecond), xaddCeilingEntriesPerSecond: median(\.xaddCeilingEntriesPerSecond),
            producerEntriesPerSecond: median(\.producerEntriesPerSecond), producerToCeilingRatio: median(\.producerToCeilingRatio),
            redisAppendOnly: appendOnly, latencyBurstMilliseconds: latencyBurstMs,
            drainRowsPerSecond: median(\.drainRowsPerSecond), drainToRawCopyRatio: median(\.drainToRawCopyRatio),
            drainPeakRSSGrowthBytes: measured.map(\.drainPeakRSSGrowthBytes).max() ?? 0,
            drainCPU: ProcessCPU.PerRow(
                benchMicroseconds: median(\.drainCPU.benchMicroseconds), redisMicroseconds: median(\.drainCPU.redisMicroseconds),
                postgresMicroseconds: median(\.drainCPU.postgresMicroseconds), machineBusy: median(\.drainCPU.machineBusy),
                cores: ProcessInfo.processInfo.activeProcessorCount
            ),
            latency: latency,
            singleNode: singleNodeRounds.isEmpty ? nil : SingleNodeComparison(
                redis: "\(singleNode.redis.host):\(singleNode.redis.port)",
                producerEntriesPerSecond: Self.median(singleNodeRounds.map(\.producerEntriesPerSecond)),
                drainRowsPerSecond: Self.median(singleNodeRounds.map(\.drainRowsPerSecond)),
                clusterToSingleNodeProducerRatio: Self.median(zip(measured, singleNodeRounds).map { Self.ratio($0.producerEntriesPerSecond, $1.producerEntriesPerSecond) }),
                clusterToSingleNodeDrainRatio: Self.median(zip(measured, singleNodeRounds).map { Self.ratio($0.drainRowsPerSecond, $1.drainRowsPerSecond) })
            ),
            loadAverageBefore: loadBefore, loadAverageAfter: Self.loadAverage()
        )
        if json {
            try printJSON(report)
        } else {
            print(Self.table(report))
        }
    }

    /// (a) raw COPY, (b) XADD ceiling and producer, (c) drain, on an empty table and stream.
    private func measureRound(
        _ records: [TelemetryRecord], kind: RecordKind, configuration: WorkerConfiguration, logger: Logger
    ) async throws -> Round {
        try await Self.deleteBenchStreams(configuration, kind: kind, logger: logger)
        let ceiling = Self.ceilingStream(configuration.streams(for: kind)[0])
        // (a) The ceiling: the same rows COPYed straight into the table in one transaction.
        let rawCopyRate = try await Self.rawCopy(records, kind: kind, postgres: configuration.postgres, logger: logger)

        // (b) The producer: pipelined XADD of the same records, and beside it the ceiling: the
        // same commands encoded beforehand and pipelined on one connection, as `redis-benchmark
        // -c 1 -P 1000` would send them, without the producer's buffering and callers.
        let xaddCeiling = try await Self.xaddCeiling(records, stream: ceiling, redis: configuration.redis.routed(by: ceiling), logger: logger)
        let producer = TelemetryProducer(configuration: Self.producerConfiguration(configuration), logger: logger)
        let produced = try await LoadGenerator.withRunningProducer(producer, logger: logger) {
            await LoadGenerator.sendAll(records, through: producer)
        }
        guard produced.failed == 0 else { throw ValidationError("the producer failed \(produced.failed) sends") }

        // (c) End to end: the worker drains what the producer sent.
        let clock = ContinuousClock()
        let rssBefore = Self.residentBytes()
        let cpuBefore = ProcessCPU.snapshot()
        let drainStart = clock.now
        // A task beside the drain, not a child of it: it samples until the drain has returned.
        let sampler = Task {
            var peak = rssBefore
            while !Task.isCancelled {
                peak = max(peak, Self.residentBytes())
                try? await Task.sleep(for: .milliseconds(5))
            }
            return peak
        }
        try await WorkerService(configuration: configuration, logger: logger).run()
        sampler.cancel()
        let peakRSS = await sampler.value
        let drainElapsed = drainStart.duration(to: clock.now)
        let drainCPU = ProcessCPU.perRow(from: cpuBefore, to: ProcessCPU.snapshot(), rows: records.count)
        let target = RowEncoder.target(for: kind).table
        let rows = try await PostgresConnection.withConnection(configuration.postgres, logger: logger) { postgres in
            let rows = Int(try await postgres.query("SELECT count(*) FROM \(target)")[0][0] ?? "") ?? -1
            try await postgres.execute("TRUNCATE \(target)")
            return rows
        }
        guard rows == records.count else { throw ValidationError("drain inserted \(rows) rows, expected \(records.count)") }
        let drainRate = Double(records.count) / drainElapsed.inSeconds
        return Round(
            rawCopyRowsPerSecond: rawCopyRate.rounded(), xaddCeilingEntriesPerSecond: xaddCeiling.rounded(),
            producerEntriesPerSecond: produced.ratePerSecond.rounded(),
            producerToCeilingRatio: Self.ratio(produced.ratePerSecond, xaddCeiling),
            drainRowsPerSecond: drainRate.rounded(), drainToRawCopyRatio: Self.ratio(drainRate, rawCopyRate),
            drainPeakRSSGrowthBytes: peakRSS - rssBefore, drainCPU: drainCPU
        )
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

    private func log(_ message: String) {
        FileHandle.standardError.write(Data("bench: \(message)\n".utf8))
    }

    static func rawCopy(_ records: [TelemetryRecord], kind: RecordKind, postgres: PostgresConfiguration, logger: Logger) async throws -> Double {
        var rows = BinaryCopyRows(reservingBytes: records.count * 256)
        let base = UInt64(Timestamp.now().millisecondsSinceEpoch)
        for (index, record) in records.enumerated() {
            RowEncoder.append(record, id: StreamEntryID(milliseconds: base, sequence: UInt64(index)), to: &rows)
        }
        return try await PostgresConnection.withConnection(postgres, logger: logger) { connection in
            let clock = ContinuousClock()
            let start = clock.now
            let outcome = try await connection.insert(rows, into: RowEncoder.target(for: kind), path: .fast)
            let elapsed = start.duration(to: clock.now)
            guard outcome.insertedRows == records.count else {
                throw ValidationError("raw COPY inserted \(outcome.insertedRows) of \(records.count) rows")
            }
            try await connection.execute("TRUNCATE \(RowEncoder.target(for: kind).table)")
            return Double(records.count) / elapsed.inSeconds
        }
    }

    /// XADD rate of `records` encoded beforehand, pipelined 1000 at a time on one connection.
    static func xaddCeiling(
        _ records: [TelemetryRecord], stream: String, redis configuration: RedisConfiguration, logger: Logger
    ) async throws -> Double {
        let pipelines = stride(from: 0, to: records.count, by: 1000).map { start in
            records[start..<min(start + 1000, records.count)].map { record in
                var command = RedisCommand.streamAdd(to: stream)
                WireFormat.encode(record, into: &command)
                return command
            }
        }
        return try await RedisConnection.withConnection(configuration, logger: logger) { redis in
            let elapsed = try await timedAdds(pipelines, on: redis)
            try await redis.delete([stream])
            return Double(records.count) / elapsed.inSeconds
        }
    }

    /// Runs on the connection's own thread, so the loop is nothing but the pipelines.
    private static func timedAdds(_ pipelines: [[RedisCommand]], on redis: isolated RedisConnection) throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        for commands in pipelines {
            let failures = try redis.add(commands).count { if case .failure = $0 { true } else { false } }
            guard failures == 0 else { throw ValidationError("\(failures) XADDs failed while measuring the ceiling") }
        }
        return start.duration(to: clock.now)
    }

    static func appendOnlySetting(_ redis: isolated RedisConnection) throws -> String {
        (try? redis.serverSetting("appendonly")) ?? "unknown"
    }

    /// Resident memory of this process (VmRSS of /proc/self/status), in bytes.
    static func residentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { return 0 }
        return kilobytes * 1024
    }

    /// Runs the worker while producing at `rate`; returns every entry's latency and stages, in the
    /// steady state: half a second at the rate goes first as a warm-up, committed before the
    /// measured entries are sent, so the worker's start (connections, the first trim of the last
    /// run's entries) is not counted as latency.
    private func measureLatency(rate latencyRate: Int, configuration: WorkerConfiguration, kind: RecordKind, logger: Logger) async throws -> (
        samples: [LatencySample], acknowledgeMilliseconds: [Double], sent: Int
    ) {
        var configuration = configuration
        configuration.drain = false
        let target = latencyRate * latencySeconds
        let warmUp = max(100, latencyRate / 2)
        struct Progress {
            var committed = 0
            var samples: [LatencySample] = []
            var acknowledgeMilliseconds: [Double] = []
        }
        let progress = Mutex(Progress())
        let warmedUp = AsyncStream<Void>.makeStream()
        let allAcknowledged = AsyncStream<Void>.makeStream()
        let stageRecorder = BatchStageRecorder { report, stages in
            let (warm, done) = progress.withLock { progress in
                func milliseconds(_ duration: Duration) -> Double { duration.inSeconds * 1000 }
                if progress.committed >= warmUp { progress.acknowledgeMilliseconds.append(milliseconds(stages.acknowledged)) }
                for enqueued in report.enqueuedAt {
                    progress.committed += 1
                    guard progress.committed > warmUp else { continue }
                    let sinceAdd = Double(stages.committedAtMicroseconds - enqueued.millisecondsSinceEpoch * 1000) / 1000
                    progress.samples.append(
                        LatencySample(
                            milliseconds: Double(report.committedAt.millisecondsSinceEpoch - enqueued.millisecondsSinceEpoch),
                            stages: LatencyStages(
                                redisToReader: max(0, sinceAdd - milliseconds(stages.inWorker)), buffered: milliseconds(stages.buffered),
                                queued: milliseconds(stages.queued), prepared: milliseconds(stages.prepared), inserted: milliseconds(stages.inserted)
                            )
                        )
                    )
                }
                return (progress.committed >= warmUp, progress.samples.count >= target)
            }
            if warm { warmedUp.continuation.finish() }
            if done { allAcknowledged.continuation.finish() }
        }
        let service = WorkerService(configuration: configuration, logger: logger, stageObserver: stageRecorder)
        let producer = TelemetryProducer(configuration: Self.producerConfiguration(configuration), logger: logger)
        let group = ServiceGroup(services: [service, producer], logger: logger)
        let mix: LoadGenerator.Mix = kind == .training ? .training : .inference
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let warming = try await LoadGenerator.sendPaced(mix, count: warmUp, rate: latencyRate, burstMilliseconds: latencyBurstMs, seed: 10, through: producer)
            for await _ in warmedUp.stream {}
            let sent = try await LoadGenerator.sendPaced(mix, count: target, rate: latencyRate, burstMilliseconds: latencyBurstMs, seed: 11, through: producer)
            guard warming.failed + sent.failed == 0 else {
                throw ValidationError("the producer failed \(warming.failed + sent.failed) sends during the latency run")
            }
            for await _ in allAcknowledged.stream {}
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        return progress.withLock { ($0.samples, $0.acknowledgeMilliseconds, warmUp + target) }
    }

    static func percentile(_ values: [Double], _ quantile: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let rank = Int((quantile * Double(sorted.count)).rounded(.up)) - 1
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }

    static func loadAverage() -> String {
        (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "unknown"
    }

    static func cpuLine(_ cpu: ProcessCPU.PerRow, process: String) -> String {
        String(
            format: "CPU µs per row: %@ %.1f, redis-server %.1f, postgres %.1f; machine %.0f %% busy of %d cores",
            process, cpu.benchMicroseconds, cpu.redisMicroseconds, cpu.postgresMicroseconds, cpu.machineBusy * 100, cpu.cores
        )
    }

    static func table(_ report: Report) -> String {
        func rate(_ value: Double) -> String { String(format: "%12.0f", value) }
        let roundRatios = report.rounds.map { String(format: "%.3f", $0.drainToRawCopyRatio) }.joined(separator: "  ")
        let latencies = report.latency.map { latency in
            String(
                format: "  latency @ %6d/s (%d entries, sends of %d ms)   p50 %.1f ms   p99 %.1f ms   p99.9 %.1f ms   max %.1f ms", latency.rate,
                latency.entries, report.latencyBurstMilliseconds, latency.p50Milliseconds, latency.p99Milliseconds, latency.p999Milliseconds, latency.maximumMilliseconds
            ) + String(
                format: "\n      slowest 1 %%, mean ms: Redis to reader %.1f, buffered %.1f, queued %.1f, prepared %.1f, COPY+COMMIT %.1f; then XACK p50 %.1f p99 %.1f",
                latency.slowestPercent.redisToReader, latency.slowestPercent.buffered, latency.slowestPercent.queued,
                latency.slowestPercent.prepared, latency.slowestPercent.inserted, latency.acknowledgeP50Milliseconds, latency.acknowledgeP99Milliseconds
            ) + "\n      " + Self.cpuLine(latency.cpu, process: "this process (producer + worker)")
        }.joined(separator: "\n")
        return """
            adworker bench — \(report.records) \(report.kind) records, batch \(report.batchSize), concurrency \(report.concurrency), \
            medians of \(report.rounds.count) rounds
              raw COPY (ceiling)        \(rate(report.rawCopyRowsPerSecond)) rows/s
              XADD ceiling (1 conn.)    \(rate(report.xaddCeilingEntriesPerSecond)) entries/s  (Redis appendonly \(report.redisAppendOnly))
              producer XADD             \(rate(report.producerEntriesPerSecond)) entries/s
              producer / XADD ceiling   \(String(format: "%12.3f", report.producerToCeilingRatio))
              end-to-end drain          \(rate(report.drainRowsPerSecond)) rows/s
              drain / raw COPY          \(String(format: "%12.3f", report.drainToRawCopyRatio))  (rounds: \(roundRatios))
              drain peak RSS growth     \(String(format: "%12.1f", Double(report.drainPeakRSSGrowthBytes) / 1_048_576)) MiB
              drain \(Self.cpuLine(report.drainCPU, process: "worker"))
            \(latencies)\(report.singleNode.map { single in
                String(format: "\n  single node %@: producer %.0f entries/s, drain %.0f rows/s; cluster / single node: producer %.3f, drain %.3f",
                       single.redis, single.producerEntriesPerSecond, single.drainRowsPerSecond,
                       single.clusterToSingleNodeProducerRatio, single.clusterToSingleNodeDrainRatio)
            } ?? "")
              load average before / after: \(report.loadAverageBefore) / \(report.loadAverageAfter)
            """
    }
}

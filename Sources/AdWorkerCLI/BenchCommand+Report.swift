import AdTelemetryRecords
import AdWorkerCore
import AdWorkerRedis
import Foundation

extension BenchCommand {
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

    /// TLS figures next to the same server's in plaintext, measured in the same rounds (medians),
    /// and the latency runs at each rate.
    struct TLSComparison: Encodable {
        var plaintextRedis: String
        var plaintextProducerToCeilingRatio: Double
        var plaintextDrainToRawCopyRatio: Double
        var plaintextProducerEntriesPerSecond: Double
        var plaintextDrainRowsPerSecond: Double
        var tlsToPlaintextProducerRatio: Double
        var tlsToPlaintextDrainRatio: Double
        var plaintextLatency: [Latency]
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
        /// Over TLS with --plaintext-port: the same rounds and latency runs in plaintext.
        var tls: TLSComparison?
        var loadAverageBefore: String
        var loadAverageAfter: String
    }

    /// The medians over the rounds (the highest RSS growth of any), beside the latency runs.
    func summarize(
        kind: RecordKind, configuration: WorkerConfiguration, rounds measured: [Round], appendOnly: String, latency: [Latency],
        comparison: (Comparison, rounds: [Round], latency: [Latency])?, loadBefore: String
    ) -> Report {
        func median(_ figure: (Round) -> Double) -> Double { Self.median(measured.map(figure)) }
        func comparisonMedian(_ figure: (Round) -> Double) -> Double { Self.median(comparison?.rounds.map(figure) ?? []) }
        func comparisonRatio(_ figure: (Round) -> Double) -> Double {
            Self.median(zip(measured, comparison?.rounds ?? []).map { Self.ratio(figure($0), figure($1)) })
        }
        let redis = comparison.map { "\($0.0.configuration.redis.host):\($0.0.configuration.redis.port)" } ?? ""
        return Report(
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
            singleNode: comparison?.0.kind != .singleNode ? nil : SingleNodeComparison(
                redis: redis, producerEntriesPerSecond: comparisonMedian(\.producerEntriesPerSecond),
                drainRowsPerSecond: comparisonMedian(\.drainRowsPerSecond),
                clusterToSingleNodeProducerRatio: comparisonRatio(\.producerEntriesPerSecond), clusterToSingleNodeDrainRatio: comparisonRatio(\.drainRowsPerSecond)
            ),
            tls: comparison?.0.kind != .plaintext ? nil : TLSComparison(
                plaintextRedis: redis, plaintextProducerToCeilingRatio: comparisonMedian(\.producerToCeilingRatio),
                plaintextDrainToRawCopyRatio: comparisonMedian(\.drainToRawCopyRatio),
                plaintextProducerEntriesPerSecond: comparisonMedian(\.producerEntriesPerSecond),
                plaintextDrainRowsPerSecond: comparisonMedian(\.drainRowsPerSecond),
                tlsToPlaintextProducerRatio: comparisonRatio(\.producerEntriesPerSecond), tlsToPlaintextDrainRatio: comparisonRatio(\.drainRowsPerSecond),
                plaintextLatency: comparison?.latency ?? []
            ),
            loadAverageBefore: loadBefore, loadAverageAfter: Self.loadAverage()
        )
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
            } ?? "")\(report.tls.map(Self.tlsLines) ?? "")
              load average before / after: \(report.loadAverageBefore) / \(report.loadAverageAfter)
            """
    }

    static func tlsLines(_ tls: TLSComparison) -> String {
        let latencies = tls.plaintextLatency.map { latency in
            String(format: "\n    latency @ %6d/s in plaintext   p50 %.1f ms   p99 %.1f ms   p99.9 %.1f ms", latency.rate,
                   latency.p50Milliseconds, latency.p99Milliseconds, latency.p999Milliseconds)
        }.joined()
        return String(
            format: "\n  plaintext %@: producer %.0f entries/s (%.3f of its XADD ceiling), drain %.0f rows/s (%.3f of its raw COPY); TLS / plaintext: producer %.3f, drain %.3f",
            tls.plaintextRedis, tls.plaintextProducerEntriesPerSecond, tls.plaintextProducerToCeilingRatio, tls.plaintextDrainRowsPerSecond,
            tls.plaintextDrainToRawCopyRatio, tls.tlsToPlaintextProducerRatio, tls.tlsToPlaintextDrainRatio
        ) + latencies
    }
}

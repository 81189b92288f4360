import AdTelemetry
import AdTelemetryRecords
import AdWorkerCore
import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// The latency runs: the worker running while the producer sends at fixed rates.
extension BenchCommand {
    /// One run per rate: commit time minus entry id time, for every entry.
    func measureLatencies(configuration: WorkerConfiguration, kind: RecordKind, logger: Logger) async throws -> [Latency] {
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
        return latency
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

    /// The nearest-rank percentile, as `/status` computes it; 0 without values.
    static func percentile(_ values: [Double], _ quantile: Double) -> Double {
        Percentile.nearestRank(quantile, of: values.sorted()) ?? 0
    }
}

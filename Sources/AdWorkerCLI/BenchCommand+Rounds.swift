import AdTelemetry
import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import ArgumentParser
import Foundation
import Logging

/// The rounds: raw COPY, the XADD ceiling, the producer and the drain.
extension BenchCommand {
    /// Every round, each first against `comparison` when there is one (on a cluster the single
    /// node; over TLS the same server's plaintext port), so that both see the same machine.
    func measureRounds(
        _ records: [TelemetryRecord], kind: RecordKind, configuration: WorkerConfiguration, comparison: Comparison?, logger: Logger
    ) async throws -> (measured: [Round], comparison: [Round]) {
        var measured: [Round] = []
        var comparisonRounds: [Round] = []
        for number in 1...rounds {
            if let comparison {
                let other = try await measureRound(records, kind: kind, configuration: comparison.configuration, logger: logger)
                log(String(format: "round %d %@: producer %.0f entries/s, drain %.0f rows/s (%.3f of raw COPY)", number,
                           comparison.label, other.producerEntriesPerSecond, other.drainRowsPerSecond, other.drainToRawCopyRatio))
                comparisonRounds.append(other)
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
        return (measured, comparisonRounds)
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
}

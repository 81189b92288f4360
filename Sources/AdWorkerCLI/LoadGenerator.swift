import AdTelemetry
import AdTelemetryRecords
import AdWorkerRedis
import Logging
import ServiceLifecycle

/// What a load run achieved.
struct LoadResult {
    var sent = 0
    var failed = 0
    var elapsed: Duration = .zero
    /// Failed records by why (the producer's code and Redis's), with one message for each.
    var failures: [String: (count: Int, example: String)] = [:]

    mutating func add(_ outcome: LoadGenerator.SendOutcome) {
        sent += outcome.sent
        failed += outcome.failed
        for (reason, failure) in outcome.failures {
            failures[reason, default: (0, failure.example)].count += failure.count
        }
    }

    var ratePerSecond: Double { Double(sent) / elapsed.inSeconds }
}

/// Sends synthetic telemetry through a ``TelemetryProducer``, as fast as it goes or at a fixed rate.
enum LoadGenerator {
    enum Mix: String, CaseIterable {
        case training, inference
        /// Complete API requests: a training and an inference record per request.
        case requests
    }

    /// Runs `producer` as a service while `body` uses it, then shuts it down gracefully (which
    /// sends everything queued).
    static func withRunningProducer<Result: Sendable>(
        _ producer: TelemetryProducer, logger: Logger, _ body: () async throws -> Result
    ) async throws -> Result {
        let group = ServiceGroup(services: [producer], logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            do {
                let result = try await body()
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                return result
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
        }
    }

    /// Builds `count` records of `mix` (a request counts as two records).
    static func records(_ mix: Mix, count: Int, seed: UInt64, startingAt first: Int = 0) -> [TelemetryRecord] {
        var telemetry = SyntheticTelemetry(seed: seed)
        var records: [TelemetryRecord] = []
        records.reserveCapacity(count)
        var number = first
        let now = Timestamp.now()
        while records.count < count {
            let (training, inference) = telemetry.request(number: number, at: now)
            number += 1
            switch mix {
            case .training: records.append(.training(training))
            case .inference: records.append(.inference(inference))
            case .requests:
                records.append(.training(training))
                if records.count < count { records.append(.inference(inference)) }
            }
        }
        return records
    }

    /// Sends `records` in chunks from `senders` concurrent tasks, as fast as the producer takes them.
    static func sendAll(_ records: [TelemetryRecord], through producer: TelemetryProducer, chunk: Int = 1000, senders: Int = 8) async -> LoadResult {
        let clock = ContinuousClock()
        let start = clock.now
        let chunks = stride(from: 0, to: records.count, by: chunk).map { Array(records[$0..<min($0 + chunk, records.count)]) }
        var result = LoadResult()
        await withTaskGroup(of: LoadResult.self) { group in
            for sender in 0..<senders {
                group.addTask {
                    var partial = LoadResult()
                    for index in stride(from: sender, to: chunks.count, by: senders) {
                        partial.add(await send(chunks[index], through: producer))
                    }
                    return partial
                }
            }
            for await partial in group {
                result.sent += partial.sent
                result.failed += partial.failed
                for (reason, failure) in partial.failures {
                    result.failures[reason, default: (0, failure.example)].count += failure.count
                }
            }
        }
        result.elapsed = start.duration(to: clock.now)
        return result
    }

    /// Sends `count` records of `mix` at `rate` records a second (generation included), one send
    /// of `burstMilliseconds` worth of records at a time (at most 1,000).
    static func sendPaced(
        _ mix: Mix, count: Int, rate: Int, burstMilliseconds: Int = 20, seed: UInt64, through producer: TelemetryProducer
    ) async throws -> LoadResult {
        let clock = ContinuousClock()
        let start = clock.now
        let chunk = max(1, min(1000, rate * burstMilliseconds / 1000))
        var result = LoadResult()
        var number = 0
        while result.sent + result.failed < count {
            let size = min(chunk, count - result.sent - result.failed)
            let outcome = await send(records(mix, count: size, seed: seed &+ UInt64(number), startingAt: number), through: producer)
            number += size
            result.add(outcome)
            let due = start.advanced(by: .seconds(Double(result.sent + result.failed) / Double(rate)))
            if due > clock.now { try await clock.sleep(until: due) }
        }
        result.elapsed = start.duration(to: clock.now)
        return result
    }

    typealias SendOutcome = (sent: Int, failed: Int, failures: [String: (count: Int, example: String)])

    private static func send(_ records: [TelemetryRecord], through producer: TelemetryProducer) async -> SendOutcome {
        var outcome: SendOutcome = (0, 0, [:])
        func fail(_ error: any Error, count: Int) {
            outcome.failed += count
            let reason: String
            if let error = error as? TelemetryProducerError {
                reason = "\(error.code)" + ((error.underlying as? RedisError).map { " (\($0.code))" } ?? "")
            } else {
                reason = "\(type(of: error))"
            }
            outcome.failures[reason, default: (0, "\(error)")].count += count
        }
        do {
            for result in try await producer.send(records) {
                switch result {
                case .success: outcome.sent += 1
                case .failure(let error): fail(error, count: 1)
                }
            }
        } catch {
            fail(error, count: records.count)
        }
        return outcome
    }
}

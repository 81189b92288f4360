@testable import AdWorkerCore
import AdWorkerRedis
import AdWorkerTestSupport
import Logging
import Synchronization
import Testing

/// The breaker on a clock moved by hand: open from the first failure to the next success, each
/// change said once, a permanent failure logged again only after its interval, and `retrying`
/// waiting out backoff (or until a probe succeeds) on the breaker's clock.
@Suite(.timeLimit(.minutes(1))) struct CircuitBreakerTests {
    /// What the breaker reported through its callbacks and its logger.
    final class Reports: Sendable {
        let stateChanges = Mutex<[Bool]>([])
        let failures = Mutex(0)
        let permanent = Mutex<[PermanentFailure?]>([])
        let errorLogs = Mutex<[String]>([])

        var logger: Logger {
            Logger(label: "breaker") { _ in ErrorLog(reports: self) }
        }
    }

    /// Keeps the messages logged at error level.
    struct ErrorLog: LogHandler {
        let reports: Reports
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            if event.level == .error { reports.errorLogs.withLock { $0.append("\(event.message)") } }
        }
    }

    static func breaker(_ reports: Reports, clock: ManualClock) -> ClockedCircuitBreaker<ManualClock> {
        ClockedCircuitBreaker(
            target: "redis", role: "reader",
            onFailure: { _ in reports.failures.withLock { $0 += 1 } },
            onStateChange: { open in reports.stateChanges.withLock { $0.append(open) } },
            onPermanentFailure: { failure in reports.permanent.withLock { $0.append(failure) } },
            clock: clock
        )
    }

    static let lost = RedisError(.connectionLost, "connection reset")
    static let full = RedisError(.outOfMemory, "OOM command not allowed")

    @Test func itOpensAtTheFirstFailureAndClosesAtTheNextSuccessSayingEachOnce() {
        let reports = Reports()
        let breaker = Self.breaker(reports, clock: ManualClock())
        #expect(!breaker.isOpen)
        for _ in 0..<3 { breaker.recordFailure(Self.lost, doing: "reading", nextAttemptIn: .milliseconds(100), logger: reports.logger) }
        #expect(breaker.isOpen)
        #expect(reports.stateChanges.withLock { $0 } == [true])
        #expect(reports.failures.withLock { $0 } == 3)
        breaker.recordSuccess(logger: reports.logger)
        breaker.recordSuccess(logger: reports.logger)
        #expect(!breaker.isOpen)
        #expect(reports.stateChanges.withLock { $0 } == [true, false])
        #expect(reports.permanent.withLock { $0 }.isEmpty, "a lost connection is not a permanent failure")
    }

    @Test func aPermanentFailureIsReportedWhenItStartsAndClearedWhenTheTargetStopsRefusing() throws {
        let reports = Reports()
        let breaker = Self.breaker(reports, clock: ManualClock())
        let outOfMemory = try #require(PermanentFailure(Self.full))
        breaker.recordFailure(Self.full, doing: "acknowledging", nextAttemptIn: .zero, logger: reports.logger)
        breaker.recordFailure(Self.full, doing: "acknowledging", nextAttemptIn: .zero, logger: reports.logger)
        #expect(reports.permanent.withLock { $0 } == [outOfMemory])
        // Failing otherwise now (a restart, say): the fix is no longer what is needed.
        breaker.recordFailure(Self.lost, doing: "acknowledging", nextAttemptIn: .zero, logger: reports.logger)
        #expect(reports.permanent.withLock { $0 } == [outOfMemory, nil])
        #expect(breaker.isOpen)
        breaker.recordFailure(Self.full, doing: "acknowledging", nextAttemptIn: .zero, logger: reports.logger)
        breaker.recordSuccess(logger: reports.logger)
        #expect(reports.permanent.withLock { $0 } == [outOfMemory, nil, outOfMemory, nil])
    }

    @Test func aLastingPermanentFailureIsLoggedAgainOnlyOnceItsIntervalHasPassed() {
        let reports = Reports()
        let clock = ManualClock()
        let breaker = Self.breaker(reports, clock: clock)
        func fail() { breaker.recordFailure(Self.full, doing: "acknowledging", nextAttemptIn: .zero, logger: reports.logger) }
        fail()
        #expect(reports.errorLogs.withLock { $0.count } == 1)
        clock.advance(by: CircuitBreaker.permanentLogInterval - .milliseconds(1))
        fail()
        #expect(reports.errorLogs.withLock { $0.count } == 1)
        clock.advance(by: .milliseconds(1))
        fail()
        #expect(reports.errorLogs.withLock { $0.count } == 2)
        clock.advance(by: .seconds(1))
        fail()
        #expect(reports.errorLogs.withLock { $0.count } == 2)
    }

    @Test func retryingWaitsOutTheBackoffOnItsClockUntilTheWorkSucceeds() async throws {
        let reports = Reports()
        let clock = ManualClock()
        let breaker = Self.breaker(reports, clock: clock)
        let attempts = Mutex(0)
        let work = Task {
            try await breaker.retrying(doing: "reading", logger: reports.logger) {
                let attempt = attempts.withLock { $0 += 1; return $0 }
                if attempt < 3 { throw Self.lost }
                return attempt
            }
        }
        // Backoff from 100 ms, doubling, each delay drawn from the upper half of its ceiling.
        for (failed, ceiling) in [(1, Duration.milliseconds(100)), (2, .milliseconds(200))] {
            let deadline = try #require(await clock.sleepers(atLeast: 1).first)
            let delay = clock.now.duration(to: deadline)
            #expect(delay >= ceiling / 2 && delay <= ceiling, "\(delay)")
            clock.advance(by: delay - .nanoseconds(1))
            #expect(attempts.withLock { $0 } == failed, "retried before its backoff ran out")
            clock.advance(by: .nanoseconds(1))
        }
        #expect(try await work.value == 3)
        #expect(reports.stateChanges.withLock { $0 } == [true, false])
    }

    @Test func aSucceedingProbeCutsALongBackoffShort() async throws {
        let reports = Reports()
        let clock = ManualClock()
        let breaker = Self.breaker(reports, clock: clock)
        let attempts = Mutex(0)
        let probeAnswers = Mutex(false)
        let probes = Mutex(0)
        let work = Task {
            try await breaker.retrying(
                doing: "acknowledging", logger: reports.logger,
                probe: {
                    probes.withLock { $0 += 1 }
                    if !probeAnswers.withLock({ $0 }) { throw Self.lost }
                }
            ) {
                let attempt = attempts.withLock { $0 += 1; return $0 }
                if attempt <= 5 { throw Self.lost }
            }
        }
        // Waited out whole (a short one unprobed, a longer one probed in vain) up to the fifth failure.
        while true {
            let deadline = try #require(await clock.sleepers(atLeast: 1).first)
            if attempts.withLock({ $0 }) == 5 { break }
            clock.advance(by: clock.now.duration(to: deadline))
        }
        // The fifth backoff is 0.8-1.6 s: the target is probed every 250 ms meanwhile.
        let failedAt = clock.now
        let probedBefore = probes.withLock { $0 }
        #expect(await clock.sleepers(atLeast: 1) == [failedAt.advanced(by: CircuitBreaker.probeInterval)])
        clock.advance(by: CircuitBreaker.probeInterval)
        #expect(await clock.sleepers(atLeast: 1) == [failedAt.advanced(by: CircuitBreaker.probeInterval * 2)])
        #expect(probes.withLock { $0 } == probedBefore + 1)
        probeAnswers.withLock { $0 = true }
        clock.advance(by: CircuitBreaker.probeInterval)
        try await work.value
        #expect(attempts.withLock { $0 } == 6)
        #expect(probes.withLock { $0 } == probedBefore + 2)
        #expect(failedAt.duration(to: clock.now) == .milliseconds(500), "retried at the probe's answer, not after the backoff")
    }

    @Test func onlyCancellationEndsRetrying() async throws {
        let reports = Reports()
        let clock = ManualClock()
        let breaker = Self.breaker(reports, clock: clock)
        let work = Task { try await breaker.retrying(doing: "reading", logger: reports.logger) { () async throws -> Void in throw Self.lost } }
        await clock.sleepers(atLeast: 1)
        work.cancel()
        await #expect(throws: CancellationError.self) { try await work.value }
        #expect(reports.failures.withLock { $0 } == 1)
    }
}

import AdWorkerConnectionThread
import Logging
import Synchronization

/// Tracks one target (PostgreSQL, Redis) for one task: closed while calls succeed, open from the
/// first failure until the next success. Retries are paced by ``Backoff``; the breaker's job is
/// to say clearly, once, when a target goes away and when it comes back, instead of one warning
/// per retry, and to let readiness checks see that a target is failing.
typealias CircuitBreaker = ClockedCircuitBreaker<ContinuousClock>

/// ``CircuitBreaker`` on any clock: the worker's runs on the continuous clock, a test's on one it
/// moves by hand (the outage's length, the permanent failure's log interval, the waits between
/// attempts and probes all follow it).
final class ClockedCircuitBreaker<BreakerClock: Clock<Duration>>: Sendable {
    enum State: Equatable {
        case closed
        case open(since: BreakerClock.Instant, failures: Int)
    }

    /// A permanent failure is logged at error level at most this often while it lasts.
    static var permanentLogInterval: Duration { .seconds(30) }

    let target: String
    /// Which task's breaker (`reader`, `sink 1`), in its log lines; nil for a task of its own.
    let role: String?
    /// The circuit, and the permanent failure the target answers with now and when it was last
    /// logged: one lock, taken once per call on the success path.
    private struct Guarded {
        var state = State.closed
        var permanent: (failure: PermanentFailure, loggedAt: BreakerClock.Instant)?
    }

    private let clock: BreakerClock

    private let guarded = Mutex(Guarded())
    private let onFailure: @Sendable (any Error) -> Void
    private let onStateChange: @Sendable (_ isOpen: Bool) -> Void
    private let onPermanentFailure: @Sendable (PermanentFailure?) -> Void

    /// - Parameter onPermanentFailure: Called when the target starts refusing for a reason
    ///   retrying cannot fix (or the reason changes), and with nil once it succeeds again.
    init(
        target: String, role: String? = nil, onFailure: @escaping @Sendable (any Error) -> Void = { _ in },
        onStateChange: @escaping @Sendable (_ isOpen: Bool) -> Void = { _ in },
        onPermanentFailure: @escaping @Sendable (PermanentFailure?) -> Void = { _ in }, clock: BreakerClock
    ) {
        self.clock = clock
        self.target = target
        self.role = role
        self.onFailure = onFailure
        self.onStateChange = onStateChange
        self.onPermanentFailure = onPermanentFailure
    }

    var isOpen: Bool { guarded.withLock { $0.state != .closed } }

    func recordFailure(_ error: any Error, doing activity: String, nextAttemptIn delay: Duration, logger: Logger) {
        let failure = PermanentFailure(error)
        // What changed about the permanent failure (nil: nothing), and whether to log it now.
        let now = clock.now
        let (failures, permanentChange, logPermanent) = guarded.withLock { guarded -> (Int, PermanentFailure??, Bool) in
            let failures: Int
            switch guarded.state {
            case .closed:
                guarded.state = .open(since: now, failures: 1)
                failures = 1
            case .open(let since, let count):
                guarded.state = .open(since: since, failures: count + 1)
                failures = count + 1
            }
            guard let failure else {
                // Refusing no more, failing otherwise (a restart, say): the fix is not what is needed now.
                defer { guarded.permanent = nil }
                return (failures, guarded.permanent == nil ? nil : .some(nil), false)
            }
            let changed = guarded.permanent?.failure != failure
            let log = changed || guarded.permanent!.loggedAt.duration(to: now) >= Self.permanentLogInterval
            guarded.permanent = (failure, log ? now : guarded.permanent!.loggedAt)
            return (failures, changed ? .some(failure) : nil, log)
        }
        onFailure(error)
        if let permanentChange { onPermanentFailure(permanentChange) }
        if let failure, logPermanent {
            logger.error(
                "\(target) refuses the worker: \(failure.fix); retrying, nothing is acknowledged until it is fixed",
                metadata: withRole([LogKey.error: "\(error)"])
            )
        }
        if failures == 1 {
            onStateChange(true)
            logger.warning(
                "\(target) circuit open: \(activity) failed; retrying with backoff",
                metadata: withRole([LogKey.error: "\(error)", LogKey.delay: "\(delay)"])
            )
        } else {
            logger.debug(
                "\(target) still failing",
                metadata: withRole([LogKey.error: "\(error)", LogKey.attempt: "\(failures)", LogKey.delay: "\(delay)"])
            )
        }
    }

    func recordSuccess(logger: Logger) {
        let (opened, wasRefused) = guarded.withLock { guarded -> ((since: BreakerClock.Instant, failures: Int)?, Bool) in
            defer {
                guarded.state = .closed
                guarded.permanent = nil
            }
            guard case .open(let since, let failures) = guarded.state else { return (nil, false) }
            return ((since, failures), guarded.permanent != nil)
        }
        if wasRefused { onPermanentFailure(nil) }
        guard let opened else { return }
        onStateChange(false)
        logger.notice(
            "\(target) circuit closed",
            metadata: withRole(["failures": "\(opened.failures)", "outage": "\(opened.since.duration(to: clock.now))"])
        )
    }

    private func withRole(_ metadata: Logger.Metadata) -> Logger.Metadata {
        guard let role else { return metadata }
        return metadata.merging([LogKey.role: "\(role)"]) { current, _ in current }
    }

    /// How often a failing target is probed while the work waits out its backoff: the work is
    /// retried as soon as a probe succeeds, not at the end of a backoff that grew during a long
    /// outage (up to 10 s).
    static var probeInterval: Duration { .milliseconds(250) }

    /// Runs `body` until it succeeds, sleeping with exponential backoff and jitter between
    /// attempts; only cancellation ends it early. With a `probe` (a cheap call to the same target:
    /// PING, SELECT 1), the sleep is cut short once the probe succeeds.
    func retrying<Result>(
        doing activity: String, logger: Logger, probe: (() async throws -> Void)? = nil, _ body: () async throws -> Result
    ) async throws -> Result {
        var backoff = Backoff()
        while true {
            do {
                let result = try await body()
                recordSuccess(logger: logger)
                return result
            } catch {
                // A cancelled call fails with its own error type (a connection given up); it is
                // still cancellation, not a failure to retry.
                if error is CancellationError || Task.isCancelled { throw CancellationError() }
                let delay = backoff.nextDelay()
                recordFailure(error, doing: activity, nextAttemptIn: delay, logger: logger)
                try await wait(delay, probe: probe)
            }
        }
    }

    private func wait(_ delay: Duration, probe: (() async throws -> Void)?) async throws {
        guard let probe else { return try await clock.sleep(until: clock.now.advanced(by: delay), tolerance: nil) }
        let end = clock.now.advanced(by: delay)
        while clock.now < end {
            try await clock.sleep(until: clock.now.advanced(by: min(Self.probeInterval, clock.now.duration(to: end))), tolerance: nil)
            guard clock.now < end else { return }
            if (try? await probe()) != nil { return }
        }
    }
}

extension ClockedCircuitBreaker where BreakerClock == ContinuousClock {
    /// On the continuous clock: the worker's breaker.
    convenience init(
        target: String, role: String? = nil, onFailure: @escaping @Sendable (any Error) -> Void = { _ in },
        onStateChange: @escaping @Sendable (_ isOpen: Bool) -> Void = { _ in },
        onPermanentFailure: @escaping @Sendable (PermanentFailure?) -> Void = { _ in }
    ) {
        self.init(
            target: target, role: role, onFailure: onFailure, onStateChange: onStateChange, onPermanentFailure: onPermanentFailure,
            clock: ContinuousClock()
        )
    }
}

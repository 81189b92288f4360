import Logging
import Synchronization

/// Tracks one target (PostgreSQL, Redis) for one task: closed while calls succeed, open from the
/// first failure until the next success. Retries are paced by ``Backoff``; the breaker's job is
/// to say clearly, once, when a target goes away and when it comes back, instead of one warning
/// per retry, and to let readiness checks see that a target is failing.
final class CircuitBreaker: Sendable {
    enum State: Equatable {
        case closed
        case open(since: ContinuousClock.Instant, failures: Int)
    }

    let target: String
    /// Which task's breaker (`reader`, `sink 1`), in its log lines; nil for a task of its own.
    let role: String?
    private let state = Mutex(State.closed)
    private let onFailure: @Sendable (any Error) -> Void
    private let onStateChange: @Sendable (_ isOpen: Bool) -> Void

    init(
        target: String, role: String? = nil, onFailure: @escaping @Sendable (any Error) -> Void = { _ in },
        onStateChange: @escaping @Sendable (_ isOpen: Bool) -> Void = { _ in }
    ) {
        self.target = target
        self.role = role
        self.onFailure = onFailure
        self.onStateChange = onStateChange
    }

    var isOpen: Bool { state.withLock { $0 != .closed } }

    func recordFailure(_ error: any Error, doing activity: String, nextAttemptIn delay: Duration, logger: Logger) {
        let failures = state.withLock { state -> Int in
            switch state {
            case .closed:
                state = .open(since: .now, failures: 1)
                return 1
            case .open(let since, let failures):
                state = .open(since: since, failures: failures + 1)
                return failures + 1
            }
        }
        onFailure(error)
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
        let opened = state.withLock { state -> (since: ContinuousClock.Instant, failures: Int)? in
            guard case .open(let since, let failures) = state else { return nil }
            state = .closed
            return (since, failures)
        }
        guard let opened else { return }
        onStateChange(false)
        logger.notice(
            "\(target) circuit closed",
            metadata: withRole(["failures": "\(opened.failures)", "outage": "\(opened.since.duration(to: .now))"])
        )
    }

    private func withRole(_ metadata: Logger.Metadata) -> Logger.Metadata {
        guard let role else { return metadata }
        return metadata.merging([LogKey.role: "\(role)"]) { current, _ in current }
    }

    /// How often a failing target is probed while the work waits out its backoff: the work is
    /// retried as soon as a probe succeeds, not at the end of a backoff that grew during a long
    /// outage (up to 10 s).
    static let probeInterval: Duration = .milliseconds(250)

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
        guard let probe else { return try await Task.sleep(for: delay) }
        let clock = ContinuousClock()
        let end = clock.now + delay
        while clock.now < end {
            try await Task.sleep(for: min(Self.probeInterval, clock.now.duration(to: end)))
            guard clock.now < end else { return }
            if (try? await probe()) != nil { return }
        }
    }
}

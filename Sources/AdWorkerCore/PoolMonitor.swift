import AdTelemetryRecords

/// What the supervisor of `adworker run --processes N` decides about its worker processes, as a
/// value type: which are not answering (the pool's `/healthz` and the systemd watchdog) and which
/// to kill at shutdown. Events come in (a process started or exited, a probe of its `/healthz`
/// answered or not, shutdown began); nothing here reads a clock, so tests move time by hand.
///
/// A process is *unresponsive* once its probes have gone unanswered for ``Configuration/unresponsiveAfter``,
/// counted from when the first unanswered probe was sent to when the latest one was given up
/// (each probe waits at most ``Configuration/probeTimeout``). One slow answer never counts, and a
/// stalled prober cannot make a process look frozen. A process that has not yet answered once
/// (it is still binding its port) is not judged before ``Configuration/startupGrace``.
public struct PoolMonitor<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration, Instant: Sendable {
    public struct Configuration: Sendable {
        /// The longest a probe of one process's `/healthz` waits: a frozen process must not
        /// make the pool's own answer slow.
        public var probeTimeout: Duration
        /// How long probes go unanswered before the process counts as unresponsive.
        public var unresponsiveAfter: Duration
        /// From its start, how long a process that has never answered may stay silent.
        public var startupGrace: Duration
        /// From SIGTERM, how long a process has to exit before it is killed.
        public var shutdownGrace: Duration

        public init(
            probeTimeout: Duration = .milliseconds(500), unresponsiveAfter: Duration = .seconds(1), startupGrace: Duration = .seconds(15),
            shutdownGrace: Duration
        ) {
            self.probeTimeout = probeTimeout
            self.unresponsiveAfter = unresponsiveAfter
            self.startupGrace = startupGrace
            self.shutdownGrace = shutdownGrace
        }
    }

    struct Running: Sendable {
        var started: Instant
        var pid: Int32
        var answered = false
        /// When the first probe went out that has had no answer since the last one.
        var silentSince: Instant?
        /// When the latest unanswered probe was given up.
        var silentUntil: Instant?
        /// What the process's own `/healthz` last said is wrong (a stalled stream).
        var stuckReasons: [String] = []
        var killed = false
    }

    public let configuration: Configuration
    /// By process index; nil while the process is not running.
    private(set) var processes: [Running?]
    private(set) var shutdownStarted: Instant?

    public init(count: Int, configuration: Configuration) {
        self.configuration = configuration
        self.processes = Array(repeating: nil, count: count)
    }

    public mutating func started(_ index: Int, pid: Int32, at instant: Instant) {
        processes[index] = Running(started: instant, pid: pid)
    }

    public mutating func exited(_ index: Int) {
        processes[index] = nil
    }

    /// The process answered its `/healthz`: 200 (no reasons) or 503 with its reasons.
    public mutating func answered(_ index: Int, stuckReasons: [String]) {
        guard processes[index] != nil else { return }
        processes[index]!.answered = true
        processes[index]!.silentSince = nil
        processes[index]!.silentUntil = nil
        processes[index]!.stuckReasons = stuckReasons
    }

    /// A probe sent at `asked` had no answer by `givenUp` (timed out, or the port refused it).
    public mutating func unanswered(_ index: Int, asked: Instant, givenUp: Instant) {
        guard var process = processes[index], asked >= process.started else { return }
        process.silentSince = process.silentSince ?? asked
        process.silentUntil = givenUp
        processes[index] = process
    }

    /// Why the pool is not healthy; empty when it is. A process that is down is not a reason:
    /// restarting it is the supervisor's job, not a reason to restart the pool.
    public func unhealthyReasons() -> [String] {
        processes.indices.flatMap { index -> [String] in
            guard let process = processes[index] else { return [] }
            if let silence = unresponsiveSilence(process) {
                let seconds = (silence.inSeconds * 10).rounded() / 10
                return ["worker process \(index) (pid \(process.pid)) is not answering: no answer to /healthz for \(seconds) s"]
            }
            return process.stuckReasons.map { "worker process \(index): \($0)" }
        }
    }

    /// How long an unresponsive process has been silent; nil while it counts as answering.
    private func unresponsiveSilence(_ process: Running) -> Duration? {
        guard let since = process.silentSince, let until = process.silentUntil else { return nil }
        let silence = since.duration(to: until)
        guard silence >= configuration.unresponsiveAfter else { return nil }
        guard process.answered || process.started.duration(to: until) >= configuration.startupGrace else { return nil }
        return silence
    }

    /// SIGTERM went to every process at `instant`.
    public mutating func shutdownBegan(at instant: Instant) {
        if shutdownStarted == nil { shutdownStarted = instant }
    }

    public var isShuttingDown: Bool { shutdownStarted != nil }

    /// When processes still running are to be killed; nil before shutdown.
    public var killDeadline: Instant? {
        shutdownStarted.map { $0.advanced(by: configuration.shutdownGrace) }
    }

    /// The processes (index and pid) to kill at `instant`: still running past the shutdown grace.
    /// Each is returned once.
    public mutating func overdue(at instant: Instant) -> [(index: Int, pid: Int32)] {
        guard let deadline = killDeadline, instant >= deadline else { return [] }
        var result: [(index: Int, pid: Int32)] = []
        for index in processes.indices {
            guard let process = processes[index], !process.killed else { continue }
            processes[index]!.killed = true
            result.append((index, process.pid))
        }
        return result
    }
}

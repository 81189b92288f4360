import AdWorkerConnectionThread
import AdWorkerCore
import AdWorkerHTTP
import CAdWorkerProcessControl
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// `adworker run --processes N`: N worker processes of this same binary, each with its own
/// consumer names (`<name>-p<i>-<slot>`) and connections. A child that exits with an error or is
/// killed is restarted with exponential backoff; five crashes of one child within a minute stop
/// the others and end the pool with an error. SIGTERM/SIGINT reach every child, and the supervisor returns when all
/// have finished their batches; a child still running past the shutdown grace (a frozen one) is
/// killed with SIGKILL and named in a warning. Each child serves its endpoint on 127.0.0.1:<port+1+i>;
/// the supervisor serves the aggregate (see ``PoolEndpoint``), its health from ``PoolMonitor``.
final class Supervisor: Service, Sendable {
    struct Child: Sendable {
        var index: Int
        var pid: Int32?
        var state: WorkerProcessState
        var restarts: Int
        var port: Int?
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static let crashLoopLimit = 5
    static let crashLoopWindow: Duration = .seconds(60)

    let count: Int
    let arguments: [String]
    let consumerName: String
    let basePort: Int?
    let logger: Logger
    /// The children as `/status` shows them, the decisions about them, and why the pool gave up,
    /// changed under one lock.
    private let pool: Mutex<(children: [Child], monitor: PoolMonitor<ContinuousClock.Instant>, failure: Failure?)>
    private let spawner = Spawner()
    private let running = Mutex<[Int: Process]>([:])
    /// One element when the pool begins to stop (SIGTERM, or a child crash-looping).
    private let (stops, stop) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))

    /// - Parameters:
    ///   - arguments: The `run` arguments for each child, without `--processes`, `--http` and `--consumer-name`.
    ///   - basePort: The supervisor's own port; child i listens on basePort + 1 + i. Nil: no endpoints.
    ///   - monitor: When a child counts as not answering, and how long after SIGTERM it is killed.
    init(count: Int, arguments: [String], consumerName: String, basePort: Int?, monitor: PoolMonitor<ContinuousClock.Instant>.Configuration, logger: Logger) {
        self.count = count
        self.arguments = arguments
        self.consumerName = consumerName
        self.basePort = basePort
        self.logger = logger
        let children = (0..<count).map { index in
            Child(index: index, pid: nil, state: .starting, restarts: 0, port: basePort.map { $0 + 1 + index })
        }
        self.pool = Mutex((children, PoolMonitor(count: count, configuration: monitor), nil))
    }

    var snapshot: [Child] { pool.withLock { $0.children } }

    /// Why the pool is not healthy (a child not answering, or stuck by its own account); empty when it is.
    var unhealthyReasons: [String] { pool.withLock { $0.monitor.unhealthyReasons() } }

    /// What ``PoolProbe`` found when it asked child `index`.
    func probed(_ index: Int, _ outcome: PoolProbe.Outcome) {
        pool.withLock {
            switch outcome {
            case .answered(let reasons): $0.monitor.answered(index, stuckReasons: reasons)
            case .unanswered(let asked, let givenUp): $0.monitor.unanswered(index, asked: asked, givenUp: givenUp)
            }
        }
    }

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<count {
                    group.addTask { try await self.supervise(index); return true }
                }
                group.addTask { try await self.killOverdueChildren(); return false }
                // The killer waits for a shutdown that may never come (--drain): it ends with the children.
                var supervising = count
                while supervising > 0, let isChild = try await group.next() {
                    if isChild { supervising -= 1 }
                }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.beginStopping()
        }
        if let failure = pool.withLock({ $0.failure }) { throw failure }
        logger.info("all worker processes finished")
    }

    /// SIGTERM to every child, and no more restarts.
    private func beginStopping() {
        pool.withLock { $0.monitor.shutdownBegan(at: ContinuousClock.now) }
        signalAll(SIGTERM)
        stop.yield()
    }

    private var isStopping: Bool { pool.withLock { $0.monitor.isShuttingDown } }

    /// After SIGTERM, SIGKILL for every child still running past the shutdown grace: a frozen
    /// child never handles SIGTERM, and the pool must still stop (its batch stays pending for the next run).
    private func killOverdueChildren() async throws {
        for await _ in stops { break }
        try Task.checkCancellation()
        guard let deadline = pool.withLock({ $0.monitor.killDeadline }) else { return }
        try await Task.sleep(until: deadline)
        for (index, pid) in pool.withLock({ $0.monitor.overdue(at: ContinuousClock.now) }) {
            // Only a child not yet reaped: its pid cannot have been reused.
            guard let process = running.withLock({ $0[index] }), process.isRunning, process.processIdentifier == pid else { continue }
            kill(pid, SIGKILL)
            logger.warning(
                "worker process \(index) did not stop within \(pool.withLock { $0.monitor.configuration.shutdownGrace }) of SIGTERM: killed with SIGKILL; its batch in hand stays pending for the next run",
                metadata: ["pid": "\(pid)"]
            )
        }
    }

    /// Runs child `index` until it exits cleanly or shutdown begins; restarts it after crashes.
    private func supervise(_ index: Int) async throws {
        var backoff = Backoff(initial: .milliseconds(500), maximum: .seconds(30))
        var crashes: [ContinuousClock.Instant] = []
        while true {
            let status = try await runChild(index)
            if status.reason == .exit && status.code == 0 {
                update(index) { $0.state = .finished; $0.pid = nil }
                return
            }
            if isStopping || Task.isCancelled {
                update(index) { $0.state = .stopped; $0.pid = nil }
                return
            }
            let now = ContinuousClock.now
            crashes = crashes.filter { now - $0 < Self.crashLoopWindow } + [now]
            let how = status.reason == .uncaughtSignal ? "killed by signal \(status.code)" : "exited with \(status.code)"
            if crashes.count >= Self.crashLoopLimit {
                update(index) { $0.state = .dead; $0.pid = nil }
                logger.critical("worker process \(index) \(how); \(crashes.count) crashes within \(Self.crashLoopWindow): giving up")
                let failure = Failure(description: "worker process \(index) is crash-looping (\(crashes.count) crashes in \(Self.crashLoopWindow))")
                pool.withLock { $0.failure = $0.failure ?? failure }
                // The others finish their batches (or are killed past the grace) before the pool ends.
                beginStopping()
                return
            }
            let delay = backoff.nextDelay()
            update(index) { $0.state = .restarting; $0.pid = nil; $0.restarts += 1 }
            logger.error("worker process \(index) \(how); restarting", metadata: ["delay": "\(delay)", "crashes_last_minute": "\(crashes.count)"])
            try await Task.sleep(for: delay)
            if isStopping {
                update(index) { $0.state = .stopped }
                return
            }
        }
    }

    private func runChild(_ index: Int) async throws -> (reason: Process.TerminationReason, code: Int32) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.executablePath())
        process.arguments = PoolChildLaunch.arguments(shared: arguments, child: index, consumerName: consumerName, basePort: basePort)
        process.environment = PoolChildLaunch.environment(from: ProcessInfo.processInfo.environment, supervisorPID: getpid())
        let (terminations, termination) = AsyncStream.makeStream(of: (Process.TerminationReason, Int32).self)
        process.terminationHandler = { finished in
            self.running.withLock { _ = $0.removeValue(forKey: index) }
            self.pool.withLock { $0.monitor.exited(index) }
            termination.yield((finished.terminationReason, finished.terminationStatus))
            termination.finish()
        }
        let pid = try await spawner.launch(process)
        running.withLock { $0[index] = process }
        pool.withLock {
            $0.children[index].state = .running
            $0.children[index].pid = pid
            // Foundation clears isRunning before it calls the termination handler (which takes this
            // lock): a child that has already exited is not recorded as started after its exit.
            if process.isRunning { $0.monitor.started(index, pid: pid, at: ContinuousClock.now) }
        }
        logger.info("worker process \(index) started", metadata: ["pid": "\(pid)"])
        // A shutdown that began while this child was starting must reach it too.
        if isStopping { kill(pid, SIGTERM) }
        for await status in terminations { return status }
        throw Failure(description: "worker process \(index) ended without a termination status")
    }

    private func signalAll(_ signal: Int32) {
        for process in running.withLock({ Array($0.values) }) where process.isRunning {
            kill(process.processIdentifier, signal)
        }
    }

    private func update(_ index: Int, _ change: (inout Child) -> Void) {
        pool.withLock { change(&$0.children[index]) }
    }

    /// In a child: SIGTERM when the supervisor goes away (and now, if it already has).
    static func terminateWithSupervisor(logger: Logger) {
        guard let parent = ProcessInfo.processInfo.environment[PoolChildLaunch.supervisorVariable].flatMap({ Int32($0) }) else { return }
        if adworker_terminate_with_parent() != 0 {
            logger.warning("cannot arrange to stop with the supervisor; a killed supervisor would leave this worker running")
        }
        if getppid() != parent { kill(getpid(), SIGTERM) }
    }

    static func executablePath() throws -> String {
        try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    }
}

/// Starts child processes from one thread that lives as long as the supervisor: the children's
/// "terminate with parent" (PR_SET_PDEATHSIG) fires when the *thread* that spawned them exits,
/// and the cooperative pool's threads come and go.
actor Spawner {
    private let executor = ThreadExecutor(name: "supervisor")

    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// - Returns: The child's pid.
    func launch(_ process: Process) throws -> Int32 {
        try process.run()
        return process.processIdentifier
    }
}

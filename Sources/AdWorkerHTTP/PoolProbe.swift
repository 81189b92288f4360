import AdWorkerCore
import Foundation
public import ServiceLifecycle

/// Asks every running worker process of a pool for its `/healthz`, all at once, each probe given
/// up after `timeout`, and reports what it found (to the supervisor's ``PoolMonitor``); then
/// waits ``interval`` and asks again. The pool's `/healthz` and its systemd watchdog answer from
/// those reports, never by asking a process themselves.
public struct PoolProbe: Service {
    public static let interval: Duration = .milliseconds(500)

    public enum Outcome: Sendable {
        /// 200, or 503 with the process's own reasons.
        case answered(stuckReasons: [String])
        /// No answer (timed out, refused, not HTTP) to the probe sent at `asked`, given up at `givenUp`.
        case unanswered(asked: ContinuousClock.Instant, givenUp: ContinuousClock.Instant)
    }

    let processes: @Sendable () -> [PoolEndpoint.Process]
    let timeout: Duration
    let report: @Sendable (_ index: Int, _ outcome: Outcome) -> Void

    public init(
        processes: @escaping @Sendable () -> [PoolEndpoint.Process], timeout: Duration,
        report: @escaping @Sendable (_ index: Int, _ outcome: Outcome) -> Void
    ) {
        self.processes = processes
        self.timeout = timeout
        self.report = report
    }

    /// Probes until graceful shutdown or cancellation.
    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while true {
                await probeOnce()
                try await Task.sleep(for: Self.interval)
            }
        }
    }

    func probeOnce() async {
        await withTaskGroup(of: Void.self) { group in
            for process in processes() where process.state == .running {
                guard let port = process.port else { continue }
                group.addTask {
                    let asked = ContinuousClock.now
                    let (status, body) = await PoolEndpoint.fetch(port: port, path: "/healthz", timeout: timeout)
                    switch status {
                    case 200: report(process.index, .answered(stuckReasons: []))
                    case 503:
                        let reasons = (try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["reasons"] as? [String]
                        report(process.index, .answered(stuckReasons: reasons ?? ["stuck"]))
                    default: report(process.index, .unanswered(asked: asked, givenUp: .now))
                    }
                }
            }
        }
    }
}

import Logging
import ServiceLifecycle
import UnixSignals

/// SIGHUP, SIGUSR1 and SIGUSR2, whose default action ends a process at once (no batch committed,
/// no log line): adworker reloads nothing, so each is logged and ignored, as Redis does with
/// SIGHUP. SIGTERM and SIGINT are the ways to stop it.
struct StraySignals: Service {
    static let signals: [UnixSignal] = [.sighup, .sigusr1, .sigusr2]

    let trapped: UnixSignalsSequence
    let logger: Logger

    /// Traps the signals from now until the process exits (the caller keeps the result for as long
    /// as it runs), so that one arriving before this service runs, or after it has stopped logging
    /// at shutdown, is ignored all the same.
    static func trapping(logger: Logger) async -> StraySignals {
        StraySignals(trapped: await UnixSignalsSequence(trapping: signals), logger: logger)
    }

    func run() async throws {
        for await signal in trapped.cancelOnGracefulShutdown() {
            logger.notice("\(signal) ignored: adworker has nothing to reload; SIGTERM or SIGINT stop it gracefully")
        }
    }
}

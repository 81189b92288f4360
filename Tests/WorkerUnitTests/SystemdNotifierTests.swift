#if canImport(Glibc)
import Glibc
#endif
@testable import AdWorkerCore
import AdWorkerTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The notify protocol against a real datagram socket, read the way systemd reads it, with time
/// moved by hand: after each step the notifier sleeps on the test's clock, and everything it sent
/// in that step is already in the socket.
@Suite(.timeLimit(.minutes(1))) struct SystemdNotifierTests {
    /// A bound `SOCK_DGRAM` Unix socket, as systemd's `$NOTIFY_SOCKET`.
    final class NotifySocket: Sendable {
        let path: String
        let descriptor: Int32

        init() throws {
            path = NSTemporaryDirectory() + "adworker-notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
            descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard descriptor >= 0, bound == 0 else { throw POSIXError(.EADDRINUSE) }
        }

        deinit {
            close(descriptor)
            unlink(path)
        }

        /// The messages waiting in the socket, oldest first.
        func received() -> [String] {
            var messages: [String] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(descriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                guard count > 0 else { return messages }
                messages.append(String(decoding: buffer[..<count], as: UTF8.self))
            }
        }
    }

    /// A notifier on a clock moved by hand; `ready` and `reasons` are what it checks.
    final class Running: Sendable {
        let socket: NotifySocket
        let clock = ManualClock()
        let ready = Mutex(false)
        let reasons = Mutex<[String]>([])

        init(socket: NotifySocket) {
            self.socket = socket
        }

        /// Moves time on by `duration` and returns what the notifier sent until it slept again.
        func step(_ duration: Duration) async -> [String] {
            clock.advance(by: duration)
            await clock.sleepers(atLeast: 1)
            return socket.received()
        }
    }

    static func notifier(_ running: Running, watchdog: Duration? = .milliseconds(400)) -> SystemdNotifier<ManualClock> {
        SystemdNotifier(
            socketPath: running.socket.path, watchdogInterval: watchdog, logger: Logger(label: "test"),
            isReady: { running.ready.withLock { $0 } }, unhealthyReasons: { running.reasons.withLock { $0 } }, clock: running.clock
        )
    }

    @Test func startingItPingsTheWatchdogAndChecksReadinessEveryHundredMilliseconds() async throws {
        let running = Running(socket: try NotifySocket())
        let task = Task { try await Self.notifier(running).run() }
        defer { task.cancel() }
        // A start-up waiting for Redis is not a wedge: the watchdog is fed from the first step.
        #expect(await running.clock.sleepers(atLeast: 1) == [.init(offset: .milliseconds(100))])
        let starting = running.socket.received()
        #expect(starting.first == "STATUS=starting", "\(starting)")
        #expect(starting.last == "WATCHDOG=1" && !starting.contains("READY=1"), "\(starting)")
        #expect(await running.step(.milliseconds(100)).isEmpty, "not ready, and half the watchdog interval has not passed")
        #expect(await running.step(.milliseconds(100)) == ["WATCHDOG=1"])

        running.ready.withLock { $0 = true }
        #expect(await running.step(.milliseconds(100)) == ["READY=1", "STATUS=running"])
        // Ready, it checks every quarter watchdog interval and pings every half.
        #expect(await running.clock.sleepers(atLeast: 1) == [.init(offset: .milliseconds(400))])
        #expect(await running.step(.milliseconds(100)) == ["WATCHDOG=1"])
        #expect(await running.step(.milliseconds(100)).isEmpty)
        #expect(await running.step(.milliseconds(100)) == ["WATCHDOG=1"])
    }

    @Test func whileStuckTheWatchdogGoesUnfedAndResumesWithProgress() async throws {
        let running = Running(socket: try NotifySocket())
        running.ready.withLock { $0 = true }
        let task = Task { try await Self.notifier(running).run() }
        defer { task.cancel() }
        await running.clock.sleepers(atLeast: 1)
        #expect(running.socket.received() == ["STATUS=starting", "READY=1", "STATUS=running", "WATCHDOG=1"])

        running.reasons.withLock { $0 = ["training: no batch committed for 130 s"] }
        #expect(await running.step(.milliseconds(100)) == ["STATUS=stuck: training: no batch committed for 130 s"])
        // Two watchdog intervals without a ping: systemd would restart the unit.
        for _ in 0..<8 {
            #expect(await running.step(.milliseconds(100)).isEmpty)
        }
        running.reasons.withLock { $0 = [] }
        #expect(await running.step(.milliseconds(100)) == ["STATUS=running", "WATCHDOG=1"], "pings resume with progress")
    }

    @Test func withoutAWatchdogItChecksEverySecondAndNeverPings() async throws {
        let running = Running(socket: try NotifySocket())
        running.ready.withLock { $0 = true }
        let task = Task { try await Self.notifier(running, watchdog: nil).run() }
        defer { task.cancel() }
        #expect(await running.clock.sleepers(atLeast: 1) == [.init(offset: .seconds(1))])
        #expect(running.socket.received() == ["STATUS=starting", "READY=1", "STATUS=running"])
        #expect(await running.step(.seconds(1)).isEmpty)
    }

    @Test func cancelledItSaysStopping() async throws {
        let running = Running(socket: try NotifySocket())
        let task = Task { try await Self.notifier(running).run() }
        await running.clock.sleepers(atLeast: 1)
        _ = running.socket.received()
        task.cancel()
        try await task.value
        #expect(running.socket.received() == ["STOPPING=1"])
    }

    @Test func onlyTheProcessSystemdNamesFeedsTheWatchdog() {
        let logger = Logger(label: "test")
        let environment = ["NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"]
        let mine = SystemdNotifier(
            environment: environment.merging(["WATCHDOG_PID": "\(getpid())"]) { $1 }, logger: logger, isReady: { true }, unhealthyReasons: { [] }
        )
        #expect(mine?.watchdogInterval == .seconds(30))
        let other = SystemdNotifier(
            environment: environment.merging(["WATCHDOG_PID": "1"]) { $1 }, logger: logger, isReady: { true }, unhealthyReasons: { [] }
        )
        #expect(other != nil && other?.watchdogInterval == nil)
        #expect(SystemdNotifier(environment: [:], logger: logger, isReady: { true }, unhealthyReasons: { [] }) == nil)
    }
}

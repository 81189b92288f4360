#if canImport(Glibc)
import Glibc
#endif
@testable import AdWorkerCore
import Foundation
import Logging
import Synchronization
import Testing

/// The notify protocol against a real datagram socket, read the way systemd reads it.
@Suite struct SystemdNotifierTests {
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

        /// Messages received within `duration`. Polls without blocking, so the notifier's task
        /// gets a thread of the (small) cooperative pool meanwhile.
        func messages(for duration: Duration) async -> [String] {
            var received: [String] = []
            let end = ContinuousClock.now + duration
            var buffer = [UInt8](repeating: 0, count: 4096)
            while ContinuousClock.now < end {
                let count = recv(descriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if count > 0 {
                    received.append(String(decoding: buffer[..<count], as: UTF8.self))
                } else {
                    try? await Task.sleep(for: .milliseconds(10))
                }
            }
            return received
        }

        /// Messages until one equals `message` (included), or nil after `limit`.
        func messages(until message: String, limit: Duration = .seconds(10)) async -> [String]? {
            var received: [String] = []
            let end = ContinuousClock.now + limit
            while ContinuousClock.now < end {
                received += await messages(for: .milliseconds(100))
                if received.contains(message) { return received }
            }
            return nil
        }
    }

    @Test func readyAfterStartUpWatchdogOnlyWhileHealthyStoppingAtTheEnd() async throws {
        let socket = try NotifySocket()
        let ready = Mutex(false)
        let reasons = Mutex<[String]>([])
        let notifier = SystemdNotifier(
            socketPath: socket.path, watchdogInterval: .milliseconds(400), logger: Logger(label: "test"),
            isReady: { ready.withLock { $0 } }, unhealthyReasons: { reasons.withLock { $0 } }
        )
        let task = Task { try await notifier.run() }

        let starting = await socket.messages(until: "WATCHDOG=1") ?? []
        #expect(starting.first == "STATUS=starting", "\(starting)")
        #expect(!starting.contains("READY=1"), "not ready before start-up is done")
        #expect(starting.contains("WATCHDOG=1"), "a start-up waiting for Redis is not a wedge")

        ready.withLock { $0 = true }
        let running = await socket.messages(until: "STATUS=running") ?? []
        #expect(running.firstIndex(of: "READY=1").map { $0 < running.firstIndex(of: "STATUS=running")! } == true, "\(running)")

        reasons.withLock { $0 = ["training: no batch committed for 130 s"] }
        #expect(await socket.messages(until: "STATUS=stuck: training: no batch committed for 130 s") != nil)
        // Two watchdog intervals without a ping: systemd would have restarted the unit.
        _ = await socket.messages(for: .milliseconds(100))
        let whileStuck = await socket.messages(for: .milliseconds(800))
        #expect(!whileStuck.contains("WATCHDOG=1"), "\(whileStuck)")

        reasons.withLock { $0 = [] }
        #expect(await socket.messages(until: "WATCHDOG=1") != nil, "pings resume with progress")

        task.cancel()
        _ = try? await task.value
        #expect(await socket.messages(until: "STOPPING=1", limit: .seconds(2)) != nil)
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

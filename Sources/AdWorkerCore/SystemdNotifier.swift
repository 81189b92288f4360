#if canImport(Glibc)
import Glibc
#endif
public import Logging
public import ServiceLifecycle

/// systemd's notify protocol (`Type=notify`, `WatchdogSec=`): `READY=1` once start-up is done,
/// `WATCHDOG=1` every half watchdog interval while the worker is healthy, `STOPPING=1` at
/// graceful shutdown, and `STATUS=` lines for `systemctl status`. The protocol is one datagram
/// per message to the Unix socket in `$NOTIFY_SOCKET`, so no library is needed.
///
/// Pings stop while ``isHealthy`` says no (a consumer stuck with entries waiting): systemd then
/// kills and restarts the unit after `WatchdogSec`, which is what a wedged process needs.
///
/// Generic over the clock its checks and pings follow: the process's is the continuous clock
/// (the initialisers without a `clock`), a test's one it moves by hand.
public struct SystemdNotifier<NotifierClock: Clock<Duration>>: Service {
    let socketPath: String
    let watchdogInterval: Duration?
    let isReady: @Sendable () -> Bool
    /// Why the process is unhealthy; empty when it is healthy.
    let unhealthyReasons: @Sendable () async -> [String]
    let logger: Logger
    let clock: NotifierClock

    /// How often readiness is checked before `READY=1`.
    static var startupPollInterval: Duration { .milliseconds(100) }

    /// From the environment systemd sets (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`); nil
    /// when the process was not started by systemd with `Type=notify`.
    public init?(
        environment: [String: String], logger: Logger, isReady: @escaping @Sendable () -> Bool,
        unhealthyReasons: @escaping @Sendable () async -> [String], clock: NotifierClock
    ) {
        guard let socket = environment["NOTIFY_SOCKET"], !socket.isEmpty else { return nil }
        var interval: Duration?
        // WATCHDOG_PID names the process the watchdog is for; another one (a child) must not ping.
        if let microseconds = environment["WATCHDOG_USEC"].flatMap({ Int64($0) }), microseconds > 0,
            environment["WATCHDOG_PID"].flatMap({ Int32($0) }).map({ $0 == getpid() }) ?? true
        {
            interval = .microseconds(microseconds)
        }
        self.init(
            socketPath: socket, watchdogInterval: interval, logger: logger, isReady: isReady, unhealthyReasons: unhealthyReasons, clock: clock
        )
    }

    public init(
        socketPath: String, watchdogInterval: Duration?, logger: Logger, isReady: @escaping @Sendable () -> Bool,
        unhealthyReasons: @escaping @Sendable () async -> [String], clock: NotifierClock
    ) {
        self.clock = clock
        self.socketPath = socketPath
        self.watchdogInterval = watchdogInterval
        self.isReady = isReady
        self.unhealthyReasons = unhealthyReasons
        self.logger = logger
    }

    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            try await notifyUntilCancelled()
        }
        send("STOPPING=1")
    }

    private func notifyUntilCancelled() async throws {
        // Before READY the watchdog still runs (systemd starts it with the process), so waiting
        // for Redis at start-up pings too: that wait is visible in /readyz, not a wedge.
        var ready = false
        var lastWatchdog = clock.now.advanced(by: .zero - (watchdogInterval ?? .zero))
        var lastStatus = ""
        send("STATUS=starting")
        while true {
            if !ready && isReady() {
                ready = true
                send("READY=1")
            }
            let reasons = await unhealthyReasons()
            let status = !reasons.isEmpty ? "stuck: " + reasons.joined(separator: "; ") : ready ? "running" : "starting"
            if status != lastStatus {
                send("STATUS=\(status)")
                lastStatus = status
            }
            if let watchdogInterval, reasons.isEmpty, lastWatchdog.duration(to: clock.now) >= watchdogInterval / 2 {
                send("WATCHDOG=1")
                lastWatchdog = clock.now
            }
            let pause = ready ? min(watchdogInterval.map { $0 / 4 } ?? .seconds(1), .seconds(1)) : Self.startupPollInterval
            try await clock.sleep(until: clock.now.advanced(by: pause), tolerance: nil)
        }
    }

    /// One datagram; failures are logged, never fatal (systemd may have gone away at shutdown).
    func send(_ message: String) {
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else {
            logger.warning("systemd notify: no socket", metadata: [LogKey.error: "errno \(errno)"])
            return
        }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(socketPath.utf8)
        // A leading '@' names a socket in the abstract namespace: its first byte is NUL.
        if path.first == UInt8(ascii: "@") { path[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else {
            logger.warning("systemd notify: NOTIFY_SOCKET path too long", metadata: ["path": "\(socketPath)"])
            return
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: path)
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
        let sent = message.utf8CString.withUnsafeBufferPointer { text in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                    sendto(descriptor, text.baseAddress, text.count - 1, Int32(MSG_NOSIGNAL), socketAddress, length)
                }
            }
        }
        if sent < 0 {
            logger.warning("systemd notify failed", metadata: ["message": "\(message)", LogKey.error: "errno \(errno)"])
        }
    }
}

extension SystemdNotifier where NotifierClock == ContinuousClock {
    /// On the continuous clock, from the environment systemd sets; nil when not started by systemd with `Type=notify`.
    public init?(
        environment: [String: String], logger: Logger, isReady: @escaping @Sendable () -> Bool,
        unhealthyReasons: @escaping @Sendable () async -> [String]
    ) {
        self.init(environment: environment, logger: logger, isReady: isReady, unhealthyReasons: unhealthyReasons, clock: ContinuousClock())
    }
}

import AdTelemetryRecords
public import AdWorkerRedis
import Foundation
public import Logging

/// Why a worker refuses to start: another live process uses its consumer name.
public struct ConsumerNameInUse: Error, CustomStringConvertible {
    public var consumerName: String
    public var holder: String

    public var description: String {
        "consumer name '\(consumerName)' is in use by a live process (\(holder)); two processes with one name re-read each other's entries: give each its own --consumer-name (ADWORKER_CONSUMER_NAME)"
    }
}

/// One live process per consumer name, held as a Redis key with an expiry that its holder renews.
///
/// Two processes with one name would each read the other's pending entries as their own and
/// write rows and dead letters twice; refusing the second is clearer than renaming it, since a
/// stable name is how a restarted worker finds its own pending entries. A holder that died
/// without releasing (kill -9) is recognised at once when it ran on this host (its pid is gone or
/// belongs to a process started at another time); a holder elsewhere is waited out, at most one
/// lease duration, and a holder still renewing after that is alive: the worker refuses to start.
struct ConsumerLease: Sendable {
    let key: String
    let consumerName: String
    let duration: Duration
    /// `host=<name> pid=<pid> start=<ticks since boot> id=<random>`: who holds it, and enough to
    /// tell on the same host whether that process still runs.
    let holder: String

    init(streamPrefix: String, consumerName: String, duration: Duration) {
        self.key = streamPrefix + "consumer-lease:" + consumerName
        self.consumerName = consumerName
        self.duration = duration
        let pid = ProcessInfo.processInfo.processIdentifier
        self.holder =
            "host=\(ProcessInfo.processInfo.hostName) pid=\(pid) start=\(Self.startTime(of: pid) ?? "?") id=\(UUID().uuidString.prefix(8))"
    }

    /// Takes the lease, waiting out a holder that may be dead for at most one lease duration.
    func acquire(_ redis: RedisConnection, logger: Logger) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + duration + .seconds(1)
        var replacing = ""
        var logged = false
        while true {
            switch try await take(redis, replacing: replacing) {
            case nil: return
            case let other?:
                if isDeadOnThisHost(other) {
                    logger.notice("consumer name was held by a process of this host that is gone; taking it over", metadata: ["holder": "\(other)"])
                    replacing = other
                    continue
                }
                guard clock.now < deadline else { throw ConsumerNameInUse(consumerName: consumerName, holder: other) }
                if !logged {
                    logger.warning(
                        "consumer name held by another process; waiting for its lease to expire",
                        metadata: ["holder": "\(other)", "wait": "\(duration)"]
                    )
                    logged = true
                }
                try await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    /// Renews the lease every third of its duration until cancelled; throws if another process
    /// took it (after an outage longer than the lease, say), so this one stops instead of sharing.
    func keep(_ redis: RedisConnection, logger: Logger) async throws {
        while true {
            try await Task.sleep(for: duration / 3)
            do {
                if let other = try await take(redis, replacing: "") { throw ConsumerNameInUse(consumerName: consumerName, holder: other) }
            } catch let error as RedisError {
                logger.debug("cannot renew the consumer name's lease yet", metadata: [LogKey.error: "\(error)"])
            }
        }
    }

    func release(_ redis: RedisConnection) async {
        try? await redis.releaseLease(key, heldBy: holder)
    }

    /// nil when taken; otherwise who holds it.
    private func take(_ redis: RedisConnection, replacing: String) async throws -> String? {
        try await redis.takeLease(key, for: holder, duration: duration, replacing: replacing)
    }

    private func isDeadOnThisHost(_ other: String) -> Bool {
        let fields = Dictionary(other.split(separator: " ").compactMap { part -> (String, String)? in
            let pair = part.split(separator: "=", maxSplits: 1)
            return pair.count == 2 ? (String(pair[0]), String(pair[1])) : nil
        }, uniquingKeysWith: { first, _ in first })
        guard fields["host"] == ProcessInfo.processInfo.hostName, let pid = fields["pid"].flatMap({ Int32($0) }) else { return false }
        return Self.startTime(of: pid) != fields["start"]
    }

    /// Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot; nil if none runs.
    static func startTime(of pid: Int32) -> String? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let afterName = stat.range(of: ") ", options: .backwards)
        else { return nil }
        // Fields after the parenthesised name start at field 3.
        let fields = stat[afterName.upperBound...].split(separator: " ")
        return fields.count > 19 ? String(fields[19]) : nil
    }
}

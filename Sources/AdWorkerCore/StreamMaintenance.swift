import AdTelemetryRecords
public import AdWorkerRedis
public import Logging

/// Keeps a stream's memory bounded without losing anything: trims acknowledged history below the
/// oldest entry any consumer group still needs, and removes consumers of our group that have been
/// idle for long and own no pending entries.
///
/// Both run as Lua scripts (``RedisConnection/trimAcknowledged(_:keepingRecent:)``,
/// ``RedisConnection/removeIdleConsumers(of:in:idleLongerThan:)``), so that nothing can happen
/// between looking and acting: a group created, an entry delivered to a consumer about to be removed.
public struct StreamMaintenance: Sendable {
    public let stream: String
    public let group: String
    public let consumerExpiry: Duration
    /// The dead-letter stream keeps at most this many letters, the newest; nil: unbounded.
    public let deadLetterLimit: Int?
    /// Entries this close to the stream's newest id stay, acknowledged or not: a producer whose
    /// pipeline was cut looks in the stream for which of its records were stored, and a record
    /// stored, acknowledged and trimmed meanwhile would be sent twice (``DeliveryContract``).
    /// Nil: trim everything acknowledged (tests).
    public let keepRecent: Duration?

    public static let defaultKeepRecent: Duration = DeliveryContract.keepWindow

    public init(stream: String, group: String, consumerExpiry: Duration, deadLetterLimit: Int? = nil, keepRecent: Duration? = Self.defaultKeepRecent) {
        self.stream = stream
        self.group = group
        self.consumerExpiry = consumerExpiry
        self.deadLetterLimit = deadLetterLimit
        self.keepRecent = keepRecent
    }

    public struct Outcome: Sendable, Equatable {
        public var trimmedEntries = 0
        public var removedConsumers: [String] = []
        /// The oldest dead letters removed beyond ``deadLetterLimit``.
        public var trimmedDeadLetters = 0
    }

    /// One round of trimming and consumer expiry.
    public func run(_ redis: RedisConnection, logger: Logger) async throws -> Outcome {
        var outcome = Outcome()
        if let deadLetterLimit {
            // A dead-letter key of another type must not stop the stream's own trimming and
            // consumer expiry below.
            outcome.trimmedDeadLetters = try await WorkerService.skippingWrongType {
                try await redis.trim(DeadLetter.stream(for: stream), maximumLength: deadLetterLimit)
            } ?? 0
            if outcome.trimmedDeadLetters > 0 {
                logger.warning(
                    "oldest dead letters removed: the dead-letter stream is at its limit",
                    metadata: ["stream": "\(stream)", "trimmed": "\(outcome.trimmedDeadLetters)", "limit": "\(deadLetterLimit)"]
                )
            }
        }
        guard try await redis.exists(stream) else { return outcome }
        outcome.trimmedEntries = try await redis.trimAcknowledged(stream, keepingRecent: keepRecent)
        outcome.removedConsumers = try await redis.removeIdleConsumers(of: group, in: stream, idleLongerThan: consumerExpiry)
        if outcome.trimmedEntries > 0 || !outcome.removedConsumers.isEmpty {
            logger.info(
                "stream maintained",
                metadata: ["stream": "\(stream)", "trimmed": "\(outcome.trimmedEntries)", "removed_consumers": "\(outcome.removedConsumers)"]
            )
        }
        return outcome
    }
}

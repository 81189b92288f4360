import AdTelemetryRecords
public import AdWorkerRedis
public import Logging
import Metrics

/// Keeps a stream's memory bounded without losing anything: trims acknowledged history below the
/// oldest entry any consumer group still needs, and removes consumers of our group that have been
/// idle for long and own no pending entries.
///
/// Both run as Lua scripts, so that nothing can happen between looking and acting: a group
/// created, an entry delivered to a consumer about to be removed.
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

    /// XTRIM MINID at the smallest id some group still needs (its oldest pending entry, or the
    /// first entry after the last one delivered to it) and no later than ARGV[1] ms before the
    /// stream's newest id (ARGV[1] empty: no such bound; nor for ids beyond 15 digits of
    /// milliseconds, hand-written ones a double cannot subtract from exactly). No group: nothing is trimmed.
    ///
    /// Ids are compared and incremented as decimal strings: Lua numbers are doubles, exact only
    /// below 2^53, and an id above that (an explicit `XADD` id) rounded up would trim an entry a
    /// group still needs. Redis writes ids without leading zeros, so the longer number is larger.
    static let trimScript = """
        local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
        if #groups == 0 then return 0 end
        local function less(aMs, aSeq, bMs, bSeq)
          if #aMs ~= #bMs then return #aMs < #bMs end
          if aMs ~= bMs then return aMs < bMs end
          if #aSeq ~= #bSeq then return #aSeq < #bSeq end
          return aSeq < bSeq
        end
        local function increment(digits)
          local bytes = {string.byte(digits, 1, -1)}
          local i = #bytes
          while i >= 1 and bytes[i] == 57 do bytes[i] = 48; i = i - 1 end
          if i == 0 then return '1' .. string.rep('0', #bytes) end
          bytes[i] = bytes[i] + 1
          return string.char(unpack(bytes))
        end
        local maximum = '18446744073709551615'
        local bestMs, bestSeq
        local function consider(id, after)
          local ms, seq = string.match(id, '^(%d+)-(%d+)$')
          if after then
            if seq ~= maximum then seq = increment(seq)
            elseif ms ~= maximum then ms, seq = increment(ms), '0' end
          end
          if bestMs == nil or less(ms, seq, bestMs, bestSeq) then bestMs, bestSeq = ms, seq end
        end
        if ARGV[1] ~= '' then
          local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
          local newestMs = newest and string.match(newest[1], '^(%d+)-')
          if newestMs and #newestMs <= 15 then
            consider(string.format('%d', math.max(0, tonumber(newestMs) - tonumber(ARGV[1]))) .. '-0', false)
          end
        end
        for _, group in ipairs(groups) do
          local fields = {}
          for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
          consider(fields['last-delivered-id'], true)
          if fields['pending'] > 0 then
            consider(redis.call('XPENDING', KEYS[1], fields['name'])[2], false)
          end
        end
        return redis.call('XTRIM', KEYS[1], 'MINID', bestMs .. '-' .. bestSeq)
        """

    /// XGROUP DELCONSUMER for every consumer of the group idle longer than ARGV[2] ms that owns
    /// no pending entries; returns their names.
    static let expireConsumersScript = """
        local removed = {}
        for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
          local fields = {}
          for i = 1, #consumer, 2 do fields[consumer[i]] = consumer[i + 1] end
          if fields['pending'] == 0 and fields['idle'] > tonumber(ARGV[2]) then
            redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
            table.insert(removed, fields['name'])
          end
        end
        return removed
        """

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
                Counter(label: "adworker_dead_letters_trimmed_total", dimensions: [("stream", stream)]).increment(by: outcome.trimmedDeadLetters)
                logger.warning(
                    "oldest dead letters removed: the dead-letter stream is at its limit",
                    metadata: ["stream": "\(stream)", "trimmed": "\(outcome.trimmedDeadLetters)", "limit": "\(deadLetterLimit)"]
                )
            }
        }
        let exists = try await redis.send(RedisCommand("EXISTS", stream))
        guard exists.integer == 1 else { return outcome }
        let trimmed = try await redis.evaluate(Self.trimScript, keys: [stream], arguments: [keepRecent.map { String($0.wholeMilliseconds) } ?? ""])
        let expired = try await redis.evaluate(
            Self.expireConsumersScript, keys: [stream], arguments: [group, String(consumerExpiry.wholeMilliseconds)]
        )
        outcome.trimmedEntries = Int(trimmed.integer ?? 0)
        outcome.removedConsumers = expired.array?.compactMap(\.string) ?? []
        if outcome.trimmedEntries > 0 || !outcome.removedConsumers.isEmpty {
            logger.info(
                "stream maintained",
                metadata: ["stream": "\(stream)", "trimmed": "\(outcome.trimmedEntries)", "removed_consumers": "\(outcome.removedConsumers)"]
            )
        }
        return outcome
    }
}

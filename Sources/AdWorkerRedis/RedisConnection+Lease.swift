import AdTelemetryRecords

/// A key held by one holder at a time, with an expiry its holder renews: one live process per
/// name. Both steps are Lua scripts, so nothing happens between looking at the holder and acting.
extension RedisConnection {
    /// KEYS[1] the key; ARGV[1] the holder, ARGV[2] the expiry in ms, ARGV[3] a holder known to be gone.
    static let takeLeaseScript = """
        local current = redis.call('GET', KEYS[1])
        if current == false or current == ARGV[1] or current == ARGV[3] then
          redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
          return 1
        end
        return current
        """

    static let releaseLeaseScript = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], 1) end
        return 0
        """

    /// Takes (or renews) the lease `key` for `holder`, expiring after `duration`, when it is free,
    /// `holder`'s already, or held by `replacing` (a holder known to be gone; empty: none).
    /// - Returns: nil when taken; otherwise who holds it.
    public func takeLease(_ key: String, for holder: String, duration: Duration, replacing: String) throws(RedisError) -> String? {
        switch try evaluate(Self.takeLeaseScript, keys: [key], arguments: [holder, String(duration.wholeMilliseconds), replacing]) {
        case .integer(1): return nil
        case .bulk(let other): return String(decoding: other, as: UTF8.self)
        case .error(let message): throw RedisError.fromReply(message)
        default: throw RedisError(.unexpectedReply, "taking a lease")
        }
    }

    /// Lets the lease `key` expire at once if `holder` holds it; otherwise leaves it.
    public func releaseLease(_ key: String, heldBy holder: String) throws(RedisError) {
        _ = try evaluate(Self.releaseLeaseScript, keys: [key], arguments: [holder])
    }
}

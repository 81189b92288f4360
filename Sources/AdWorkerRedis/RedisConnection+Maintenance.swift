import AdTelemetryRecords

/// Keeping a stream's memory bounded without losing anything, as Lua scripts: Redis runs a script
/// with nothing in between, so no group is created and no entry delivered between looking and acting.
extension RedisConnection {
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

    /// Trims `stream`'s history below the oldest entry any consumer group still needs (XTRIM
    /// MINID), keeping at least the entries within `keepRecent` of the stream's newest id (nil:
    /// no such bound). A stream without groups is not trimmed.
    /// - Returns: How many entries were removed.
    public func trimAcknowledged(_ stream: String, keepingRecent keepRecent: Duration?) throws(RedisError) -> Int {
        let reply = try evaluate(Self.trimScript, keys: [stream], arguments: [keepRecent.map { String($0.wholeMilliseconds) } ?? ""])
        return Int(try Self.integer(reply, "trimming acknowledged entries"))
    }

    /// Removes the consumers of `group` idle for longer than `idle` that own no pending entries
    /// (XGROUP DELCONSUMER). - Returns: Their names.
    public func removeIdleConsumers(of group: String, in stream: String, idleLongerThan idle: Duration) throws(RedisError) -> [String] {
        let reply = try evaluate(Self.expireConsumersScript, keys: [stream], arguments: [group, String(idle.wholeMilliseconds)])
        guard let names = reply.array else { throw RedisError(.unexpectedReply, "removing idle consumers") }
        return names.compactMap(\.string)
    }
}

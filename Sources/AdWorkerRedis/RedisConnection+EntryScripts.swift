public import AdTelemetryRecords

/// Stream operations that must be atomic or must not send whole entries, as Lua scripts (EVAL):
/// Redis runs a script with nothing in between, and checks each command in it against the
/// caller's ACL like any other.
extension RedisConnection {
    /// KEYS[1] the source stream, KEYS[2] the destination; ARGV[1] the entry's id, the rest the
    /// fields to add. The XADD comes before the XDEL so that a refused XADD (OOM, too many
    /// fields for Lua's stack) leaves everything as it was: a failing script keeps what it wrote.
    static let moveEntryScript = """
        if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
        local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
        redis.call('XDEL', KEYS[1], ARGV[1])
        return id
        """

    /// Adds `fields` to `destination` as a new entry and deletes entry `id` from `source`, in one
    /// script, and only if `id` is still in `source`: of two callers moving the same entry at
    /// once, exactly one adds it.
    ///
    /// On a Redis Cluster both streams must hash to one slot (a hash tag: `x{t}` and `x{t}:dead`),
    /// as for a MULTI/EXEC; otherwise this throws ``RedisError/Code/invalidArgument`` before
    /// sending anything.
    /// - Returns: The new entry's id, or nil if `id` was no longer in `source`.
    public func moveEntry(
        _ id: StreamEntryID, from source: String, to destination: String, fields: StreamFields
    ) throws(RedisError) -> StreamEntryID? {
        if configuration.isCluster, HashSlot(forKey: source) != HashSlot(forKey: destination) {
            throw RedisError(.invalidArgument, "\(source) and \(destination) are in different cluster slots (no shared hash tag)")
        }
        var command = RedisCommand("EVAL", Self.moveEntryScript, "2", source, destination, id.description)
        for field in fields {
            command.append(bytes: field.name)
            command.append(bytes: field.value)
        }
        switch try send(command) {
        case .null: return nil
        case .bulk(let bytes):
            guard let added = StreamEntryID(utf8: bytes) else { throw RedisError(.unexpectedReply, "moving an entry: a malformed id") }
            return added
        case .error(let message): throw RedisError.fromReply(message)
        default: throw RedisError(.unexpectedReply, "moving an entry")
        }
    }

    /// KEYS[1] the stream; ARGV[1] the first id, ARGV[2] the count, ARGV[3] the field's name,
    /// ARGV[4] the bytes of entries to read at most (past the first). One entry per XRANGE, so
    /// that Lua's heap holds about one entry at a time (an entry may be megabytes), not a page.
    static let fieldOfEntriesScript = """
        local result = {}
        local start = ARGV[1]
        local count = tonumber(ARGV[2])
        local budget = tonumber(ARGV[4])
        local bytes = 0
        while #result < count and bytes < budget do
            local entry = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 1)[1]
            if entry == nil then return {0, result} end
            local value = false
            local fields = entry[2]
            for index = 1, #fields - 1, 2 do
                bytes = bytes + #fields[index] + #fields[index + 1]
                if value == false and fields[index] == ARGV[3] then value = fields[index + 1] end
            end
            result[#result + 1] = {entry[1], value}
            start = '(' .. entry[1]
        end
        return {1, result}
        """

    /// Like XRANGE from `start` (inclusive) to the end, up to `count` entries, but returns only
    /// each entry's id and the value of `field` (nil where the entry has none): a script picks
    /// it out, so large entries are not sent. A page also ends once its entries' fields came to
    /// `maximumBytes` (always at least one entry), so that a page of large entries neither fills
    /// Lua's heap nor blocks Redis for long.
    /// - Returns: The page, and whether more may follow it (false: the stream ended within it).
    public func field(
        _ field: String, ofEntriesIn stream: String, from start: StreamEntryID, count: Int, maximumBytes: Int
    ) throws(RedisError) -> (entries: [(id: StreamEntryID, value: [UInt8]?)], more: Bool) {
        let reply = try send(RedisCommand(
            "EVAL", Self.fieldOfEntriesScript, "1", stream, start.description, String(count), field, String(maximumBytes)
        ))
        if case .error(let message) = reply { throw RedisError.fromReply(message) }
        guard let parts = reply.array, parts.count == 2, case .integer(let more) = parts[0], let items = parts[1].array else {
            throw RedisError(.unexpectedReply, "field of entries")
        }
        let entries = try items.map { item throws(RedisError) -> (id: StreamEntryID, value: [UInt8]?) in
            guard let pair = item.array, pair.count == 2, case .bulk(let idBytes) = pair[0], let id = StreamEntryID(utf8: idBytes) else {
                throw RedisError(.unexpectedReply, "field of entries: an entry")
            }
            if case .bulk(let value) = pair[1] { return (id, value) }
            return (id, nil)
        }
        return (entries, more != 0)
    }
}

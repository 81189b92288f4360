public import AdTelemetryRecords

/// Stream operations that must be atomic, as Lua scripts (EVAL):
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
    public func moveEntry(_ id: StreamEntryID, from source: String, to destination: String, fields: StreamFields) throws(RedisError) -> StreamEntryID? {
        if configuration.isCluster, HashSlot.slot(forKey: source) != HashSlot.slot(forKey: destination) {
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
}

public import AdTelemetryRecords
internal import CAdWorkerHiredis

/// One pending entry as the extended `XPENDING` form describes it.
public struct PendingEntry: Sendable, Equatable {
    public var id: StreamEntryID
    public var consumer: String
    /// Time since the entry was last delivered.
    public var idle: Duration
    /// How many times the entry has been delivered (XREADGROUP, XCLAIM and XAUTOCLAIM count).
    public var deliveries: Int
}

/// A consumer as `XINFO CONSUMERS` describes it.
public struct ConsumerInfo: Sendable, Equatable {
    public var name: String
    public var pending: Int
    /// Time since the consumer's last interaction with the server.
    public var idle: Duration
}

/// What one `XAUTOCLAIM` step took over.
public struct AutoClaim: Sendable {
    /// Where the next step starts; `0-0` when the scan has covered the whole pending list.
    public var next: StreamEntryID
    public var entries: [StreamEntry]
    /// Pending entries that no longer exist in the stream; Redis removed them from the pending list.
    public var deleted: [StreamEntryID]

    public init(next: StreamEntryID, entries: [StreamEntry], deleted: [StreamEntryID]) {
        self.next = next
        self.entries = entries
        self.deleted = deleted
    }
}

extension RedisConnection {
    /// XAUTOCLAIM: takes over entries pending for longer than `minimumIdle` on any consumer.
    public func autoClaim(
        _ stream: String, group: String, consumer: String, minimumIdle: Duration, start: StreamEntryID, count: Int
    ) throws(RedisError) -> AutoClaim {
        let command = RedisCommand(
            "XAUTOCLAIM", stream, group, consumer, String(minimumIdle.wholeMilliseconds), start.description, "COUNT", String(count)
        )
        return try pipeline([command]) { reply throws(RedisError) -> AutoClaim in
            let value = reply.pointee
            if value.type == REDIS_REPLY_ERROR {
                throw RedisError.fromReply(String(decoding: UnsafeRawBufferPointer(start: value.str, count: value.len), as: UTF8.self))
            }
            guard value.type == REDIS_REPLY_ARRAY, value.elements >= 2, let cursorReply = value.element[0],
                let next = StreamEntryID(utf8: UnsafeRawBufferPointer(start: cursorReply.pointee.str, count: cursorReply.pointee.len)),
                let entriesReply = value.element[1]
            else { throw RedisError(.unexpectedReply, "XAUTOCLAIM") }
            var deleted: [StreamEntryID] = []
            if value.elements >= 3, let deletedReply = value.element[2], deletedReply.pointee.type == REDIS_REPLY_ARRAY {
                for index in 0..<deletedReply.pointee.elements {
                    guard let item = deletedReply.pointee.element[index],
                        let id = StreamEntryID(utf8: UnsafeRawBufferPointer(start: item.pointee.str, count: item.pointee.len))
                    else { throw RedisError(.unexpectedReply, "XAUTOCLAIM deleted id") }
                    deleted.append(id)
                }
            }
            return AutoClaim(next: next, entries: try Self.decodeEntries(entriesReply), deleted: deleted)
        }[0]
    }

    /// Extended XPENDING: up to `count` pending entries with ids in `range`, optionally of one consumer.
    public func pendingEntries(
        _ stream: String, group: String, in range: ClosedRange<StreamEntryID>, count: Int, consumer: String? = nil
    ) throws(RedisError) -> [PendingEntry] {
        var command = RedisCommand("XPENDING", stream, group, range.lowerBound.description, range.upperBound.description, String(count))
        if let consumer { command.append(consumer) }
        let reply = try send(command)
        if case .error(let message) = reply { throw RedisError.fromReply(message) }
        guard let items = reply.array else { throw RedisError(.unexpectedReply, "XPENDING") }
        return try items.map { item throws(RedisError) -> PendingEntry in
            guard let fields = item.array, fields.count == 4, let id = fields[0].string.flatMap({ StreamEntryID($0) }),
                let consumer = fields[1].string, let idle = fields[2].integer, let deliveries = fields[3].integer
            else { throw RedisError(.unexpectedReply, "XPENDING entry") }
            return PendingEntry(id: id, consumer: consumer, idle: .milliseconds(idle), deliveries: Int(deliveries))
        }
    }

    /// XINFO CONSUMERS of `group`.
    public func consumers(of stream: String, group: String) throws(RedisError) -> [ConsumerInfo] {
        let reply = try send(RedisCommand("XINFO", "CONSUMERS", stream, group))
        if case .error(let message) = reply { throw RedisError.fromReply(message) }
        guard let consumers = reply.array else { throw RedisError(.unexpectedReply, "XINFO CONSUMERS") }
        return consumers.map { consumer in
            var info = ConsumerInfo(name: "", pending: 0, idle: .zero)
            for (name, value) in Self.infoPairs(consumer) {
                switch name {
                case "name": info.name = value.string ?? ""
                case "pending": info.pending = Int(value.integer ?? 0)
                case "idle": info.idle = .milliseconds(value.integer ?? 0)
                default: break
                }
            }
            return info
        }
    }

    /// XDEL. - Returns: how many existed.
    @discardableResult
    public func deleteEntries(_ ids: [StreamEntryID], from stream: String) throws(RedisError) -> Int {
        guard !ids.isEmpty else { return 0 }
        return Int(try Self.integer(try send(RedisCommand(["XDEL", stream] + ids.map(\.description))), "XDEL"))
    }

    /// EVAL: runs a Lua script atomically; an error reply (from Redis or the script) is thrown.
    func evaluate(_ script: String, keys: [String], arguments: [String] = []) throws(RedisError) -> RedisValue {
        let reply = try send(RedisCommand(["EVAL", script, String(keys.count)] + keys + arguments))
        if case .error(let message) = reply { throw RedisError.fromReply(message) }
        return reply
    }

    /// Sends `commands` in one MULTI/EXEC transaction; throws if any of them failed.
    public func transaction(_ commands: [RedisCommand]) throws(RedisError) -> [RedisValue] {
        let replies = try pipeline([RedisCommand("MULTI")] + commands + [RedisCommand("EXEC")], asUnit: true) { reply throws(RedisError) in
            RedisValue(reply)
        }
        for reply in replies {
            if case .error(let message) = reply { throw RedisError.fromReply(message) }
        }
        guard case .array(let results)? = replies.last else { throw RedisError(.unexpectedReply, "EXEC returned no results") }
        for result in results {
            if case .error(let message) = result { throw RedisError.fromReply(message) }
        }
        return results
    }
}

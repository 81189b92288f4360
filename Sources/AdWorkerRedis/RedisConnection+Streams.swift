public import AdTelemetryRecords
internal import CAdWorkerHiredis

/// A consumer group as `XINFO GROUPS` describes it.
public struct ConsumerGroupInfo: Sendable, Equatable {
    public var name: String
    public var consumers: Int
    /// Entries delivered to a consumer and not yet acknowledged.
    public var pending: Int
    public var lastDeliveredID: StreamEntryID?
    /// Entries not yet delivered to the group; `nil` when Redis cannot tell (after deletions).
    public var lag: Int?
}

/// Where a group read starts.
public enum ReadPosition: Sendable, Equatable {
    /// Entries never delivered to any consumer of the group (`>`).
    case new
    /// This consumer's own pending entries after `id` (`0` for all of them).
    case pending(after: StreamEntryID)
}

extension RedisConnection {
    /// Creates `group` on `stream` (and the stream, if missing) starting at the stream's
    /// beginning, so entries sent before the first worker ran are not skipped.
    /// - Returns: `false` if the group already existed.
    ///
    /// A refusal (`OOM` at maxmemory: XGROUP CREATE … MKSTREAM may add a key) is not an error
    /// when the group exists already: that is checked before the refusal is thrown. A key that
    /// is not a stream throws ``RedisError/Code/wrongType`` with the key's name in the message.
    @discardableResult
    public func createGroupIfMissing(_ group: String, on stream: String) throws(RedisError) -> Bool {
        switch try send(RedisCommand("XGROUP", "CREATE", stream, group, "0", "MKSTREAM")) {
        case .status: return true
        case .error(let message):
            let error = RedisError.fromReply(message)
            if error.code == .groupExists { return false }
            if error.code == .wrongType { throw RedisError(.wrongType, "key \(stream) is not a stream (WRONGTYPE)") }
            if try groups(of: stream).contains(where: { $0.name == group }) { return false }
            throw error
        default: throw RedisError(.unexpectedReply, "XGROUP CREATE")
        }
    }

    /// Reads up to `count` entries for `consumer` (XREADGROUP).
    ///
    /// - Parameter block: How long to wait for new entries; must be shorter than the command timeout,
    ///   because hiredis waits on the socket for that long.
    /// - Returns: The entries; empty when the wait ran out. Entries deleted from the stream while
    ///   pending come back with no fields.
    public func readGroup(
        _ group: String, consumer: String, from stream: String, position: ReadPosition = .new, count: Int,
        block: Duration? = nil
    ) throws(RedisError) -> [StreamEntry] {
        var command = RedisCommand("XREADGROUP", "GROUP", group, consumer, "COUNT", String(count))
        if let block {
            guard block < configuration.commandTimeout else {
                throw RedisError(.invalidArgument, "BLOCK \(block) is not shorter than the command timeout")
            }
            command.append("BLOCK")
            command.append(String(max(1, block.wholeMilliseconds)))
        }
        command.append("STREAMS")
        command.append(stream)
        switch position {
        case .new: command.append(">")
        case .pending(let after): command.append(after.description)
        }
        return try arenaExchange(command) { (reply: inout ArenaReply) throws(RedisError) in try Self.decodeReadReply(&reply) }
    }

    /// Acknowledges entries (XACK). - Returns: how many were pending and now are not.
    @discardableResult
    public func acknowledge(_ ids: [StreamEntryID], in stream: String, group: String) throws(RedisError) -> Int {
        guard !ids.isEmpty else { return 0 }
        let reply = try send(Self.acknowledgeCommand(ids, in: stream, group: group))
        return Int(try Self.integer(reply, "XACK"))
    }

    /// Adds `additions` (XADD commands) and acknowledges `ids` in one MULTI/EXEC transaction:
    /// either every dead letter is written and its entry acknowledged, or nothing is.
    public func acknowledge(
        _ ids: [StreamEntryID], in stream: String, group: String, addingAtomically additions: [RedisCommand]
    ) throws(RedisError) {
        guard !additions.isEmpty else {
            try acknowledge(ids, in: stream, group: group)
            return
        }
        var commands = additions
        if !ids.isEmpty { commands.append(Self.acknowledgeCommand(ids, in: stream, group: group)) }
        _ = try transaction(commands)
    }

    /// XTRIM MAXLEN (exact): keeps the newest `maximumLength` entries. - Returns: entries removed.
    @discardableResult
    public func trim(_ stream: String, maximumLength: Int) throws(RedisError) -> Int {
        Int(try Self.integer(try send(RedisCommand("XTRIM", stream, "MAXLEN", String(maximumLength))), "XTRIM"))
    }

    /// XLEN: entries in the stream (0 if it does not exist).
    public func streamLength(_ stream: String) throws(RedisError) -> Int {
        Int(try Self.integer(try send(RedisCommand("XLEN", stream)), "XLEN"))
    }

    /// The number of entries delivered to `group` and not yet acknowledged (XPENDING summary).
    public func pendingCount(_ stream: String, group: String) throws(RedisError) -> Int {
        let reply = try send(RedisCommand("XPENDING", stream, group))
        if case .error(let message) = reply { throw RedisError.fromReply(message) }
        guard let count = reply.array?.first?.integer else { throw RedisError(.unexpectedReply, "XPENDING") }
        return Int(count)
    }

    /// XINFO GROUPS: every consumer group of `stream`; empty if the stream does not exist.
    public func groups(of stream: String) throws(RedisError) -> [ConsumerGroupInfo] {
        var reply = try send(RedisCommand("XINFO", "GROUPS", stream))
        // A missing stream gets the generic ERR code: whether the key exists says it, not the text.
        // A key that exists by the time EXISTS asks was made in between (XGROUP CREATE MKSTREAM):
        // asked once more, it has its groups.
        if case .error(let message) = reply, RedisError.fromReply(message).code == .serverError {
            guard try exists(stream) else { return [] }
            reply = try send(RedisCommand("XINFO", "GROUPS", stream))
        }
        if case .error(let message) = reply { throw RedisError.fromReply(message) }
        guard let groups = reply.array else { throw RedisError(.unexpectedReply, "XINFO GROUPS") }
        return groups.map { group in
            var info = ConsumerGroupInfo(name: "", consumers: 0, pending: 0, lastDeliveredID: nil, lag: nil)
            for (name, value) in Self.infoPairs(group) {
                switch name {
                case "name": info.name = value.string ?? ""
                case "consumers": info.consumers = Int(value.integer ?? 0)
                case "pending": info.pending = Int(value.integer ?? 0)
                case "last-delivered-id": info.lastDeliveredID = value.string.flatMap { StreamEntryID($0) }
                case "lag": info.lag = value.integer.map { Int($0) }
                default: break
                }
            }
            return info
        }
    }

    /// XRANGE from `start` (inclusive; the whole stream by default) to the end, up to `count` entries.
    public func range(
        _ stream: String, from start: StreamEntryID = StreamEntryID(milliseconds: 0, sequence: 0), count: Int
    ) throws(RedisError) -> [StreamEntry] {
        let command = RedisCommand("XRANGE", stream, start.description, "+", "COUNT", String(count))
        return try pipeline([command]) { reply throws(RedisError) in try Self.decodeEntries(reply) }[0]
    }

    /// XINFO's flat `[name, value, name, value, …]` records as (name, value) pairs.
    static func infoPairs(_ record: RedisValue) -> [(name: String?, value: RedisValue)] {
        let items = record.array ?? []
        return stride(from: 0, to: items.count - 1, by: 2).map { (items[$0].string, items[$0 + 1]) }
    }

    /// DEL: removes keys (tests and `bench` clean up with it). - Returns: how many existed.
    @discardableResult
    public func delete(_ keys: [String]) throws(RedisError) -> Int {
        guard !keys.isEmpty else { return 0 }
        return Int(try Self.integer(try send(RedisCommand(["DEL"] + keys)), "DEL"))
    }

    /// EXISTS: whether `key` exists.
    public func exists(_ key: String) throws(RedisError) -> Bool {
        try Self.integer(try send(RedisCommand("EXISTS", key)), "EXISTS") == 1
    }

    static func acknowledgeCommand(_ ids: [StreamEntryID], in stream: String, group: String) -> RedisCommand {
        var command = RedisCommand("XACK", stream, group)
        for id in ids { id.withUTF8 { command.append(bytes: $0) } }
        return command
    }

    static func integer(_ reply: RedisValue, _ commandName: String) throws(RedisError) -> Int64 {
        switch reply {
        case .integer(let value): return value
        case .error(let message): throw RedisError.fromReply(message)
        default: throw RedisError(.unexpectedReply, commandName)
        }
    }

    /// XREADGROUP's `[[stream, [[id, [field, value, …]], …]]]`, or nil when BLOCK ran out.
    static func decodeReadReply(_ reply: inout ArenaReply) throws(RedisError) -> [StreamEntry] {
        guard let top = reply.next() else { throw RedisError(.unexpectedReply, "XREADGROUP: empty reply") }
        switch top.type {
        case REDIS_REPLY_NIL:
            return []
        case REDIS_REPLY_ERROR:
            throw RedisError.fromReply(String(decoding: top.text, as: UTF8.self))
        case REDIS_REPLY_ARRAY:
            var entries: [StreamEntry] = []
            for _ in 0..<top.elements {
                guard let pair = reply.next(), pair.type == REDIS_REPLY_ARRAY, pair.elements == 2,
                    let name = reply.next(), name.isString, let list = reply.next(), list.type == REDIS_REPLY_ARRAY
                else { throw RedisError(.unexpectedReply, "XREADGROUP stream element") }
                entries.reserveCapacity(entries.count + list.elements)
                for _ in 0..<list.elements {
                    guard let entry = reply.next(), entry.type == REDIS_REPLY_ARRAY, entry.elements == 2,
                        let idNode = reply.next(), idNode.isString, let id = StreamEntryID(utf8: idNode.text),
                        let fieldsNode = reply.next()
                    else { throw RedisError(.unexpectedReply, "stream entry") }
                    var fields = StreamFields()
                    // An entry deleted while pending comes back with nil fields: it stays empty.
                    if fieldsNode.type == REDIS_REPLY_ARRAY {
                        fields.reserveCapacity(fields: fieldsNode.elements / 2, bytes: reply.textLength(ofNext: fieldsNode.elements))
                        var remaining = fieldsNode.elements
                        while remaining >= 2, let field = reply.next(), let value = reply.next() {
                            fields.append(name: field.text, value: value.text)
                            remaining -= 2
                        }
                        if remaining == 1 { _ = reply.next() }
                    }
                    entries.append(StreamEntry(id: id, fields: fields))
                }
            }
            return entries
        default:
            throw RedisError(.unexpectedReply, "XREADGROUP")
        }
    }

    /// `[[id, [field, value, …]], …]`, as XRANGE, XREADGROUP and XAUTOCLAIM return entries.
    static func decodeEntries(_ reply: UnsafePointer<redisReply>) throws(RedisError) -> [StreamEntry] {
        let list = reply.pointee
        if list.type == REDIS_REPLY_ERROR {
            throw RedisError.fromReply(String(decoding: UnsafeRawBufferPointer(start: list.str, count: list.len), as: UTF8.self))
        }
        guard list.type == REDIS_REPLY_ARRAY else { throw RedisError(.unexpectedReply, "entry list") }
        var entries: [StreamEntry] = []
        entries.reserveCapacity(list.elements)
        for index in 0..<list.elements {
            guard let entryReply = list.element[index], entryReply.pointee.type == REDIS_REPLY_ARRAY,
                entryReply.pointee.elements == 2, let idReply = entryReply.pointee.element[0],
                let id = StreamEntryID(utf8: UnsafeRawBufferPointer(start: idReply.pointee.str, count: idReply.pointee.len))
            else { throw RedisError(.unexpectedReply, "stream entry") }
            var fields = StreamFields()
            if let fieldsReply = entryReply.pointee.element[1], fieldsReply.pointee.type == REDIS_REPLY_ARRAY {
                let pairs = fieldsReply.pointee
                var total = 0
                for item in 0..<pairs.elements { total += pairs.element[item]?.pointee.len ?? 0 }
                fields.reserveCapacity(fields: pairs.elements / 2, bytes: total)
                for item in stride(from: 0, to: pairs.elements - 1, by: 2) {
                    guard let name = pairs.element[item], let value = pairs.element[item + 1] else { continue }
                    fields.append(
                        name: UnsafeRawBufferPointer(start: name.pointee.str, count: name.pointee.len),
                        value: UnsafeRawBufferPointer(start: value.pointee.str, count: value.pointee.len)
                    )
                }
            }
            entries.append(StreamEntry(id: id, fields: fields))
        }
        return entries
    }
}

public import AdTelemetryRecords
internal import CAdWorkerHiredis

/// Confirmed means replicated (``RedisConfiguration/replicaWait``): a write counts as done once
/// enough replicas acknowledged it, so a failover (a primary killed or frozen, a replica promoted)
/// cannot lose it; and an entry is stored only once they hold it, so a failover cannot give its
/// id to another record after its row exists.
extension RedisConnection {
    /// `WAIT replicas timeout`: blocks until the replicas acknowledged every write this
    /// connection made, or the timeout passes. Its reply is how many did.
    static func waitCommand(_ wait: RedisReplicaWait) -> RedisCommand {
        RedisCommand("WAIT", String(wait.replicas), String(wait.timeout.wholeMilliseconds))
    }

    /// Sends XADD commands pipelined, followed by a WAIT when ``RedisConfiguration/replicaWait``
    /// is set. One result per command, in order: the new entry's id or why that one failed. An
    /// entry added but not acknowledged by enough replicas fails with
    /// ``RedisError/Code/replicationShortfall``: it is in the stream, and may not survive a
    /// failover, so its outcome counts as unknown (looked for, then confirmed, before a resend).
    public func add(_ commands: [RedisCommand]) throws(RedisError) -> [Result<StreamEntryID, RedisError>] {
        guard let wait = configuration.replicaWait, !commands.isEmpty else { return try pipeline(commands, decode: Self.entryID) }
        let redirectsBefore = redirectsFollowed
        var position = 0
        let replies = try pipeline(commands + [Self.waitCommand(wait)]) { reply throws(RedisError) -> AddReply in
            defer { position += 1 }
            guard position == commands.count else { return .entry(try Self.entryID(reply)) }
            // WAIT's reply: the replicas that hold everything before it.
            return .replicas(reply.pointee.type == REDIS_REPLY_INTEGER ? Int(reply.pointee.integer) : 0)
        }
        var results = replies.compactMap { if case .entry(let result) = $0 { result } else { nil } }
        let acknowledged = replies.last.flatMap { if case .replicas(let count) = $0 { count } else { nil } } ?? 0
        // A redirected pipeline went to more than one link; its WAIT covers only its own.
        guard acknowledged < wait.replicas || redirectsFollowed != redirectsBefore else { return results }
        let shortfall = RedisError(.replicationShortfall, "\(acknowledged) of \(wait.replicas) replicas acknowledged within \(wait.timeout)")
        for index in results.indices where (try? results[index].get()) != nil { results[index] = .failure(shortfall) }
        return results
    }

    private enum AddReply {
        case entry(Result<StreamEntryID, RedisError>)
        case replicas(Int)
    }

    /// One XADD reply: the entry's id, or why it failed.
    static func entryID(_ reply: UnsafePointer<redisReply>) throws(RedisError) -> Result<StreamEntryID, RedisError> {
        let value = reply.pointee
        let text = UnsafeRawBufferPointer(start: value.str, count: value.len)
        switch value.type {
        case REDIS_REPLY_STRING:
            if let id = StreamEntryID(utf8: text) { return .success(id) }
            return .failure(RedisError(.unexpectedReply, "XADD returned a malformed id"))
        case REDIS_REPLY_ERROR:
            return .failure(RedisError.fromReply(String(decoding: text, as: UTF8.self)))
        default:
            return .failure(RedisError(.unexpectedReply, "XADD"))
        }
    }

    /// Throws ``RedisError/Code/replicationShortfall`` unless ``RedisConfiguration/replicaWait``'s
    /// replicas acknowledged, within its timeout, everything the primary held when this
    /// connection's last command ran: Redis sets a client's WAIT offset after every command, reads
    /// included, so after an XREADGROUP or an XRANGE this covers the entries it returned, whoever
    /// wrote them. Nothing without the setting.
    public func waitForReplicas() throws(RedisError) {
        guard let wait = configuration.replicaWait else { return }
        let redirectsBefore = redirectsFollowed
        let reply = try send(Self.waitCommand(wait))
        if case .error(let message) = reply { throw RedisError.fromReply(message) }
        guard let acknowledged = reply.integer.map({ Int($0) }) else { throw RedisError(.unexpectedReply, "WAIT") }
        guard acknowledged < wait.replicas || redirectsFollowed != redirectsBefore else { return }
        throw RedisError(.replicationShortfall, "\(acknowledged) of \(wait.replicas) replicas acknowledged within \(wait.timeout)")
    }
}

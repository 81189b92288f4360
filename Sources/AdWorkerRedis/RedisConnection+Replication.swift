public import AdTelemetryRecords
#if canImport(Glibc)
import Glibc
#endif
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
            // WAIT's reply: the replicas that hold everything before it, or why it was refused.
            switch reply.pointee.type {
            case REDIS_REPLY_INTEGER: return .replicas(Int(reply.pointee.integer))
            case REDIS_REPLY_ERROR: return .waitRefused(String(decoding: UnsafeRawBufferPointer(start: reply.pointee.str, count: reply.pointee.len), as: UTF8.self))
            default: return .waitRefused("WAIT: unexpected reply")
            }
        }
        var results = replies.compactMap { if case .entry(let result) = $0 { result } else { nil } }
        let shortfall: RedisError
        switch replies.last {
        case .replicas(let acknowledged)? where acknowledged < wait.replicas:
            shortfall = Self.shortfall(acknowledged, wait)
        case .replicas?:
            // A redirected pipeline went to more than one link; its WAIT covers only its own.
            guard redirectsFollowed != redirectsBefore else { return results }
            shortfall = RedisError(.replicationShortfall, "redirected mid-pipeline: its WAIT does not cover every entry")
        case .waitRefused(let message)?:
            // Stored, and not known to be replicated (an ACL without +wait, say): unconfirmed.
            shortfall = RedisError(.replicationShortfall, "WAIT refused: \(message)")
        default:
            shortfall = RedisError(.unexpectedReply, "no WAIT reply")
        }
        for index in results.indices where (try? results[index].get()) != nil { results[index] = .failure(shortfall) }
        return results
    }

    private enum AddReply {
        case entry(Result<StreamEntryID, RedisError>)
        case replicas(Int)
        case waitRefused(String)
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

    /// After a write on this connection (a dead-letter MULTI): throws
    /// ``RedisError/Code/replicationShortfall`` unless ``RedisConfiguration/replicaWait``'s
    /// replicas acknowledged it within the timeout. WAIT covers this client's last *replicated*
    /// write (Redis 7.2 and later move a client's WAIT offset only then; 7.0 not for a blocked
    /// read answered later), never what a read returned. Nothing without the setting.
    public func waitForReplicas() throws(RedisError) {
        guard let wait = configuration.replicaWait else { return }
        try Self.check(waitReply: try send(Self.waitCommand(wait)), wait)
    }

    /// A WAIT's reply: its error, or a shortfall when fewer replicas than asked acknowledged.
    private static func check(waitReply reply: RedisValue, _ wait: RedisReplicaWait) throws(RedisError) {
        if case .error(let message) = reply { throw RedisError.fromReply(message) }
        guard let acknowledged = reply.integer.map({ Int($0) }) else { throw RedisError(.unexpectedReply, "WAIT") }
        guard acknowledged < wait.replicas else { return }
        throw shortfall(acknowledged, wait)
    }

    static func shortfall(_ acknowledged: Int, _ wait: RedisReplicaWait) -> RedisError {
        RedisError(.replicationShortfall, "\(acknowledged) of \(wait.replicas) replicas acknowledged within \(wait.timeout)")
    }

    /// Entries this consumer read or claimed, up to `newest`, are held by the replicas: first a
    /// replicated write after them on this connection (`XCLAIM … 0 newest JUSTID`: this consumer
    /// claims its own newest entry again, which counts no delivery), then WAIT, in one round trip.
    /// - Throws: ``RedisError/Code/replicationShortfall`` when they are not (yet), or the claim was
    ///   redirected (a cluster slot moving: its WAIT went to another node);
    ///   ``RedisError/Code/connectionLost`` when the primary now serving the stream does not hold
    ///   `newest` as this consumer's: they were read from a primary a failover replaced (a frozen
    ///   one that woke up), and are gone. The outcome of the read is then unknown: the consumer
    ///   reads its pending entries again, from the new primary.
    public func waitForReplicas(holding newest: StreamEntryID, of stream: String, group: String, consumer: String) throws(RedisError) {
        guard let wait = configuration.replicaWait else { return }
        let redirectsBefore = redirectsFollowed
        let claim = RedisCommand("XCLAIM", stream, group, consumer, "0", newest.description, "JUSTID")
        let replies = try pipeline([claim, Self.waitCommand(wait)])
        // Moved (the node is a replica now): its WAIT answered for the old node; ask the new one.
        guard redirectsFollowed == redirectsBefore else {
            throw RedisError(.replicationShortfall, "the slot moved while waiting for replicas")
        }
        let gone = RedisError(.connectionLost, "entry \(newest) of \(stream) is not this consumer's on the primary now serving it: read from one a failover replaced")
        if case .error(let message) = replies[0] {
            let error = RedisError.fromReply(message)
            // A primary demoted under Sentinel: what was read there is read again from the new one.
            throw error.code == .readOnlyReplica ? gone : error
        }
        guard case .array(let claimed) = replies[0], claimed.contains(where: { $0.string == newest.description }) else { throw gone }
        try Self.check(waitReply: replies[1], wait)
    }

    /// Whether enough replicas hold everything the primary holds now, entries other connections
    /// wrote included (found by a lookup after a cut pipeline: a WAIT here covers only this
    /// connection's replicated writes, none after a reconnect). Asks `ROLE` until the replicas'
    /// acknowledged offsets reach the primary's offset of now; replicas report theirs once a
    /// second, so this waits up to the WAIT timeout or 2 s, whichever is longer.
    /// - Throws: ``RedisError/Code/replicationShortfall`` when they did not in time,
    ///   ``RedisError/Code/readOnlyReplica`` when this node is no longer a primary.
    public func confirmReplicated() throws(RedisError) {
        guard let wait = configuration.replicaWait else { return }
        let patience = max(wait.timeout, .seconds(2))
        let deadline = ContinuousClock.now + patience
        let target = try replicationRole().primaryOffset
        while true {
            let holding = try replicationRole().replicaOffsets.count { $0 >= target }
            if holding >= wait.replicas { return }
            guard ContinuousClock.now < deadline else {
                throw RedisError(.replicationShortfall, "\(holding) of \(wait.replicas) replicas reached offset \(target) within \(patience)")
            }
            usleep(50_000)
        }
    }

    /// `ROLE` of a primary: its replication offset and each replica's acknowledged one.
    private func replicationRole() throws(RedisError) -> (primaryOffset: Int64, replicaOffsets: [Int64]) {
        let reply = try send(RedisCommand("ROLE"))
        if case .error(let message) = reply { throw RedisError.fromReply(message) }
        guard case .array(let fields) = reply, let role = fields.first?.string else { throw RedisError(.unexpectedReply, "ROLE") }
        guard role == "master" else {
            if configuration.sentinel != nil, link != nil { forgetDemotedPrimary() }
            throw RedisError(.readOnlyReplica, "the node is a \(role) now")
        }
        // ["master", offset, [[host, port, offset], …]]; a replica's offset is a bulk string.
        guard fields.count == 3, let offset = fields[1].integer, case .array(let replicas) = fields[2] else {
            throw RedisError(.unexpectedReply, "ROLE")
        }
        let offsets = replicas.compactMap { replica -> Int64? in
            guard case .array(let parts) = replica, parts.count == 3 else { return nil }
            return parts[2].integer ?? parts[2].string.flatMap { Int64($0) }
        }
        return (offset, offsets)
    }
}

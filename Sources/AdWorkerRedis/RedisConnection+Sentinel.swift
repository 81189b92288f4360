internal import CAdWorkerHiredis
internal import CAdWorkerRedisTransport
import Logging

/// Sentinel mode (``RedisConfiguration/sentinel``): the connection asks the sentinels which node
/// is the master's primary (`SENTINEL GET-MASTER-ADDR-BY-NAME`) and talks to it. It asks again
/// after a lost connection (the primary died; its replica is promoted) and after a READONLY reply
/// (the node it talks to was demoted to a replica, or came back as one), so a failover is
/// followed without a restart; the callers' retries with backoff cover the failover itself.
extension RedisConnection {
    /// The primary the first answering sentinel names.
    func askSentinels() throws(RedisError) -> RedisNodeAddress {
        let sentinel = configuration.sentinel!
        var lastError = RedisError(.connectionFailed, "no sentinel to ask (REDIS_SENTINELS is empty)")
        for node in sentinel.nodes {
            do throws(RedisError) {
                let probe = try open(node, credentials: (sentinel.username, sentinel.password))
                // A transport failure has freed the probe already (forget).
                let reply = try roundTrip([RedisCommand("SENTINEL", "GET-MASTER-ADDR-BY-NAME", sentinel.masterName)], on: probe)[0]
                adw_link_free(probe)
                if case .error(let message) = reply { throw RedisError.fromReply(message) }
                guard let fields = reply.array, fields.count == 2, let host = fields[0].string,
                    let port = fields[1].string.flatMap({ Int($0) })
                else {
                    lastError = RedisError(
                        .unknownMaster, "sentinel \(node) knows no master named \(sentinel.masterName): check REDIS_SENTINEL_MASTER")
                    continue
                }
                return RedisNodeAddress(host: host, port: port)
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// The node this connection talks to now (under Sentinel, the primary the sentinels named;
    /// on a cluster, the slot's primary); nil while not connected.
    public var connectedNode: RedisNodeAddress? {
        guard link != nil else { return nil }
        return discoveredNode ?? RedisNodeAddress(host: configuration.host, port: configuration.port)
    }

    /// Exchanges `commands` with the primary and, when it answered READONLY (demoted), forgets it,
    /// so the next command asks the sentinels again.
    func exchangeWithPrimary<Decoded>(
        _ commands: [RedisCommand], decode: (UnsafePointer<redisReply>) throws(RedisError) -> Decoded
    ) throws(RedisError) -> [Decoded] {
        let primary = link!
        var demoted = false
        // Also when decoding throws; not when the exchange failed (the link is gone already).
        defer { if demoted && link == primary { forgetDemotedPrimary() } }
        return try exchange(commands, on: primary) { raw throws(RedisError) in
            if Self.isReadOnlyReply(raw) { demoted = true }
            return try decode(raw)
        }
    }

    func forgetDemotedPrimary() {
        logger.notice("redis primary answers as a replica; asking the sentinels again", metadata: ["was": "\(discoveredNode.map(\.description) ?? "?")"])
        forget(link!)
    }

    static func isReadOnlyReply(_ reply: UnsafePointer<redisReply>) -> Bool {
        reply.pointee.type == REDIS_REPLY_ERROR && RedisError.fromReply(String(decoding: UnsafeRawBufferPointer(start: reply.pointee.str, count: reply.pointee.len), as: UTF8.self)).code == .readOnlyReplica
    }

    static func isReadOnlyReply(_ reply: ArenaReply) -> Bool {
        var reply = reply
        guard let first = reply.next(), first.type == REDIS_REPLY_ERROR else { return false }
        return RedisError.fromReply(String(decoding: first.text, as: UTF8.self)).code == .readOnlyReplica
    }
}

internal import CAdWorkerHiredis
internal import CAdWorkerRedisTransport
import Logging

/// Cluster mode (``RedisConfiguration/clusterNodes`` set): hiredis 0.14 knows nothing of Redis
/// Cluster, so the routing is here. A connection serves one slot (``RedisConfiguration/routingSlot``:
/// one stream and its dead letters, by their shared hash tag). It asks the cluster which primary
/// serves that slot, talks to it, and follows the cluster as it changes: `MOVED` and `ASK` as
/// ``RedirectStateMachine`` decides; after a lost connection (a primary killed, its replica
/// promoted) the next command asks the cluster again, seeds and the nodes of the last map in turn.
extension RedisConnection {
    /// The host this connection talks to, for redirects and maps that name none.
    var currentHost: String { discoveredNode?.host ?? configuration.host }

    /// The slot map as the first answering node (of the last map's, then the seeds) tells it.
    public func slotMap() throws(RedisError) -> SlotMap {
        try askForSlotMap().map
    }

    /// The primary that serves this connection's slot (any answering node without one).
    func discoverNode() throws(RedisError) -> RedisNodeAddress {
        let (map, answered) = try askForSlotMap()
        guard let slot = configuration.routingSlot else { return answered }
        guard let primary = map.primary(for: slot) else {
            throw RedisError(.clusterDown, "no node of the cluster serves slot \(slot) (map from \(answered))")
        }
        return primary.address
    }

    private func askForSlotMap() throws(RedisError) -> (map: SlotMap, answered: RedisNodeAddress) {
        var candidates: [RedisNodeAddress] = []
        for node in knownNodes + configuration.clusterNodes where !candidates.contains(node) { candidates.append(node) }
        var lastError = RedisError(.connectionFailed, "no cluster node to ask (REDIS_CLUSTER_NODES is empty)")
        for node in candidates {
            do {
                let probe = try open(node)
                // A transport failure has freed the probe already (forget).
                var reply = try roundTrip([RedisCommand("CLUSTER", "SHARDS")], on: probe)[0]
                var map = SlotMap(shardsReply: reply, replyingHost: node.host, tls: configuration.tls != nil)
                if case .error = reply {
                    // Redis before 7.0 has only CLUSTER SLOTS.
                    reply = try roundTrip([RedisCommand("CLUSTER", "SLOTS")], on: probe)[0]
                    map = SlotMap(slotsReply: reply, replyingHost: node.host)
                }
                adw_link_free(probe)
                guard let map, !map.shards.isEmpty else {
                    lastError = RedisError(
                        .serverError, "\(node) gave no cluster slot map (\(reply.errorText ?? "empty")): is it a Redis Cluster node?")
                    continue
                }
                knownNodes = map.shards.map(\.primary.address) + map.shards.flatMap { $0.replicas.map(\.address) }
                return (map, node)
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// Moves the connection to `node`, which serves its slot from now on.
    func retarget(to node: RedisNodeAddress) {
        logger.notice("redis cluster slot moved; following it", metadata: ["from": "\(discoveredNode.map(\.description) ?? "?")", "to": "\(node)"])
        if let link {
            adw_link_free(link)
            self.link = nil
        }
        discoveredNode = node
    }

    /// Sends `commands` to the slot's primary and follows the cluster's redirects as
    /// ``RedirectStateMachine`` decides, until every command has its answer.
    func exchangeFollowingRedirects<Decoded>(
        _ commands: [RedisCommand], asUnit: Bool, decode: (UnsafePointer<redisReply>) throws(RedisError) -> Decoded
    ) throws(RedisError) -> [Decoded] {
        var redirects = RedirectStateMachine<Decoded>(commandCount: commands.count, asUnit: asUnit)
        while true {
            let batch = redirects.outstanding.map { commands[$0] }
            let replies: [RedirectStateMachine<Decoded>.Routed]
            do throws(RedisError) {
                switch redirects.target {
                case .asking(let node):
                    replies = try exchangeAsking(batch, at: node, asUnit: asUnit, decode: decode)
                case .slotOwner:
                    try ensureConnected()
                    let host = currentHost
                    replies = try exchange(batch, on: link!) { raw throws(RedisError) in try Self.route(raw, host: host, decode: decode) }
                }
            } catch {
                throw redirects.transportFailed(error)
            }
            switch redirects.received(replies) {
            case .finished(let answers): return answers
            case .failed(let error): throw error
            case .move(let node):
                redirectsFollowed += 1
                retarget(to: node)
            case .send: redirectsFollowed += 1
            }
        }
    }

    /// Sends `commands` once to the node importing the slot, each after `ASKING` (the whole
    /// MULTI…EXEC after one: inside a transaction the flag lasts until EXEC).
    private func exchangeAsking<Decoded>(
        _ commands: [RedisCommand], at node: RedisNodeAddress, asUnit: Bool,
        decode: (UnsafePointer<redisReply>) throws(RedisError) -> Decoded
    ) throws(RedisError) -> [RedirectStateMachine<Decoded>.Routed] {
        let asking = RedisCommand("ASKING")
        let sent = asUnit ? [asking] + commands : commands.flatMap { [asking, $0] }
        let target = try open(node)
        var position = 0
        // Replies that do not decode come back as failures, so that the exchange throws only when
        // the connection failed, and then it has freed `target` itself.
        let outcomes = try exchange(sent, on: target) { raw -> Result<RedirectStateMachine<Decoded>.Routed, RedisError>? in
            defer { position += 1 }
            // ASKING's own OK is no command's answer.
            let isAsking = asUnit ? position == 0 : position % 2 == 0
            return isAsking ? nil : Result { () throws(RedisError) in try Self.route(raw, host: node.host, decode: decode) }
        }
        adw_link_free(target)
        var replies: [RedirectStateMachine<Decoded>.Routed] = []
        for case let outcome? in outcomes {
            replies.append(try outcome.get())
        }
        return replies
    }

    /// A reply, or the redirect it is (decoded as best it can be, for the caller once redirects run out).
    private static func route<Decoded>(
        _ raw: UnsafePointer<redisReply>, host: String, decode: (UnsafePointer<redisReply>) throws(RedisError) -> Decoded
    ) throws(RedisError) -> RedirectStateMachine<Decoded>.Routed {
        if let redirect = redirect(in: raw, host: host) { return .redirect(redirect, try? decode(raw)) }
        return .reply(try decode(raw))
    }

    static func redirect(in reply: UnsafePointer<redisReply>, host: String) -> ClusterRedirect? {
        guard reply.pointee.type == REDIS_REPLY_ERROR, reply.pointee.len > 0 else { return nil }
        let text = UnsafeRawBufferPointer(start: reply.pointee.str, count: reply.pointee.len)
        // Cheap test first: most error replies are not redirects.
        guard text[0] == UInt8(ascii: "M") || text[0] == UInt8(ascii: "A") else { return nil }
        return ClusterRedirect(errorReply: String(decoding: text, as: UTF8.self), currentHost: host)
    }

    static func redirect(in reply: ArenaReply, host: String) -> ClusterRedirect? {
        var reply = reply
        guard let first = reply.next(), first.type == REDIS_REPLY_ERROR, let lead = first.text.first,
            lead == UInt8(ascii: "M") || lead == UInt8(ascii: "A")
        else { return nil }
        return ClusterRedirect(errorReply: String(decoding: first.text, as: UTF8.self), currentHost: host)
    }
}

extension RedisValue {
    var errorText: String? {
        if case .error(let text) = self { text } else { nil }
    }
}

/// A node of a Redis Cluster, as its clients address it.
public struct RedisNodeAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port`, `[v6]:port` or `v6:port` (the last colon separates the port).
    public init?(_ text: some StringProtocol) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        var host = text[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { return nil }
        self.init(host: String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A `-MOVED <slot> <host>:<port>` or `-ASK <slot> <host>:<port>` error reply: the command was not
/// run; the slot is served elsewhere (MOVED: from now on; ASK: this key, once, after ASKING).
public struct ClusterRedirect: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case moved
        case ask
    }

    public var kind: Kind
    public var slot: HashSlot
    public var node: RedisNodeAddress

    public init(kind: Kind, slot: HashSlot, node: RedisNodeAddress) {
        self.kind = kind
        self.slot = slot
        self.node = node
    }

    /// Nil for any other error reply. - Parameter currentHost: what an empty host (`MOVED 1 :7001`,
    ///   a node that does not know its own address) stands for: the host the reply came from.
    public init?(errorReply: some StringProtocol, currentHost: String) {
        let words = errorReply.split(separator: " ")
        guard words.count == 3, let number = UInt16(words[1]), let slot = HashSlot(rawValue: number) else { return nil }
        let namesNoHost = words[2].first == ":" && words[2].dropFirst().allSatisfy(\.isNumber)
        guard let node = RedisNodeAddress(namesNoHost ? currentHost + String(words[2]) : String(words[2])) else { return nil }
        switch words[0] {
        case "MOVED": kind = .moved
        case "ASK": kind = .ask
        default: return nil
        }
        self.slot = slot
        self.node = node
    }
}

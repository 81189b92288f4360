/// How to reach Redis.
public struct RedisConfiguration: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// ACL user; `nil` authenticates as `default` when a password is set.
    public var username: String?
    public var password: String?
    public var connectTimeout: Duration
    /// Socket read/write timeout for every command. Must exceed any XREADGROUP BLOCK.
    public var commandTimeout: Duration
    /// Seed nodes of a Redis Cluster; empty: a single node at `host`:`port`. With seeds, a
    /// connection asks them for the slot map and talks to whichever primary serves ``routingSlot``.
    public var clusterNodes: [RedisNodeAddress] = []
    /// Cluster mode: the hash slot every command on the connection touches (one stream and its
    /// dead letters); the connection follows it through MOVED, ASK and failovers. Nil: any node.
    public var routingSlot: HashSlot?

    public var isCluster: Bool { !clusterNodes.isEmpty }

    /// The same configuration for a connection whose commands all touch `key`'s slot.
    public func routed(by key: some StringProtocol) -> RedisConfiguration {
        var routed = self
        if isCluster { routed.routingSlot = HashSlot(forKey: key) }
        return routed
    }

    public init(
        host: String = "127.0.0.1", port: Int = 6379, username: String? = nil, password: String? = nil,
        connectTimeout: Duration = .seconds(5), commandTimeout: Duration = .seconds(10)
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
    }

    /// Never shows the password.
    public var description: String {
        let nodes = isCluster ? "cluster " + clusterNodes.map(\.description).joined(separator: ",") : "\(host):\(port)"
        return "redis://\(username.map { "\($0)@" } ?? "")\(nodes)\(password == nil ? "" : " (password set)")"
    }
}

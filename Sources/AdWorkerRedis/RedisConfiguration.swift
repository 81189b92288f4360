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
    /// Speak TLS (`rediss://`): nil is plaintext. On a cluster every node is reached over TLS, at
    /// the ports its slot map gives (`tls-cluster yes` makes those the TLS ports).
    public var tls: RedisTLS?

    /// Sentinel mode: the primary is whichever node the sentinels name for a master; ``host`` and
    /// ``port`` do not apply. Exclusive with ``clusterNodes``.
    public var sentinel: RedisSentinel?

    /// Confirmed means replicated: XADD pipelines and dead-letter transactions are followed by
    /// `WAIT`, and count as done only once this many replicas acknowledged them. Nil: a write is
    /// done when the primary answers (a failover may lose its last writes).
    public var replicaWait: RedisReplicaWait?

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
        let nodes =
            if isCluster { "cluster " + clusterNodes.map(\.description).joined(separator: ",") }
            else if let sentinel { "master \(sentinel.masterName) of sentinels " + sentinel.nodes.map(\.description).joined(separator: ",") }
            else { RedisNodeAddress(host: host, port: port).description }
        return "\(tls == nil ? "redis" : "rediss")://\(username.map { "\($0)@" } ?? "")\(nodes)\(password == nil ? "" : " (password set)")"
    }
}

/// TLS to Redis: whom to trust, what to present, which name to verify.
public struct RedisTLS: Sendable, Equatable {
    /// PEM certificates of the authorities that sign the server's certificate; nil: the system's.
    public var certificateAuthorityFile: String?
    /// A client certificate and its key (PEM), for a server that asks for one (mutual TLS).
    public var certificateFile: String?
    public var keyFile: String?
    /// The name sent as SNI and verified against the server's certificate; nil: the host
    /// connected to (on a cluster, each node's address as its slot map gives it).
    public var serverName: String?
    /// Whether the server's certificate and name are verified. Turning it off lets anyone on the
    /// path read and change the traffic; the worker logs that at every start.
    public var verifiesServer: Bool

    public init(
        certificateAuthorityFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil,
        serverName: String? = nil, verifiesServer: Bool = true
    ) {
        self.certificateAuthorityFile = certificateAuthorityFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.serverName = serverName
        self.verifiesServer = verifiesServer
    }
}

/// `WAIT replicas timeout` after writes that must survive a failover.
public struct RedisReplicaWait: Sendable, Equatable {
    /// How many replicas must hold a write before it counts as done, at least 1.
    public var replicas: Int
    /// How long one WAIT waits; shorter than the command timeout (the WAIT's reply is a reply).
    public var timeout: Duration

    /// At least one replica, and at least 1 ms (`WAIT n 0` would block until the command timeout).
    public init(replicas: Int, timeout: Duration = .seconds(1)) {
        self.replicas = max(1, replicas)
        self.timeout = max(.milliseconds(1), timeout)
    }
}

/// Redis under Sentinel: the sentinels to ask, the master's name, and the sentinels' own
/// credentials (a sentinel's `requirepass` or ACL user is separate from the data nodes'). Over
/// TLS (``RedisConfiguration/tls``) the sentinels are reached over TLS too.
public struct RedisSentinel: Sendable, Equatable {
    public var nodes: [RedisNodeAddress]
    public var masterName: String
    public var username: String?
    public var password: String?

    public init(nodes: [RedisNodeAddress], masterName: String, username: String? = nil, password: String? = nil) {
        self.nodes = nodes
        self.masterName = masterName
        self.username = username
        self.password = password
    }
}

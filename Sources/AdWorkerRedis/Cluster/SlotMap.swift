/// Which node serves which hash slots: a Redis Cluster's layout as `CLUSTER SHARDS` (Redis 7) or
/// `CLUSTER SLOTS` (older servers) describes it.
public struct SlotMap: Sendable, Equatable {
    public struct Node: Sendable, Equatable {
        /// What CLUSTER SHARDS says of a node; CLUSTER SLOTS lists no health, so its nodes are online.
        public enum Health: Sendable, Equatable, CustomStringConvertible {
            case online
            case failed
            /// Loading its data set (a replica syncing, a restarted node).
            case loading
            /// A value this client does not know (a later Redis's), kept as the node gave it.
            case other(String)

            public init(_ text: String) {
                switch text {
                case "online": self = .online
                case "failed": self = .failed
                case "loading": self = .loading
                default: self = .other(text)
                }
            }

            public var description: String {
                switch self {
                case .online: "online"
                case .failed: "failed"
                case .loading: "loading"
                case .other(let text): text
                }
            }
        }

        public var id: String
        public var address: RedisNodeAddress
        public var health: Health
    }

    public struct Shard: Sendable, Equatable {
        public var slots: [ClosedRange<HashSlot>]
        public var primary: Node
        public var replicas: [Node]
    }

    public private(set) var shards: [Shard]
    /// Slot → index into `shards`; nil: no node serves it.
    private var owners: [Int?]

    public init(shards: [Shard]) {
        self.shards = shards
        owners = Array(repeating: nil, count: HashSlot.count)
        for (index, shard) in shards.enumerated() {
            for range in shard.slots {
                for slot in Int(range.lowerBound.rawValue)...Int(range.upperBound.rawValue) { owners[slot] = index }
            }
        }
    }

    /// The primary that serves `slot`.
    public func primary(for slot: HashSlot) -> Node? {
        owners[Int(slot.rawValue)].map { shards[$0].primary }
    }

    /// Every slot has a primary.
    public var isComplete: Bool { !owners.contains(nil) }

    public var nodes: [Node] { shards.flatMap { [$0.primary] + $0.replicas } }

    /// Parses a `CLUSTER SHARDS` reply (RESP2: each shard and node a flat name/value list).
    /// - Parameter replyingHost: the host the reply came from, for nodes whose endpoint is `?` or empty.
    /// - Parameter tls: The client speaks TLS: a node's `tls-port` is where to reach it (with
    ///   `tls-cluster yes` its `port` may be missing or plaintext).
    public init?(shardsReply reply: RedisValue, replyingHost: String, tls: Bool = false) {
        guard let items = reply.array else { return nil }
        var shards: [Shard] = []
        for item in items {
            let fields = Self.pairs(item)
            guard let slotList = fields["slots"]?.array, let nodeList = fields["nodes"]?.array else { return nil }
            var ranges: [ClosedRange<HashSlot>] = []
            var index = 0
            while index + 1 < slotList.count {
                guard let low = Self.slot(slotList[index]), let high = Self.slot(slotList[index + 1]), low <= high else { return nil }
                ranges.append(low...high)
                index += 2
            }
            var primary: Node?
            var replicas: [Node] = []
            for nodeItem in nodeList {
                let node = Self.pairs(nodeItem)
                let portField = tls ? node["tls-port"] ?? node["port"] : node["port"]
                guard let port = portField.flatMap(Self.number), let role = node["role"]?.string else { return nil }
                var host = node["endpoint"]?.string ?? ""
                if host.isEmpty || host == "?" { host = node["ip"]?.string ?? "" }
                if host.isEmpty || host == "?" { host = replyingHost }
                let parsed = Node(
                    id: node["id"]?.string ?? "", address: RedisNodeAddress(host: host, port: port),
                    health: node["health"]?.string.map(Node.Health.init) ?? .online
                )
                // A failed primary stays listed until its replica takes over; prefer a live one.
                if role == "master", primary == nil || primary?.health != .online {
                    if let previous = primary { replicas.append(previous) }
                    primary = parsed
                } else {
                    replicas.append(parsed)
                }
            }
            // Shards without slots (a node added but not yet given any) serve nothing.
            guard let primary, !ranges.isEmpty else { continue }
            shards.append(Shard(slots: ranges, primary: primary, replicas: replicas))
        }
        self.init(shards: shards)
    }

    /// Parses a `CLUSTER SLOTS` reply: `[start, end, [ip, port, id], replica…]` per range.
    public init?(slotsReply reply: RedisValue, replyingHost: String) {
        guard let items = reply.array else { return nil }
        var byPrimary: [String: Shard] = [:]
        var order: [String] = []
        for item in items {
            guard let fields = item.array, fields.count >= 3, let low = Self.slot(fields[0]), let high = Self.slot(fields[1]), low <= high
            else { return nil }
            var nodes: [Node] = []
            for nodeItem in fields[2...] {
                guard let node = nodeItem.array, node.count >= 2, let port = Self.number(node[1]) else { return nil }
                var host = node[0].string ?? ""
                if host.isEmpty || host == "?" { host = replyingHost }
                let id = node.count > 2 ? node[2].string ?? "" : ""
                nodes.append(Node(id: id, address: RedisNodeAddress(host: host, port: port), health: .online))
            }
            let key = nodes[0].id.isEmpty ? nodes[0].address.description : nodes[0].id
            if byPrimary[key] == nil {
                order.append(key)
                byPrimary[key] = Shard(slots: [], primary: nodes[0], replicas: Array(nodes.dropFirst()))
            }
            byPrimary[key]!.slots.append(low...high)
        }
        self.init(shards: order.map { byPrimary[$0]! })
    }

    private static func pairs(_ value: RedisValue) -> [String: RedisValue] {
        guard let list = value.array else { return [:] }
        var result: [String: RedisValue] = [:]
        var index = 0
        while index + 1 < list.count {
            if let name = list[index].string { result[name] = list[index + 1] }
            index += 2
        }
        return result
    }

    private static func slot(_ value: RedisValue) -> HashSlot? {
        number(value).flatMap { HashSlot(rawValue: $0) }
    }

    private static func number(_ value: RedisValue) -> Int? {
        switch value {
        case .integer(let number): Int(number)
        case .bulk, .status: value.string.flatMap { Int($0) }
        default: nil
        }
    }
}

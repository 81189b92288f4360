/// Which node serves which hash slots: a Redis Cluster's layout as `CLUSTER SHARDS` (Redis 7) or
/// `CLUSTER SLOTS` (older servers) describes it.
public struct SlotMap: Sendable, Equatable {
    public struct Node: Sendable, Equatable {
        public var id: String
        public var address: RedisNodeAddress
        /// `online`, `failed` or `loading` (CLUSTER SHARDS); `online` from CLUSTER SLOTS, which
        /// lists no health.
        public var health: String
    }

    public struct Shard: Sendable, Equatable {
        public var slots: [ClosedRange<UInt16>]
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
                for slot in range where Int(slot) < HashSlot.count { owners[Int(slot)] = index }
            }
        }
    }

    /// The primary that serves `slot`.
    public func primary(for slot: UInt16) -> Node? {
        owners[Int(slot)].map { shards[$0].primary }
    }

    /// Every slot has a primary.
    public var isComplete: Bool { !owners.contains(nil) }

    public var nodes: [Node] { shards.flatMap { [$0.primary] + $0.replicas } }

    /// Parses a `CLUSTER SHARDS` reply (RESP2: each shard and node a flat name/value list).
    /// - Parameter replyingHost: the host the reply came from, for nodes whose endpoint is `?` or empty.
    public init?(shardsReply reply: RedisValue, replyingHost: String) {
        guard let items = reply.array else { return nil }
        var shards: [Shard] = []
        for item in items {
            let fields = Self.pairs(item)
            guard let slotList = fields["slots"]?.array, let nodeList = fields["nodes"]?.array else { return nil }
            var ranges: [ClosedRange<UInt16>] = []
            var index = 0
            while index + 1 < slotList.count {
                guard let low = Self.number(slotList[index]), let high = Self.number(slotList[index + 1]), low <= high,
                    high < HashSlot.count
                else { return nil }
                ranges.append(UInt16(low)...UInt16(high))
                index += 2
            }
            var primary: Node?
            var replicas: [Node] = []
            for nodeItem in nodeList {
                let node = Self.pairs(nodeItem)
                guard let port = node["port"].flatMap(Self.number), let role = node["role"]?.string else { return nil }
                var host = node["endpoint"]?.string ?? ""
                if host.isEmpty || host == "?" { host = node["ip"]?.string ?? "" }
                if host.isEmpty || host == "?" { host = replyingHost }
                let parsed = Node(
                    id: node["id"]?.string ?? "", address: RedisNodeAddress(host: host, port: port),
                    health: node["health"]?.string ?? "online"
                )
                // A failed primary stays listed until its replica takes over; prefer a live one.
                if role == "master", primary == nil || primary?.health != "online" {
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
            guard let fields = item.array, fields.count >= 3, let low = Self.number(fields[0]), let high = Self.number(fields[1]),
                low <= high, high < HashSlot.count
            else { return nil }
            var nodes: [Node] = []
            for nodeItem in fields[2...] {
                guard let node = nodeItem.array, node.count >= 2, let port = Self.number(node[1]) else { return nil }
                var host = node[0].string ?? ""
                if host.isEmpty || host == "?" { host = replyingHost }
                let id = node.count > 2 ? node[2].string ?? "" : ""
                nodes.append(Node(id: id, address: RedisNodeAddress(host: host, port: port), health: "online"))
            }
            let key = nodes[0].id.isEmpty ? nodes[0].address.description : nodes[0].id
            if byPrimary[key] == nil {
                order.append(key)
                byPrimary[key] = Shard(slots: [], primary: nodes[0], replicas: Array(nodes.dropFirst()))
            }
            byPrimary[key]!.slots.append(UInt16(low)...UInt16(high))
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

    private static func number(_ value: RedisValue) -> Int? {
        switch value {
        case .integer(let number): Int(number)
        case .bulk, .status: value.string.flatMap { Int($0) }
        default: nil
        }
    }
}

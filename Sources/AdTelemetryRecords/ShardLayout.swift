/// Stream names for a record kind split into shards: part of the producer–worker contract, like
/// the wire format's field names.
///
/// One shard (the default) keeps today's names on a single node: `adserving:training`. Sharded, or
/// on a Redis Cluster, each shard is `<prefix>{<tag>}` and its dead letters `<prefix>{<tag>}:dead`:
/// the hash tag puts both in one slot, so a dead letter and its XACK stay in one MULTI/EXEC (an
/// untagged stream and its `:dead` land in different slots: CROSSSLOT).
///
/// Tags are chosen so the shards cover the slot space evenly: shard `i` of `N` gets the first of
/// `<kind>.<i>`, `<kind>.<i>.1`, `<kind>.<i>.2`, … whose slot lies in `[i·16384/N, (i+1)·16384/N)`.
/// Any even split of the slots over masters (what `redis-cli --cluster create` makes) then gets an
/// even spread of shards; naive tags (`{0}`, `{1}`, `{2}` hash to 13907, 9842, 5649) put two of
/// three on one master of three. The rule needs no table and gives the same names everywhere.
public struct ShardLayout: Sendable, Equatable {
    public var prefix: String
    public var count: Int
    /// Tagged names even for one shard: what a Redis Cluster needs.
    public var tagged: Bool

    public static let maximumShards = 64

    /// Redis Cluster's slot count. A tag has no braces, so its slot is its CRC16 modulo this, as
    /// the transport's `HashSlot` computes for the whole name (ClusterRoutingTests checks they agree).
    static let clusterSlots = 16384

    public init(prefix: String, count: Int = 1, tagged: Bool = false) {
        precondition((1...Self.maximumShards).contains(count), "shard count out of range")
        self.prefix = prefix
        self.count = count
        self.tagged = tagged || count > 1
    }

    /// The hash tag of shard `index` of `kind` (without braces).
    public func tag(kind: String, shard index: Int) -> String {
        let low = index * Self.clusterSlots / count
        let high = (index + 1) * Self.clusterSlots / count
        var attempt = 0
        while true {
            let tag = attempt == 0 ? "\(kind).\(index)" : "\(kind).\(index).\(attempt)"
            if (low..<high).contains(Int(CRC16.xmodem(tag.utf8)) % Self.clusterSlots) { return tag }
            attempt += 1
        }
    }

    public func stream(kind: String, shard index: Int) -> String {
        tagged ? "\(prefix){\(tag(kind: kind, shard: index))}" : prefix + kind
    }

    /// Every shard's stream of `kind`, in shard order.
    public func streams(kind: String) -> [String] {
        (0..<count).map { stream(kind: kind, shard: $0) }
    }

    /// The shard of a request: from its id, so its training and inference records get the same
    /// shard number.
    public func shard(forRequestID requestID: some StringProtocol) -> Int {
        count == 1 ? 0 : Int(CRC16.xmodem(requestID.utf8)) % count
    }
}

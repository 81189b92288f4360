import AdTelemetryRecords
import AdWorkerRedis
import Testing

@Suite("Redis Cluster: slots, shard names, redirects and slot maps")
struct ClusterRoutingTests {
    @Test func crc16IsRedisCluster() {
        #expect(CRC16.xmodem(Array("123456789".utf8)) == 0x31C3)
    }

    /// Each slot checked against `CLUSTER KEYSLOT` of a cluster-mode redis-server 7.0.15.
    @Test func slotsMatchRedis() {
        let expected: [(String, UInt16)] = [
            ("0", 13907), ("1", 9842), ("2", 5649), ("adserving:training", 12935), ("adserving:training:dead", 10449),
            ("adserving:{training.3}", 9476), ("adserving:{training.3}:dead", 9476), ("foo{}{bar}", 8363),
        ]
        for (key, slot) in expected {
            #expect(HashSlot(forKey: key).rawValue == slot, "\(key)")
        }
        #expect(HashSlot(forKey: "foo{{bar}}zap") == HashSlot(forKey: "{bar"))
        #expect(HashSlot(forKey: "x{user1000}.following") == HashSlot(forKey: "user1000"))
        #expect(HashSlot(rawValue: 16383) != nil && HashSlot(rawValue: 16384) == nil && HashSlot(rawValue: -1) == nil)
    }

    @Test func oneShardOnOneNodeKeepsTodaysNames() {
        let layout = ShardLayout(prefix: "adserving:")
        #expect(layout.streams(kind: "training") == ["adserving:training"])
        #expect(layout.shard(forRequestID: "anything") == 0)
        let onCluster = ShardLayout(prefix: "adserving:", tagged: true)
        #expect(onCluster.streams(kind: "training") == ["adserving:{training.0}"])
    }

    /// The tags of the plan's table, and 4/4/4 over the three primaries `--cluster create` makes.
    @Test func twelveShardsSpreadEvenlyOverThreePrimaries() {
        let layout = ShardLayout(prefix: "adserving:", count: 12)
        let tags = (0..<12).map { layout.tag(kind: "training", shard: $0) }
        #expect(tags == [
            "training.0.10", "training.1.13", "training.2.4", "training.3.47", "training.4", "training.5.1",
            "training.6.21", "training.7", "training.8.2", "training.9.10", "training.10", "training.11.3",
        ])
        for kind in ["training", "inference"] {
            var perPrimary = [0, 0, 0]
            for stream in layout.streams(kind: kind) {
                let slot = HashSlot(forKey: stream)
                #expect(HashSlot(forKey: stream + ":dead") == slot, "a stream and its dead letters share a slot")
                perPrimary[slot.rawValue <= 5460 ? 0 : slot.rawValue <= 10922 ? 1 : 2] += 1
            }
            #expect(perPrimary == [4, 4, 4], "\(kind)")
        }
        // Naive tags would not: {0}, {1}, {2} put two of three shards on one primary.
        let naive = (0..<3).map { HashSlot(forKey: "{\($0)}").rawValue }.map { $0 <= 5460 ? 0 : $0 <= 10922 ? 1 : 2 }
        #expect(Set(naive).count == 2)
    }

    /// The layout (above the transport) finds its tags' slots itself: they must be the slots the
    /// cluster, and `HashSlot`, give the whole stream names.
    @Test func everyShardsStreamLiesInItsShareOfTheSlotSpace() {
        for count in 1...ShardLayout.maximumShards {
            let layout = ShardLayout(prefix: "adserving:", count: count, tagged: true)
            for kind in ["training", "inference"] {
                for shard in 0..<count {
                    let slot = Int(HashSlot(forKey: layout.stream(kind: kind, shard: shard)).rawValue)
                    #expect((shard * HashSlot.count / count..<(shard + 1) * HashSlot.count / count).contains(slot), "\(kind) \(shard)/\(count)")
                }
            }
        }
    }

    @Test func aRequestsRecordsGetTheSameShardNumber() {
        let layout = ShardLayout(prefix: "p:", count: 12)
        var seen = Set<Int>()
        for index in 0..<1000 {
            let shard = layout.shard(forRequestID: "req-\(index)")
            #expect((0..<12).contains(shard))
            seen.insert(shard)
        }
        #expect(seen.count == 12)
    }

    @Test func redirectsParse() throws {
        let moved = try #require(ClusterRedirect(errorReply: "MOVED 3999 127.0.0.1:6381", currentHost: "h"))
        #expect(moved == ClusterRedirect(kind: .moved, slot: try #require(HashSlot(rawValue: 3999)), node: RedisNodeAddress(host: "127.0.0.1", port: 6381)))
        let ask = try #require(ClusterRedirect(errorReply: "ASK 12 node-b.example:7000", currentHost: "h"))
        #expect(ask.kind == .ask && ask.node == RedisNodeAddress(host: "node-b.example", port: 7000))
        #expect(ClusterRedirect(errorReply: "MOVED 1 ::1:7000", currentHost: "h")?.node == RedisNodeAddress(host: "::1", port: 7000))
        #expect(ClusterRedirect(errorReply: "MOVED 1 [::1]:7000", currentHost: "h")?.node == RedisNodeAddress(host: "::1", port: 7000))
        // A node that does not know its address names only the port: the host is the one we asked.
        #expect(ClusterRedirect(errorReply: "MOVED 7 :7001", currentHost: "10.0.0.5")?.node == RedisNodeAddress(host: "10.0.0.5", port: 7001))
        for garbage in ["MOVED", "MOVED x 1.2.3.4:1", "MOVED 16384 a:1", "ASK 1 nohost", "ERR MOVED 1 a:1", "MOVED 1 a:0"] {
            #expect(ClusterRedirect(errorReply: garbage, currentHost: "h") == nil, "\(garbage)")
        }
        #expect(RedisError.fromReply("MOVED 1 a:1").code == .redirected)
        #expect(RedisError.fromReply("CLUSTERDOWN The cluster is down").code == .clusterDown)
        #expect(RedisError.fromReply("TRYAGAIN Multiple keys request during rehashing of slot").code == .serverBusy)
        #expect(RedisError(.clusterDown, "").isTransient && RedisError(.redirected, "").isTransient)
    }

    /// The shape a 7.0.15 node gave for `CLUSTER SHARDS` (RESP2), with the primary of the second
    /// shard failed and its replica already promoted.
    @Test func clusterShardsReplyParses() throws {
        func node(_ id: String, _ port: Int, _ role: String, _ health: String, endpoint: String = "127.0.0.1") -> RedisValue {
            .array([
                .bulk(Array("id".utf8)), .bulk(Array(id.utf8)), .bulk(Array("port".utf8)), .integer(Int64(port)),
                .bulk(Array("ip".utf8)), .bulk(Array("127.0.0.1".utf8)), .bulk(Array("endpoint".utf8)), .bulk(Array(endpoint.utf8)),
                .bulk(Array("role".utf8)), .bulk(Array(role.utf8)), .bulk(Array("replication-offset".utf8)), .integer(0),
                .bulk(Array("health".utf8)), .bulk(Array(health.utf8)),
            ])
        }
        func shard(_ ranges: [(Int64, Int64)], _ nodes: [RedisValue]) -> RedisValue {
            .array([
                .bulk(Array("slots".utf8)), .array(ranges.flatMap { [RedisValue.integer($0.0), .integer($0.1)] }),
                .bulk(Array("nodes".utf8)), .array(nodes),
            ])
        }
        let reply = RedisValue.array([
            shard([(0, 5460)], [node("a", 30001, "master", "online"), node("d", 30005, "replica", "online")]),
            shard([(5461, 10922)], [node("b", 30002, "master", "failed"), node("e", 30006, "master", "online", endpoint: "?")]),
            shard([(10923, 16000), (16001, 16383)], [node("c", 30003, "master", "online"), node("f", 30004, "replica", "loading")]),
            shard([], [node("g", 30007, "master", "online")]),
        ])
        let map = try #require(SlotMap(shardsReply: reply, replyingHost: "127.0.0.9"))
        #expect(map.isComplete)
        #expect(map.shards.count == 3)
        #expect(map.primary(for: slot(0))?.id == "a")
        #expect(map.primary(for: slot(7000))?.id == "e")
        #expect(map.primary(for: slot(7000))?.address == RedisNodeAddress(host: "127.0.0.1", port: 30006))
        #expect(map.primary(for: slot(16383))?.address.port == 30003)
        #expect(map.shards[1].replicas.map(\.id) == ["b"])
        #expect(map.shards[1].replicas.map(\.health) == [.failed])
        #expect(map.shards[2].replicas.map(\.health) == [.loading] && map.shards[0].primary.health == .online)
        #expect(SlotMap(shardsReply: .array([.bulk(Array("slots".utf8))]), replyingHost: "h") == nil)
    }

    /// With `tls-cluster yes` a node lists its `tls-port` beside its plaintext `port` (0 when it
    /// has none): a TLS client goes to the TLS port, a plaintext one to the plaintext port.
    @Test func aTLSClientReachesEachNodeAtItsTLSPort() throws {
        let node = RedisValue.array([
            .bulk(Array("id".utf8)), .bulk(Array("a".utf8)), .bulk(Array("port".utf8)), .integer(6379),
            .bulk(Array("tls-port".utf8)), .integer(16379), .bulk(Array("ip".utf8)), .bulk(Array("10.0.0.1".utf8)),
            .bulk(Array("role".utf8)), .bulk(Array("master".utf8)), .bulk(Array("health".utf8)), .bulk(Array("online".utf8)),
        ])
        let reply = RedisValue.array([
            .array([.bulk(Array("slots".utf8)), .array([.integer(0), .integer(16383)]), .bulk(Array("nodes".utf8)), .array([node])])
        ])
        #expect(try #require(SlotMap(shardsReply: reply, replyingHost: "h", tls: true)).shards[0].primary.address.port == 16379)
        #expect(try #require(SlotMap(shardsReply: reply, replyingHost: "h")).shards[0].primary.address.port == 6379)
    }

    @Test func aHealthThisClientDoesNotKnowIsKeptAsTheNodeGaveIt() {
        #expect(SlotMap.Node.Health("online") == .online)
        #expect(SlotMap.Node.Health("handshaking") == .other("handshaking"))
        #expect("\(SlotMap.Node.Health("handshaking"))" == "handshaking" && "\(SlotMap.Node.Health.failed)" == "failed")
    }

    @Test func clusterSlotsReplyParses() throws {
        func address(_ port: Int64, _ id: String, host: String = "127.0.0.1") -> RedisValue {
            .array([.bulk(Array(host.utf8)), .integer(port), .bulk(Array(id.utf8))])
        }
        let reply = RedisValue.array([
            .array([.integer(0), .integer(5460), address(30001, "a"), address(30005, "d")]),
            .array([.integer(5461), .integer(10922), address(30002, "b", host: "")]),
            .array([.integer(10923), .integer(16383), address(30003, "c")]),
        ])
        let map = try #require(SlotMap(slotsReply: reply, replyingHost: "10.1.1.1"))
        #expect(map.isComplete)
        #expect(map.primary(for: slot(6000))?.address == RedisNodeAddress(host: "10.1.1.1", port: 30002))
        #expect(map.shards[0].replicas.map(\.address.port) == [30005])
        #expect(!SlotMap(slotsReply: .array([reply.array![0]]), replyingHost: "h")!.isComplete)
    }

    private func slot(_ number: Int) -> HashSlot { HashSlot(rawValue: number)! }
}

import AdTelemetry
import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import AdWorkerTestSupport
import Foundation
import Testing

/// Against the six-node cluster of `scripts/redis-cluster.sh` (three primaries, three replicas).
/// Serialized: the tests move slots, which must not happen under each other's keys.
@Suite("Redis Cluster routing against a real cluster", .serialized, .timeLimit(.minutes(2)))
struct RedisClusterTests {
    let cluster = TestServers.redisCluster

    /// A plain connection to one node, for setting the cluster up and checking where data landed.
    func onNode<Result: Sendable>(_ node: RedisNodeAddress, _ body: (RedisConnection) async throws -> sending Result) async throws -> sending Result {
        var plain = TestServers.redis
        plain.host = node.host
        plain.port = node.port
        return try await RedisConnection.withConnection(plain, logger: TestServers.logger, body)
    }

    func map() async throws -> SlotMap {
        try await RedisConnection.withConnection(cluster, logger: TestServers.logger) { try await $0.slotMap() }
    }

    func nodeID(_ node: RedisNodeAddress) async throws -> String {
        try await onNode(node) { try await $0.send(RedisCommand("CLUSTER", "MYID")).string ?? "" }
    }

    /// Assigns an empty `slot` to `owner` on every primary, as `redis-cli --cluster` does: the new
    /// owner first, with a configuration epoch of its own so that its claim wins over gossip still
    /// carrying the old one, then the others; done once every node, replicas too, names the new
    /// owner, and still does 300 ms later. Said
    /// again when they do not within 5 s: gossip from the old owner, sent before it was told and
    /// carrying a higher epoch than the new owner's as some node knew it, can win the new owner
    /// back over, and then no node claims the slot to correct it (seen: the new owner naming the
    /// old one for good while the others named the new).
    func assign(_ slot: HashSlot, to owner: SlotMap.Node, in map: SlotMap) async throws {
        let primaries = [owner] + map.shards.map(\.primary).filter { $0.id != owner.id }
        for attempt in 1...5 {
            for primary in primaries {
                let reply = try await onNode(primary.address) { try await $0.send(RedisCommand("CLUSTER", "SETSLOT", "\(slot)", "NODE", owner.id)) }
                #expect(reply == .status("OK"), "SETSLOT on \(primary.address): \(reply)")
                if primary.id == owner.id {
                    _ = try await onNode(owner.address) { try await $0.send(RedisCommand("CLUSTER", "BUMPEPOCH")) }
                }
            }
            do {
                // Replicas too: a replica still naming the old owner gossips its primary's old claim,
                // which can win the slot back while every primary already names the new owner.
                let nodes = primaries + map.shards.flatMap(\.replicas)
                let everyNodeNamesOwner = { () async throws -> Bool in
                    for node in nodes where try await ownerID(of: slot, asSeenBy: node.address) != owner.id { return false }
                    return true
                }
                try await waitUntil("every node to name \(owner.address) for slot \(slot) (attempt \(attempt))", within: .seconds(5), everyNodeNamesOwner)
                // Still so a moment later: gossip already under way can turn one back (seen under load).
                try await Task.sleep(for: .milliseconds(300))
                if try await everyNodeNamesOwner() { return }
                throw TestSupportError("slot \(slot) went back from \(owner.address) after every node named it")
            } catch where attempt < 5 {
                continue
            }
        }
    }

    /// Which primaries hold `key` and whom each names for `slot`: what a failed expectation shows.
    func whereIs(_ key: String, slot: HashSlot, in map: SlotMap) async throws -> String {
        var lines: [String] = []
        for primary in map.shards.map(\.primary) {
            let exists = try await onNode(primary.address) { try await $0.send(RedisCommand("EXISTS", key)) }
            let owner = try await ownerID(of: slot, asSeenBy: primary.address)
            lines.append("\(primary.address) (\(primary.id.prefix(8))): EXISTS \(exists), names \(owner?.prefix(8) ?? "nobody")")
        }
        return lines.joined(separator: "; ")
    }

    /// Who `node` says serves `slot` (CLUSTER SLOTS: start, end, then the primary as host, port, id).
    func ownerID(of slot: HashSlot, asSeenBy node: RedisNodeAddress) async throws -> String? {
        let ranges = try await onNode(node) { try await $0.send(RedisCommand("CLUSTER", "SLOTS")) }.array ?? []
        for range in ranges {
            guard let fields = range.array, fields.count >= 3, let start = fields[0].integer, let end = fields[1].integer,
                (start...end).contains(Int64(slot.rawValue))
            else { continue }
            return fields[2].array.flatMap { $0.count >= 3 ? $0[2].string : nil }
        }
        return nil
    }

    /// A key of a unique slot served by the first primary, and another primary.
    func keyOnFirstPrimary(_ map: SlotMap) throws -> (key: String, slot: HashSlot, source: SlotMap.Node, target: SlotMap.Node) {
        let source = map.shards[0].primary
        let target = map.shards[1].primary
        while true {
            let key = "cluster-test:{\(UUID().uuidString)}"
            let slot = HashSlot(forKey: key)
            if map.primary(for: slot) == source { return (key, slot, source, target) }
        }
    }

    @Test func commandsGoToThePrimaryServingTheKeysSlot() async throws {
        let map = try await map()
        #expect(map.isComplete && map.shards.count == 3, "three primaries covering every slot: \(map.shards.map(\.primary.address))")
        for index in 0..<6 {
            let stream = "cluster-test:{routing.\(UUID().uuidString).\(index)}"
            try await RedisConnection.withConnection(cluster.routed(by: stream), logger: TestServers.logger) { redis in
                let added = try await redis.add([.streamAdd(to: stream, fields: StreamFields([("i", "\(index)")]))])
                #expect(added.allSatisfy { (try? $0.get()) != nil })
            }
            let owner = try #require(map.primary(for: HashSlot(forKey: stream)))
            let (slot, length) = try await onNode(owner.address) { redis in
                (try await redis.send(RedisCommand("CLUSTER", "KEYSLOT", stream)).integer, try await redis.streamLength(stream))
            }
            #expect(slot == Int64(HashSlot(forKey: stream).rawValue), "our slot agrees with CLUSTER KEYSLOT")
            #expect(length == 1)
            _ = try await onNode(owner.address) { try await $0.delete([stream]) }
        }
    }

    @Test func aConnectionFollowsMovedToTheSlotsNewPrimary() async throws {
        let map = try await map()
        let (key, slot, source, target) = try keyOnFirstPrimary(map)
        try await RedisConnection.withConnection(cluster.routed(by: key), logger: TestServers.logger) { redis in
            #expect(try await redis.streamLength(key) == 0, "connected to the slot's first primary")
            try await assign(slot, to: target, in: map)
            do {
                // The connection still talks to `source`, which now answers MOVED.
                let added = try await redis.add([.streamAdd(to: key, fields: StreamFields([("a", "1")]))])
                #expect(added.allSatisfy { (try? $0.get()) != nil }, "\(added)")
                #expect(try await onNode(target.address) { try await $0.streamLength(key) } == 1, "written on the new primary")
                _ = try await onNode(target.address) { try await $0.delete([key]) }
            } catch {
                try await assign(slot, to: source, in: map)
                throw error
            }
            try await assign(slot, to: source, in: map)
            #expect(try await redis.streamLength(key) == 0, "and back")
        }
    }

    @Test func aConnectionFollowsAskDuringAMigrationAndStaysOnTheSource() async throws {
        let map = try await map()
        let (key, slot, source, target) = try keyOnFirstPrimary(map)
        let other = "\(key.prefix { $0 != "{" }){\(key.split(separator: "{")[1].dropLast())}:other"
        #expect(HashSlot(forKey: other) == slot)
        try await RedisConnection.withConnection(cluster.routed(by: key), logger: TestServers.logger) { redis in
            _ = try await redis.add([.streamAdd(to: key, fields: StreamFields([("a", "1")])), .streamAdd(to: other, fields: StreamFields([("b", "1")]))])
            let sourceID = try await nodeID(source.address)
            let targetID = try await nodeID(target.address)
            _ = try await onNode(target.address) { try await $0.send(RedisCommand("CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", sourceID)) }
            _ = try await onNode(source.address) { try await $0.send(RedisCommand("CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", targetID)) }
            // `key` moves, `other` stays: commands on `key` get ASK, on `other` run where they are.
            let migrated = try await onNode(source.address) {
                try await $0.send(RedisCommand("MIGRATE", target.address.host, "\(target.address.port)", "", "0", "5000", "KEYS", key))
            }
            #expect(migrated == .status("OK"))
            let added = try await redis.add([
                .streamAdd(to: key, fields: StreamFields([("a", "2")])), .streamAdd(to: other, fields: StreamFields([("b", "2")])),
            ])
            #expect(added.allSatisfy { (try? $0.get()) != nil }, "\(added)")
            #expect(try await redis.streamLength(other) == 2, "still served by the source")
            // Finish the migration, then put the slot back empty.
            _ = try await onNode(source.address) {
                try await $0.send(RedisCommand("MIGRATE", target.address.host, "\(target.address.port)", "", "0", "5000", "KEYS", other))
            }
            try await assign(slot, to: target, in: map)
            #expect(try await redis.streamLength(key) == 2, "both entries of `key` on the target (MOVED followed)")
            #expect(try await redis.delete([key, other]) == 2)
            try await assign(slot, to: source, in: map)
        }
    }

    /// An ASK opens a connection to the importing node for one exchange; a reply that fails to
    /// decode there (NOGROUP to XAUTOCLAIM) must still close it, or every such call leaks a socket.
    @Test func anAskWhoseReplyFailsToDecodeClosesItsConnectionToTheTarget() async throws {
        let map = try await map()
        let (key, slot, source, target) = try keyOnFirstPrimary(map)
        try await RedisConnection.withConnection(cluster.routed(by: key), logger: TestServers.logger) { redis in
            _ = try await redis.add([.streamAdd(to: key, fields: StreamFields([("a", "1")]))])
            let sourceID = try await nodeID(source.address)
            let targetID = try await nodeID(target.address)
            _ = try await onNode(target.address) { try await $0.send(RedisCommand("CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", sourceID)) }
            _ = try await onNode(source.address) { try await $0.send(RedisCommand("CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", targetID)) }
            let migrated = try await onNode(source.address) {
                try await $0.send(RedisCommand("MIGRATE", target.address.host, "\(target.address.port)", "", "0", "5000", "KEYS", key))
            }
            #expect(migrated == .status("OK"))
            let before = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
            // Other suites open and close descriptors meanwhile: a leak shows as one per call, far above their noise.
            for _ in 0..<100 {
                await #expect(throws: RedisError.self) {
                    _ = try await redis.autoClaim(key, group: "no-such-group", consumer: "c", minimumIdle: .zero, start: StreamEntryID(milliseconds: 0, sequence: 0), count: 1)
                }
            }
            let after = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
            try await assign(slot, to: target, in: map)
            let deleted = try await redis.delete([key])
            let whereItWas = deleted == 1 ? "" : try await whereIs(key, slot: slot, in: map)
            #expect(deleted == 1, "\(whereItWas)")
            try await assign(slot, to: source, in: map)
            #expect(after - before < 50, "\(after - before) descriptors left open by 100 failed ASK exchanges")
        }
    }

    /// An ASK whose target stops answering: the timeout gives that connection up (frees it), and
    /// nothing frees it a second time (a double free aborts the process or corrupts its heap).
    @Test func anAskWhoseTargetStopsAnsweringGivesItsConnectionUpOnce() async throws {
        let map = try await map()
        let (key, slot, source, target) = try keyOnFirstPrimary(map)
        var configuration = cluster.routed(by: key)
        configuration.commandTimeout = .milliseconds(300)
        try await RedisConnection.withConnection(configuration, logger: TestServers.logger) { redis in
            _ = try await redis.add([.streamAdd(to: key, fields: StreamFields([("a", "1")]))])
            let sourceID = try await nodeID(source.address)
            let targetID = try await nodeID(target.address)
            _ = try await onNode(target.address) { try await $0.send(RedisCommand("CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", sourceID)) }
            _ = try await onNode(source.address) { try await $0.send(RedisCommand("CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", targetID)) }
            let migrated = try await onNode(source.address) {
                try await $0.send(RedisCommand("MIGRATE", target.address.host, "\(target.address.port)", "", "0", "5000", "KEYS", key))
            }
            #expect(migrated == .status("OK"))
            for _ in 0..<3 {
                // Far longer than the 300 ms timeout: a loaded machine may take a while to send.
                _ = try await onNode(target.address) { try await $0.send(RedisCommand("CLIENT", "PAUSE", "2000", "ALL")) }
                await #expect(throws: RedisError.self) { _ = try await redis.streamLength(key) }
                // Answered once the pause runs out (a paused server holds the PING until then).
                try await onNode(target.address) { try await $0.ping() }
            }
            #expect(try await redis.streamLength(key) == 1, "the connection still works after the timeouts")
            try await assign(slot, to: target, in: map)
            #expect(try await redis.delete([key]) == 1)
            try await assign(slot, to: source, in: map)
        }
    }

    @Test func aTransactionIsResentWholeAfterMoved() async throws {
        let map = try await map()
        let (key, slot, source, target) = try keyOnFirstPrimary(map)
        try await RedisConnection.withConnection(cluster.routed(by: key), logger: TestServers.logger) { redis in
            #expect(try await redis.streamLength(key) == 0)
            try await assign(slot, to: target, in: map)
            let results = try await redis.transaction([
                .streamAdd(to: key, fields: StreamFields([("a", "1")])), .streamAdd(to: key + ":dead", fields: StreamFields([("b", "1")])),
            ])
            #expect(results.count == 2)
            #expect(try await onNode(target.address) { try await $0.streamLength(key) } == 1)
            #expect(try await redis.delete([key, key + ":dead"]) == 2)
            try await assign(slot, to: source, in: map)
        }
    }

    @Test func aSeedThatIsDownIsPassedOver() async throws {
        var configuration = cluster
        configuration.clusterNodes = [RedisNodeAddress(host: "127.0.0.1", port: 1)] + configuration.clusterNodes
        configuration.connectTimeout = .seconds(1)
        let key = "cluster-test:{down.\(UUID().uuidString)}"
        let length = try await RedisConnection.withConnection(configuration.routed(by: key), logger: TestServers.logger) { redis in
            try await redis.streamLength(key)
        }
        #expect(length == 0)
    }

    @Test func aSingleNodeGivenAsClusterIsRefusedWithTheReason() async throws {
        var configuration = TestServers.redis
        configuration.clusterNodes = [RedisNodeAddress(host: configuration.host, port: configuration.port)]
        let error = await #expect(throws: RedisError.self) {
            try await RedisConnection.withConnection(configuration.routed(by: "k"), logger: TestServers.logger) { _ = try await $0.ping() }
        }
        #expect(error?.message.contains("is it a Redis Cluster node?") == true, "\(String(describing: error))")
    }

    /// Twelve shards per kind on the cluster, two consumers per shard: every record the producer
    /// confirmed is one row, poison in one shard is one dead letter there, nothing stays pending,
    /// and entries of different shards with the same id (each primary numbers its own) are all kept.
    @Test func twelveShardsDrainExactly() async throws {
        try await TestServers.withTestSchema { postgres in
            let prefix = TestServers.uniqueName("cluster") + ":"
            var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres)
            configuration.redis = cluster
            configuration.shards = 12
            let layout = configuration.layout
            #expect(layout.tagged && configuration.allStreams.count == 24)
            var telemetry = SyntheticTelemetry(seed: 12)
            var requests: [TelemetryRecord] = []
            for number in 0..<6000 {
                let (training, inference) = telemetry.request(number: number)
                requests += [.training(training), .inference(inference)]
            }
            var producerConfiguration = TelemetryProducerConfiguration(redis: cluster, streamPrefix: prefix)
            producerConfiguration.shards = 12
            let producer = TelemetryProducer(configuration: producerConfiguration, logger: TestServers.logger)
            let ids = try await withRunningService(producer) {
                try await producer.send(requests).map { try $0.get() }
            }
            #expect(ids.count == 12_000)
            // A request's two records went to the same shard number.
            let shardOf = { (record: TelemetryRecord) -> Int in
                switch record {
                case .training(let training): layout.shard(forRequestID: training.requestID)
                case .inference(let inference): layout.shard(forRequestID: inference.requestID)
                }
            }
            #expect(stride(from: 0, to: requests.count, by: 2).allSatisfy { shardOf(requests[$0]) == shardOf(requests[$0 + 1]) })
            let poisonStream = layout.stream(kind: "inference", shard: 5)
            _ = try await RedisConnection.withConnection(cluster.routed(by: poisonStream), logger: TestServers.logger) { redis in
                try await redis.add([.streamAdd(to: poisonStream, fields: StreamFields([("v", "1"), ("model", "m")]))])
            }
            let lengths = try await ClusterStreams.lengths(configuration.allStreams, cluster)
            #expect(lengths.reduce(0, +) == 12_001)
            #expect(lengths.allSatisfy { $0 > 300 }, "every shard got records: \(lengths)")

            try await WorkerService(configuration: configuration, logger: TestServers.logger).run()

            #expect(try await TestServers.count(postgres, "training_data") == 6000)
            #expect(try await TestServers.count(postgres, "inference_results") == 6000)
            let shards = try await TestServers.query(postgres, "SELECT count(DISTINCT shard) FROM inference_results")
            #expect(shards.first?.first == "12")
            let (pending, dead) = try await ClusterStreams.pendingAndDead(configuration.allStreams, group: configuration.group, cluster)
            #expect(pending == 0)
            #expect(dead == [DeadLetter.stream(for: poisonStream): 1])
            // (A failed run leaves its uniquely named streams behind; fault-test cleanup is by prefix.)
            try await ClusterStreams.delete(configuration.allStreams, cluster)
        }
    }
}

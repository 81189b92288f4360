import AdTelemetry
import AdTelemetryRecords
import AdWorkerCore
import AdWorkerRedis
import AdWorkerTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Against the TLS cluster `REDIS_CLUSTER_TLS=1 REDIS_CLUSTER_BASE_PORT=21001
/// scripts/redis-cluster.sh start` makes (tls-cluster yes; TLS ports 21101-21106): the slot map
/// gives a TLS client the TLS ports, and a primary killed with -9 loses nothing.
@Suite("Redis Cluster over TLS", .serialized, .timeLimit(.minutes(3)))
struct RedisClusterTLSTests {
    static func cluster() async throws -> RedisConfiguration {
        var configuration = TestServers.redisCluster
        let seeds = ProcessInfo.processInfo.environment["REDIS_TLS_CLUSTER_NODES"]
            ?? (21101...21106).map { "127.0.0.1:\($0)" }.joined(separator: ",")
        configuration.clusterNodes = seeds.split(separator: ",").compactMap { RedisNodeAddress($0) }
        configuration.host = configuration.clusterNodes[0].host
        configuration.port = configuration.clusterNodes[0].port
        configuration.tls = TLSRedis.clientTLS(try await TLSRedis.certificates())
        return configuration
    }

    @Test func theSlotMapGivesATLSClientEveryNodesTLSPort() async throws {
        let cluster = try await Self.cluster()
        let map = try await RedisConnection.withConnection(cluster, logger: TestServers.logger) { try await $0.slotMap() }
        #expect(map.isComplete && map.shards.count == 3)
        let ports = map.shards.flatMap { [$0.primary.address.port] + $0.replicas.map(\.address.port) }
        #expect(ports.allSatisfy { (21101...21106).contains($0) }, "\(ports)")
    }

    /// Three shards; the primary of one is killed with -9 while the producer sends, its replica
    /// takes over (over TLS replication), and every record the producer confirmed is one row.
    @Test func aPrimaryKilledWithMinusNineLosesNoConfirmedRecord() async throws {
        let cluster = try await Self.cluster()
        try await TestServers.withTestSchema { postgres in
            let prefix = TestServers.uniqueName("tlscluster") + ":"
            var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres)
            configuration.redis = cluster
            configuration.shards = 3
            var producerConfiguration = TelemetryProducerConfiguration(redis: cluster, streamPrefix: prefix)
            producerConfiguration.shards = 3
            let producer = TelemetryProducer(configuration: producerConfiguration, logger: TestServers.logger)
            let victimStream = configuration.layout.stream(kind: "inference", shard: 0)
            var telemetry = SyntheticTelemetry(seed: 31)
            let confirmed = try await withRunningService(producer) {
                var confirmed = 0
                for chunk in 0..<20 {
                    if chunk == 5 { try await Self.killPrimary(serving: victimStream, of: cluster) }
                    let records = (0..<250).flatMap { number -> [TelemetryRecord] in
                        let (training, inference) = telemetry.request(number: chunk * 250 + number)
                        return [.training(training), .inference(inference)]
                    }
                    confirmed += try await producer.send(records).map { try $0.get() }.count
                    try await Task.sleep(for: .milliseconds(100))
                }
                return confirmed
            }
            #expect(confirmed == 10_000)
            try await WorkerService(configuration: configuration, logger: TestServers.logger).run()
            #expect(try await TestServers.count(postgres, "training_data") == 5000)
            #expect(try await TestServers.count(postgres, "inference_results") == 5000)
            let (pending, dead) = try await ClusterStreams.pendingAndDead(configuration.allStreams, group: configuration.group, cluster)
            #expect(pending == 0 && dead.isEmpty)
            try await ClusterStreams.delete(configuration.allStreams, cluster)
        }
        try await Self.restartCluster()
    }

    static func killPrimary(serving stream: String, of cluster: RedisConfiguration) async throws {
        let pid = try await RedisConnection.withConnection(cluster.routed(by: stream), logger: TestServers.logger) { redis in
            let info = try await redis.send(RedisCommand("INFO", "server")).string ?? ""
            return info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("process_id:") }.flatMap { Int32($0.dropFirst("process_id:".count)) }
        }
        kill(try #require(pid), SIGKILL)
    }

    /// The killed node back (as a replica of its successor), and every replica linked again.
    static func restartCluster() async throws {
        try await Scripts.run("redis-cluster.sh", ["start"], environment: ["REDIS_CLUSTER_TLS": "1", "REDIS_CLUSTER_BASE_PORT": "21001"])
    }
}

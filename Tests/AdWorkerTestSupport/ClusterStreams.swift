public import AdWorkerCore
public import AdWorkerRedis

/// Streams spread over a cluster's shards, each reached through its slot's node.
public enum ClusterStreams {
    public static func lengths(_ streams: [String], _ cluster: RedisConfiguration) async throws -> [Int] {
        var lengths: [Int] = []
        for stream in streams {
            lengths.append(try await RedisConnection.withConnection(cluster.routed(by: stream), logger: TestServers.logger) {
                try await $0.streamLength(stream)
            })
        }
        return lengths
    }

    public static func pendingAndDead(_ streams: [String], group: String, _ cluster: RedisConfiguration) async throws -> (Int, [String: Int]) {
        var pending = 0
        var dead: [String: Int] = [:]
        for stream in streams {
            let (waiting, letters) = try await RedisConnection.withConnection(cluster.routed(by: stream), logger: TestServers.logger) {
                (try await $0.pendingCount(stream, group: group), try await $0.streamLength(DeadLetter.stream(for: stream)))
            }
            pending += waiting
            if letters > 0 { dead[DeadLetter.stream(for: stream)] = letters }
        }
        return (pending, dead)
    }

    public static func delete(_ streams: [String], _ cluster: RedisConfiguration) async throws {
        for stream in streams {
            _ = try await RedisConnection.withConnection(cluster.routed(by: stream), logger: TestServers.logger) {
                try await $0.delete([stream, DeadLetter.stream(for: stream)])
            }
        }
    }
}

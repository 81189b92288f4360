import AdTelemetryRecords
import AdWorkerRedis
import Logging

extension TelemetryProducer {
    /// For every record of `round` whose outcome is unknown: reads its stream from where it may be;
    /// the round settles those Redis holds with their ids and sends the rest again. A stream that
    /// cannot be read yet keeps its records unknown, until the retry deadline fails them. With
    /// ``RedisConfiguration/replicaWait``, what the stream holds counts only once enough replicas
    /// hold it too (``RedisConnection/confirmReplicated()``); until then its records stay unknown.
    nonisolated func lookUpUnknownOutcomes(_ round: inout Machine.Round, on connections: [RedisConnection]) async {
        for lookup in round.lookups() {
            let connection = connections.count == 1 ? connections[0] : connections[lookup.route]
            do {
                let redisAhead = lookup.needsRedisClock ? try await redisClockAhead(on: connection) : 0
                let stored = try await lookUp(lookup.wanted, in: streams[lookup.route], from: lookup.start(redisAhead: redisAhead), on: connection)
                if !stored.isEmpty { try await connection.confirmReplicated() }
                let (found, resent) = round.found(stored, route: lookup.route)
                unknownOutcome("stored", count: found)
                unknownOutcome("resent", count: resent)
            } catch {
                round.lookupFailed(error, route: lookup.route, cancelled: Task.isCancelled)
            }
        }
    }

    /// Redis's clock less this host's, in milliseconds, from a `TIME` on `connection`: entry ids
    /// come from Redis's clock, whatever this host's says.
    /// An ACL without `+time` (written before the producer asked for it) gets this host's clock,
    /// with a warning, rather than no lookup at all.
    private nonisolated func redisClockAhead(on connection: RedisConnection) async throws(RedisError) -> Int64 {
        let before = Timestamp.now().millisecondsSinceEpoch
        let redis: Int64
        do {
            redis = try await connection.serverTimeMilliseconds()
        } catch where error.code == .noPermission {
            logger.warning(
                "adtelemetry: redis refuses TIME (NOPERM): looking up records by this host's clock, which may differ from Redis's; add +time to the producer's ACL user",
                metadata: ["adtelemetry_error": "\(error)"]
            )
            return 0
        }
        let after = Timestamp.now().millisecondsSinceEpoch
        return redis - (before + after) / 2
    }

    /// Pages through `stream` from `start` to its end (or until every wanted record is found).
    private nonisolated func lookUp(
        _ wanted: Set<RecordOrigin>, in stream: String, from start: StreamEntryID, on connection: RedisConnection
    ) async throws(RedisError) -> [RecordOrigin: StreamEntryID] {
        var stored: [RecordOrigin: StreamEntryID] = [:]
        var next: StreamEntryID? = start
        while let from = next, stored.count < wanted.count {
            let page = try await connection.range(stream, from: from, count: UnknownOutcomeLookup.pageSize)
            stored.merge(UnknownOutcomeLookup.stored(in: page, wanted: wanted)) { first, _ in first }
            next = page.count < UnknownOutcomeLookup.pageSize ? nil : page.last?.id.successor
        }
        return stored
    }

    /// Sends `commands`, each on the connection of its route; results in the commands' order.
    nonisolated func pipeline(
        _ commands: [RedisCommand], routes: [Int], on connections: [RedisConnection]
    ) async -> [Result<StreamEntryID, RedisError>] {
        if connections.count == 1 { return await add(commands, on: connections[0]) }
        // One pipeline per stream, all at once.
        var indices = Array(repeating: [Int](), count: connections.count)
        for (index, route) in routes.enumerated() { indices[route].append(index) }
        var results = [Result<StreamEntryID, RedisError>](repeating: .failure(RedisError(.connectionLost, "not sent")), count: commands.count)
        await withTaskGroup(of: (Int, [Result<StreamEntryID, RedisError>]).self) { group in
            for (route, routeIndices) in indices.enumerated() where !routeIndices.isEmpty {
                let routeCommands = routeIndices.map { commands[$0] }
                group.addTask { (route, await self.add(routeCommands, on: connections[route])) }
            }
            for await (route, routeResults) in group {
                for (index, result) in zip(indices[route], routeResults) { results[index] = result }
            }
        }
        return results
    }

    /// One pipeline. A failure of the whole pipeline is every command's failure.
    private nonisolated func add(_ commands: [RedisCommand], on redis: RedisConnection) async -> [Result<StreamEntryID, RedisError>] {
        do {
            return try await redis.add(commands)
        } catch {
            return Array(repeating: .failure(error), count: commands.count)
        }
    }
}

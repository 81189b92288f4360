import AdWorkerCore
import AdWorkerHTTP
import AdWorkerRedis
import AdWorkerTestSupport
import Testing

@Suite("Readiness from the probe, on real servers", .timeLimit(.minutes(1)))
struct ReadinessTests {
    @Test func readyOnlyOnceBothServersAnsweredTheProbe() async throws {
        let status = WorkerStatus(version: "test")
        #expect(Readiness.reasons(status: status).sorted() == ["postgres not probed yet", "redis not probed yet"])
        try await ReadinessProbe(redis: TestServers.redis, postgres: TestServers.postgres, status: status, logger: TestServers.logger).probeOnce()
        // Both answered; what is left is the worker's own start (no WorkerService runs here).
        #expect(Readiness.reasons(status: status) == ["starting: the consumers have not started yet"])
    }

    /// An error reply to PING (NOAUTH, WRONGPASS, NOPERM: credentials the worker lacks) is not
    /// "reachable": every command the worker needs would be refused the same way.
    @Test func anErrorReplyToPingIsNotReady() async throws {
        let user = TestServers.uniqueName("noping")
        try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
            _ = try await redis.send(RedisCommand("ACL", "SETUSER", user, "on", ">secret", "-@all"))
        }
        var redis = TestServers.redis
        redis.username = user
        redis.password = "secret"
        let status = WorkerStatus(version: "test")
        try await ReadinessProbe(redis: redis, postgres: TestServers.postgres, status: status, logger: TestServers.logger).probeOnce()
        try await RedisConnection.withConnection(TestServers.redis, logger: TestServers.logger) { redis in
            _ = try await redis.send(RedisCommand("ACL", "DELUSER", user))
        }
        let reasons = Readiness.reasons(status: status)
        #expect(reasons.count == 1 && reasons[0].hasPrefix("redis unreachable: Redis's ACL denies a command (NOPERM"), "\(reasons)")
        #expect(reasons.first?.hasSuffix("give the worker's user the commands and keys in deploy/redis/users.acl") == true, "\(reasons)")
    }
}

public import Logging
import Postgres
import Redis
public import Worker

/// What `/readyz` checks: no consumer has a circuit open, and both servers answer now.
public enum Readiness {
    public static func reasons(status: WorkerStatus, configuration: WorkerConfiguration, logger: Logger) async -> [String] {
        var reasons = status.openCircuits.map { "\($0.target) circuit open on consumer \($0.consumer)" }
        var redis = configuration.redis
        redis.connectTimeout = .seconds(1)
        redis.commandTimeout = .seconds(2)
        do {
            _ = try await RedisConnection.withConnection(redis, logger: logger) { try await $0.send(RedisCommand("PING")) }
        } catch {
            reasons.append("redis unreachable: \(error)")
        }
        var postgres = configuration.postgres
        postgres.connectTimeout = .seconds(2)
        do {
            _ = try await PostgresConnection.withConnection(postgres, logger: logger) { try await $0.execute("SELECT 1") }
        } catch {
            reasons.append("postgres unreachable: \(error)")
        }
        return reasons
    }
}

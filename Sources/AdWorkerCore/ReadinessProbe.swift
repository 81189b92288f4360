public import AdWorkerPostgres
public import AdWorkerRedis
public import Logging
public import ServiceLifecycle

/// Probes Redis and PostgreSQL once a second over one long-lived connection each and records what
/// it finds in ``WorkerStatus``, so `/readyz` answers from memory: however often it is asked, the
/// servers see two connections and one probe each per second.
///
/// Redis must answer PING with PONG: `NOAUTH` or `WRONGPASS` (a password the worker lacks) is
/// not ready, however reachable the server is.
public struct ReadinessProbe: Service {
    public static let interval: Duration = .seconds(1)
    /// A probe older than this (the probe itself stuck) counts as not ready.
    public static let maximumAge: Duration = .seconds(5)
    public static let targets = ["redis", "postgres"]

    let redis: RedisConfiguration
    let postgres: PostgresConfiguration
    let status: WorkerStatus
    let logger: Logger

    public init(redis: RedisConfiguration, postgres: PostgresConfiguration, status: WorkerStatus, logger: Logger) {
        var redis = redis
        redis.connectTimeout = .seconds(1)
        redis.commandTimeout = .seconds(2)
        var postgres = postgres
        postgres.connectTimeout = .seconds(2)
        postgres.replyTimeout = .seconds(2)
        postgres.applicationName = "adworker readiness"
        self.redis = redis
        self.postgres = postgres
        self.status = status
        self.logger = logger
    }

    /// Probes until graceful shutdown or cancellation.
    public func run() async throws {
        try await withConnections { redis, postgres in
            while !Task.isShuttingDownGracefully {
                try Task.checkCancellation()
                await probe(redis, postgres)
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: Self.interval) }
            }
        }
    }

    /// One probe of each server, on connections of its own (tests, one-off checks).
    public func probeOnce() async throws {
        try await withConnections { redis, postgres in await probe(redis, postgres) }
    }

    private func withConnections(_ body: (RedisConnection, PostgresConnection) async throws -> Void) async throws {
        try await RedisConnection.withConnection(redis, logger: logger, connectImmediately: false) { redis in
            try await PostgresConnection.withConnection(postgres, logger: logger, connectImmediately: false) { postgres in
                try await body(redis, postgres)
            }
        }
    }

    func probe(_ redis: RedisConnection, _ postgres: PostgresConnection) async {
        do {
            try await redis.ping()
            status.recordProbe("redis", failure: nil)
        } catch {
            status.recordProbe("redis", failure: PermanentFailure(error)?.fix ?? Self.pingFailure(error))
        }
        do {
            try await postgres.execute("SELECT 1")
            status.recordProbe("postgres", failure: nil)
        } catch {
            status.recordProbe("postgres", failure: PermanentFailure(error)?.fix ?? "\(error)")
        }
    }

    /// `/readyz`'s words for a PING that failed: the transport's own error, or what the server answered.
    static func pingFailure(_ error: RedisError) -> String {
        switch error.code {
        case .connectionFailed, .connectionLost, .timeout, .cancelled: "\(error)"
        case .unexpectedReply: "unexpected reply to PING"
        default: "refused PING: \(error.code)"
        }
    }
}

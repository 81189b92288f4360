import AdTelemetryRecords
import AdWorkerPostgres
import AdWorkerRedis
import ArgumentParser
import Foundation
import Logging

/// Options every command shares: where Redis and PostgreSQL are, and logging.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "Redis host (env REDIS_HOST, or REDIS_URL redis[s]://USER:PASSWORD@HOST:PORT; default 127.0.0.1).")
    var redisHost: String?

    @Option(help: "Redis port (env REDIS_PORT; default 6379).")
    var redisPort: Int?

    @Option(help: "Redis Cluster seed nodes, host:port,host:port,... (env REDIS_CLUSTER_NODES); set, --redis-host/--redis-port do not apply.")
    var redisClusterNodes: String?

    @Option(help: "Streams per record kind, 1...64; producers, workers and tools must agree (env ADWORKER_SHARDS; default 1).")
    var shards: Int?

    @Option(help: "PostgreSQL host (env DATABASE_HOST; default 127.0.0.1).")
    var databaseHost: String?

    @Option(help: "PostgreSQL port (env DATABASE_PORT; default 5432).")
    var databasePort: Int?

    @Option(help: "PostgreSQL database (env DATABASE_NAME; default adworker).")
    var databaseName: String?

    @Option(help: "PostgreSQL user (env DATABASE_USER; default adworker).")
    var databaseUser: String?

    @Option(help: "File of KEY=VALUE settings, read under the environment.")
    var envFile: String = ".env"

    @Option(help: "trace, debug, info, notice, warning, error or critical (env ADWORKER_LOG_LEVEL; default info).")
    var logLevel: String?

    @Option(help: "text, or json for one JSON object per line (env ADWORKER_LOG_FORMAT; default text).")
    var logFormat: String?

    func settings() throws -> Settings {
        try Settings.load(dotEnvPath: envFile)
    }

    func redis(_ settings: Settings) throws -> RedisConfiguration {
        var configuration = try singleNodeRedis(settings)
        if let nodes = redisClusterNodes ?? settings.string("REDIS_CLUSTER_NODES"), !nodes.isEmpty {
            configuration.clusterNodes = try Self.nodes(nodes, setting: "REDIS_CLUSTER_NODES", example: "10.0.0.1:6379,10.0.0.2:6379")
            configuration.host = configuration.clusterNodes[0].host
            configuration.port = configuration.clusterNodes[0].port
        }
        configuration.sentinel = try sentinel(settings)
        if configuration.sentinel != nil && configuration.isCluster {
            throw ValidationError("REDIS_SENTINELS and REDIS_CLUSTER_NODES exclude each other (Sentinel watches one primary, a cluster has many): set one")
        }
        return configuration
    }

    /// Sentinel mode, from REDIS_SENTINELS and REDIS_SENTINEL_MASTER (both or neither).
    private func sentinel(_ settings: Settings) throws -> RedisSentinel? {
        let master = settings.string("REDIS_SENTINEL_MASTER")
        guard let list = settings.string("REDIS_SENTINELS"), !list.isEmpty else {
            if master != nil { throw ValidationError("REDIS_SENTINEL_MASTER is set without REDIS_SENTINELS: set the sentinels' host:port list too") }
            return nil
        }
        guard let master, !master.isEmpty else {
            throw ValidationError("REDIS_SENTINELS needs REDIS_SENTINEL_MASTER: the name the sentinels monitor the primary by (sentinel monitor NAME ...)")
        }
        return RedisSentinel(
            nodes: try Self.nodes(list, setting: "REDIS_SENTINELS", example: "10.0.0.1:26379,10.0.0.2:26379"), masterName: master,
            username: settings.string("REDIS_SENTINEL_USERNAME"), password: try settings.secret("REDIS_SENTINEL_PASSWORD")
        )
    }

    private static func nodes(_ list: String, setting: String, example: String) throws -> [RedisNodeAddress] {
        try list.split(separator: ",").map { text in
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            guard let node = RedisNodeAddress(trimmed) else {
                throw ValidationError("\(setting): '\(trimmed)' is not host:port; expected e.g. \(example)")
            }
            return node
        }
    }

    /// The single Redis at REDIS_HOST:REDIS_PORT, cluster settings aside (bench's comparison).
    /// REDIS_URL (or REDIS_URL_FILE), when set, is the base, as DATABASE_URL is for PostgreSQL:
    /// REDIS_HOST and REDIS_PORT do not apply, the flags override its parts, and REDIS_USERNAME and
    /// REDIS_PASSWORD fill in only what it lacks.
    func singleNodeRedis(_ settings: Settings) throws -> RedisConfiguration {
        var configuration: RedisConfiguration
        if let url = try settings.secret("REDIS_URL") {
            do {
                configuration = try RedisConfiguration(url: url)
            } catch {
                throw ValidationError(error.message)
            }
            configuration.host = redisHost ?? configuration.host
            configuration.port = redisPort ?? configuration.port
        } else {
            configuration = RedisConfiguration(
                host: redisHost ?? settings.string("REDIS_HOST") ?? "127.0.0.1",
                port: try redisPort ?? settings.integer("REDIS_PORT") ?? 6379
            )
        }
        configuration.username = configuration.username ?? settings.string("REDIS_USERNAME")
        configuration.password = try configuration.password ?? settings.secret("REDIS_PASSWORD")
        configuration.tls = try redisTLS(settings, urlSaysTLS: configuration.tls != nil)
        configuration.replicaWait = try replicaWait(settings, commandTimeout: configuration.commandTimeout)
        return configuration
    }

    /// ADWORKER_REDIS_WAIT_REPLICAS=N (0 or unset: off) and ADWORKER_REDIS_WAIT_TIMEOUT_MS.
    private func replicaWait(_ settings: Settings, commandTimeout: Duration) throws -> RedisReplicaWait? {
        let replicas = try settings.integer("ADWORKER_REDIS_WAIT_REPLICAS") ?? 0
        guard replicas >= 0 else { throw ValidationError("ADWORKER_REDIS_WAIT_REPLICAS must be 0 (off) or the number of replicas that must hold a write") }
        let milliseconds = try settings.integer("ADWORKER_REDIS_WAIT_TIMEOUT_MS") ?? 1000
        guard milliseconds >= 10, Duration.milliseconds(milliseconds) < commandTimeout else {
            throw ValidationError("ADWORKER_REDIS_WAIT_TIMEOUT_MS must be 10 or more and under the Redis command timeout (\(commandTimeout))")
        }
        guard replicas > 0 else { return nil }
        return RedisReplicaWait(replicas: replicas, timeout: .milliseconds(milliseconds))
    }

    /// TLS is on with `rediss://` or REDIS_TLS=1; its files and name mean nothing without it, so
    /// setting them with TLS off is refused rather than silently spoken in plaintext.
    private func redisTLS(_ settings: Settings, urlSaysTLS: Bool) throws -> RedisTLS? {
        let switchedOn = try settings.boolean("REDIS_TLS")
        if switchedOn == false, urlSaysTLS {
            throw ValidationError("REDIS_TLS=0 contradicts rediss:// in REDIS_URL: drop one")
        }
        let tlsKeys = ["REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE", "REDIS_TLS_SERVER_NAME", "REDIS_TLS_VERIFY"]
        guard switchedOn ?? urlSaysTLS else {
            if let key = tlsKeys.first(where: { settings.string($0) != nil }) {
                throw ValidationError("\(key) is set but TLS is off: set REDIS_TLS=1 or use rediss:// in REDIS_URL")
            }
            return nil
        }
        return RedisTLS(
            certificateAuthorityFile: settings.string("REDIS_TLS_CA_FILE"), certificateFile: settings.string("REDIS_TLS_CERT_FILE"),
            keyFile: settings.string("REDIS_TLS_KEY_FILE"), serverName: settings.string("REDIS_TLS_SERVER_NAME"),
            verifiesServer: try settings.boolean("REDIS_TLS_VERIFY") ?? true
        )
    }

    /// How streams of `prefix` are named: tagged shards on a cluster or with more than one shard.
    func layout(_ settings: Settings, prefix: String, redis: RedisConfiguration) throws -> ShardLayout {
        let count = try shards ?? settings.integer("ADWORKER_SHARDS") ?? 1
        guard (1...ShardLayout.maximumShards).contains(count) else {
            throw ValidationError("shards must be 1...\(ShardLayout.maximumShards), not \(count)")
        }
        let layout = ShardLayout(prefix: prefix, count: count, tagged: redis.isCluster)
        if layout.tagged, prefix.contains("{") || prefix.contains("}") {
            throw ValidationError("the stream prefix '\(prefix)' must not contain { or }: sharded stream names carry their own hash tag")
        }
        return layout
    }

    /// DATABASE_URL (or DATABASE_URL_FILE), when set, is the base: the DATABASE_HOST/PORT/NAME/USER
    /// variables do not apply (a copied .env.template sets them all), flags for them override the
    /// URL's parts, and DATABASE_PASSWORD fills in only a password the URL lacks.
    func postgres(_ settings: Settings) throws -> PostgresConfiguration {
        let url = try settings.secret("DATABASE_URL")
        if let url {
            do {
                _ = try PostgresConfiguration.inspect(url: url)
            } catch {
                throw ValidationError("\(error.message); expected postgres://USER:PASSWORD@HOST:PORT/DATABASE or key=value pairs")
            }
        }
        var configuration = PostgresConfiguration(
            host: databaseHost ?? settings.string("DATABASE_HOST") ?? "127.0.0.1",
            port: try databasePort ?? settings.integer("DATABASE_PORT") ?? 5432,
            database: databaseName ?? settings.string("DATABASE_NAME") ?? "adworker",
            user: databaseUser ?? settings.string("DATABASE_USER") ?? "adworker",
            password: try settings.secret("DATABASE_PASSWORD"),
            sslMode: settings.string("DATABASE_SSLMODE"),
            url: url
        )
        configuration.sslRootCertificate = settings.string("DATABASE_SSLROOTCERT")
        configuration.sslCertificate = settings.string("DATABASE_SSLCERT")
        configuration.sslKey = settings.string("DATABASE_SSLKEY")
        configuration.urlOverrides = Set(
            [
                databaseHost.map { _ in .host }, databasePort.map { _ in .port }, databaseName.map { _ in .database },
                databaseUser.map { _ in .user },
            ].compactMap { $0 }
        )
        if let seconds = try settings.decimal("ADWORKER_STATEMENT_TIMEOUT") {
            guard seconds >= 0.1 else { throw ValidationError("ADWORKER_STATEMENT_TIMEOUT must be at least 0.1 s") }
            configuration.statementTimeout = .milliseconds(Int64(seconds * 1000))
            configuration.replyTimeout = configuration.statementTimeout + .seconds(5)
        }
        return configuration
    }

    /// Ignores SIGPIPE (hiredis writes with write(2), and a closed socket would kill the process)
    /// and bootstraps logging to stderr. Call once, first thing in a command's `run`.
    func bootstrap(_ settings: Settings, label: String) throws -> Logger {
        signal(SIGPIPE, SIG_IGN)
        let levelText = logLevel ?? settings.string("ADWORKER_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: levelText) else {
            throw ValidationError("log level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), not '\(levelText)'")
        }
        let format = logFormat ?? settings.string("ADWORKER_LOG_FORMAT") ?? "text"
        switch format {
        case "text":
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        case "json":
            LoggingSystem.bootstrap { label in JSONLogHandler(label: label, logLevel: level) }
        default:
            throw ValidationError("log format must be text or json, not '\(format)'")
        }
        return Logger(label: label)
    }
}

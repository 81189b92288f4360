import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import Logging

/// `adworker status`: the daemon's `/status` and `/readyz` as a table; without a daemon, what
/// Redis alone can tell. Exit 0 healthy, 1 degraded, 2 daemon down or unreachable.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Shows throughput, latency, queue and errors per stream; exit 0 healthy, 1 degraded, 2 down.",
        discussion: "Degraded: the daemon is not ready (a server unreachable, a circuit open), a consumer has stopped, or attempts failed in the last minute. Without a reachable daemon, stream length, lag, pending and consumers come straight from Redis, and PostgreSQL is asked whether it answers and for each table's newest row."
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The daemon's HTTP address (env ADWORKER_STATUS_URL; default http://127.0.0.1:9464).")
    var url: String?

    @Option(help: "Stream name prefix, for the Redis view (env ADWORKER_STREAM_PREFIX; default 'adserving:').")
    var streamPrefix: String?

    @Option(help: "Consumer group, for the Redis view (env ADWORKER_GROUP; default adworker).")
    var group: String?

    @Flag(help: "Print JSON.")
    var json = false

    enum Health: Int32, Encodable {
        case healthy = 0, degraded = 1, down = 2
    }

    struct Report: Encodable {
        var health: Health
        var daemon: String
        var reasons: [String]
        var status: WorkerStatus.Snapshot?
        var redis: [StreamQueue]?
        var postgres: DatabaseView?
        /// On a Redis Cluster: its nodes and which primary holds which shard streams.
        var cluster: [ClusterNode]?
        /// Under Sentinel: the primary in use.
        var sentinel: SentinelView?
    }

    struct SentinelView: Encodable {
        var master: String
        var primary: String?
        var sentinels: [String]
    }

    struct ClusterNode: Encodable {
        var node: String
        var role: String
        var health: String
        /// Slot ranges, e.g. `0-5460`; replicas list their primary's.
        var slots: [String]
        /// The shard streams (both kinds) whose slot this primary serves.
        var streams: [String]
    }

    /// With the daemon down: does PostgreSQL answer, and how recent is each table's newest row.
    struct DatabaseView: Encodable {
        var reachable: Bool
        var error: String?
        var tables: [TableFreshness]
    }

    struct TableFreshness: Encodable {
        var table: String
        /// The newest row's `enqueued_at` (its entry's Redis time), ISO 8601; nil for an empty table.
        var newestEnqueuedAt: String?
    }

    struct StreamQueue: Encodable {
        var stream: String
        var length: Int
        var lag: Int?
        var pending: Int
        var deadLetters: Int
        var consumers: [String]
    }

    func run() async throws {
        let settings = try connection.settings()
        let logger = try connection.bootstrap(settings, label: "adworker.status")
        let base = url ?? settings.string("ADWORKER_STATUS_URL") ?? "http://127.0.0.1:9464"
        let redisConfiguration = try connection.redis(settings)
        let prefix = streamPrefix ?? settings.string("ADWORKER_STREAM_PREFIX") ?? "adserving:"
        let layout = try connection.layout(settings, prefix: prefix, redis: redisConfiguration)
        let streams = RecordKind.allCases.flatMap { layout.streams(kind: $0.rawValue) }
        var report: Report
        if let snapshot = try? await Self.fetch(WorkerStatus.Snapshot.self, from: base + "/status") {
            let readiness = try? await Self.fetch(ReadinessReply.self, from: base + "/readyz")
            var reasons = readiness?.reasons ?? (readiness == nil ? ["/readyz did not answer"] : [])
            reasons += snapshot.consumers.filter { $0.state != ConsumerState.running.rawValue }.map { "consumer \($0.stream)/\($0.consumer) \($0.state)" }
            reasons += snapshot.streams.filter { $0.failedAttempts > 0 }.map { "\($0.stream): \($0.failedAttempts) failed attempts in the last minute" }
            report = Report(health: reasons.isEmpty ? .healthy : .degraded, daemon: "up", reasons: reasons, status: snapshot, redis: nil)
        } else {
            report = Report(health: .down, daemon: "down", reasons: ["no answer from \(base)/status"], status: nil, redis: nil)
            let group = group ?? settings.string("ADWORKER_GROUP") ?? "adworker"
            do {
                var queues: [StreamQueue] = []
                for stream in streams {
                    try await RedisConnection.withConnection(redisConfiguration.routed(by: stream), logger: logger) { redis in
                        let info = try await redis.groups(of: stream).first { $0.name == group }
                        let consumers = info == nil ? [] : try await redis.consumers(of: stream, group: group)
                        queues.append(StreamQueue(
                            stream: stream, length: try await redis.streamLength(stream), lag: info?.lag, pending: info?.pending ?? 0,
                            deadLetters: try await redis.streamLength(DeadLetter.stream(for: stream)),
                            consumers: consumers.map { "\($0.name) (pending \($0.pending), idle \($0.idle))" }
                        ))
                    }
                }
                report.redis = queues
            } catch {
                report.reasons.append("redis: \(error)")
            }
            report.postgres = await Self.database(try connection.postgres(settings), logger: logger)
            if let error = report.postgres?.error { report.reasons.append("postgres: \(error)") }
        }
        await Self.addTopology(to: &report, redisConfiguration, streams: streams, logger: logger)
        if json {
            try printJSON(report)
        } else {
            print(Self.table(report))
        }
        throw ExitCode(report.health.rawValue)
    }

    /// The newest `enqueued_at` per table: the primary key's leading column, so an index lookup.
    static func database(_ configuration: PostgresConfiguration, logger: Logger) async -> DatabaseView {
        var configuration = configuration
        configuration.connectTimeout = .seconds(3)
        configuration.replyTimeout = .seconds(5)
        do {
            return try await PostgresConnection.withConnection(configuration, logger: logger) { postgres in
                var tables: [TableFreshness] = []
                for kind in RecordKind.allCases {
                    let table = RowEncoder.target(for: kind).table
                    let newest = try await postgres.query(
                        "SELECT to_char(max(enqueued_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM \(table)"
                    )
                    tables.append(TableFreshness(table: table, newestEnqueuedAt: newest.first?.first ?? nil))
                }
                return DatabaseView(reachable: true, error: nil, tables: tables)
            }
        } catch {
            return DatabaseView(reachable: false, error: "\(error)", tables: [])
        }
    }

    struct ReadinessReply: Decodable {
        var status: String
        var reasons: [String]?
    }

    /// On a Redis Cluster, its nodes and shards; under Sentinel, the primary the sentinels name
    /// now (the one the worker and the producer use). A problem makes a healthy report degraded.
    static func addTopology(to report: inout Report, _ redis: RedisConfiguration, streams: [String], logger: Logger) async {
        if redis.isCluster {
            do {
                let map = try await RedisConnection.withConnection(redis, logger: logger) { try await $0.slotMap() }
                report.cluster = Self.clusterView(map, streams: streams)
                if !map.isComplete { report.reasons.append("redis cluster: some hash slots have no primary (CLUSTERDOWN for their keys)") }
                for node in map.nodes where node.health != .online {
                    report.reasons.append("redis cluster: node \(node.address) is \(node.health)")
                }
            } catch {
                report.reasons.append("redis cluster: \(error)")
            }
        } else if let sentinel = redis.sentinel {
            do {
                let primary = try await RedisConnection.withConnection(redis, logger: logger) { redis in
                    try await redis.ping()
                    return await redis.connectedNode
                }
                report.sentinel = SentinelView(
                    master: sentinel.masterName, primary: primary?.description, sentinels: sentinel.nodes.map(\.description))
            } catch {
                report.reasons.append("redis sentinel: \(error)")
            }
        }
        if report.health == .healthy, !report.reasons.isEmpty { report.health = .degraded }
    }

    static func clusterView(_ map: SlotMap, streams: [String]) -> [ClusterNode] {
        map.shards.flatMap { shard -> [ClusterNode] in
            let slots = shard.slots.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
            let held = streams.filter { stream in shard.slots.contains { $0.contains(HashSlot(forKey: stream)) } }
            return [ClusterNode(node: "\(shard.primary.address)", role: "primary", health: "\(shard.primary.health)", slots: slots, streams: held)]
                + shard.replicas.map { ClusterNode(node: "\($0.address)", role: "replica", health: "\($0.health)", slots: slots, streams: []) }
        }
    }

    static func fetch<Value: Decodable>(_ type: Value.Type, from address: String) async throws -> Value {
        guard let url = URL(string: address) else { throw ValidationError("'\(address)' is not a URL") }
        var request = URLRequest(url: url)
        request.timeoutInterval = 3
        let (data, _) = try await URLSession.shared.data(for: request)
        return try JSONDecoder().decode(Value.self, from: data)
    }

    static func table(_ report: Report) -> String {
        var lines = ["adworker: \(report.health) (daemon \(report.daemon))"]
        lines += report.reasons.map { "  ! \($0)" }
        func number(_ value: Double?, _ digits: Int = 0) -> String { value.map { String(format: "%.\(digits)f", $0) } ?? "-" }
        func number(_ value: Int?) -> String { value.map(String.init) ?? "-" }
        func row(_ cells: [String], _ widths: [Int]) -> String {
            zip(cells, widths).map { cell, width in cell.count >= width ? cell + " " : cell + String(repeating: " ", count: width - cell.count) }
                .joined()
        }
        if let status = report.status {
            lines.append("version \(status.version), up \(Int(status.uptimeSeconds)) s; figures over the last minute")
            let widths = [24, 10, 8, 8, 8, 9, 9, 9, 11, 8, 8]
            lines.append(row(["STREAM", "ROWS/S", "P50 MS", "P95 MS", "P99 MS", "QUEUE", "LAG", "PENDING", "ERROR RATE", "FAILED", "DEAD"], widths))
            for stream in status.streams {
                lines.append(row([
                    stream.stream, number(stream.rowsPerSecond, 1), number(stream.latencyP50Milliseconds), number(stream.latencyP95Milliseconds),
                    number(stream.latencyP99Milliseconds), number(stream.queueLength), number(stream.lag), number(stream.pending),
                    String(format: "%.2f %%", stream.errorRate * 100), String(stream.failedAttempts), number(stream.deadLetterStreamLength),
                ], widths))
            }
            lines.append("consumers: " + status.consumers.map { "\($0.stream)/\($0.consumer) \($0.state)" + ($0.openCircuits.isEmpty ? "" : " (open: \($0.openCircuits.joined(separator: ", ")))") }.joined(separator: "; "))
        }
        if let queues = report.redis {
            lines.append("from Redis:")
            let widths = [24, 10, 9, 9, 8]
            lines.append(row(["STREAM", "LENGTH", "LAG", "PENDING", "DEAD"], widths) + "CONSUMERS")
            for queue in queues {
                lines.append(
                    row([queue.stream, String(queue.length), number(queue.lag), String(queue.pending), String(queue.deadLetters)], widths)
                        + queue.consumers.joined(separator: ", ")
                )
            }
        }
        if let cluster = report.cluster {
            lines.append("redis cluster:")
            let widths = [22, 9, 9, 20]
            lines.append(row(["NODE", "ROLE", "HEALTH", "SLOTS"], widths) + "SHARD STREAMS")
            for node in cluster {
                lines.append(row([node.node, node.role, node.health, node.slots.joined(separator: ",")], widths) + node.streams.joined(separator: " "))
            }
        }
        if let sentinel = report.sentinel {
            lines.append("redis under sentinel: master \(sentinel.master), primary \(sentinel.primary ?? "-") (sentinels \(sentinel.sentinels.joined(separator: ",")))")
        }
        if let database = report.postgres {
            lines.append("from PostgreSQL: " + (database.reachable ? "reachable" : "unreachable"))
            for table in database.tables {
                lines.append("  \(table.table): newest row \(table.newestEnqueuedAt ?? "none")")
            }
        }
        return lines.joined(separator: "\n")
    }
}

import AdWorkerPostgres
import Logging
import Synchronization

/// A fixed set of PostgreSQL connections that the sinks of all shards of one record kind borrow
/// for one insert at a time. Sharded streams multiply readers and sinks (one consumer per shard),
/// not database connections: a kind holds `sinkLanes × concurrency` of them, as many as one
/// unsharded stream always did.
final class PostgresPool: Sendable {
    private struct State {
        var idle: [PostgresConnection]
        var waiters: [(id: Int, continuation: CheckedContinuation<PostgresConnection, any Error>)] = []
        var nextWaiter = 0
    }

    private let state: Mutex<State>

    private init(_ connections: [PostgresConnection]) {
        state = Mutex(State(idle: connections))
    }

    /// Opens `size` connections lazily (each connects on first use, so a database that is down
    /// at start-up is retried by the sinks' breakers), runs `body` with the pool, closes them.
    static func withPool<Result>(
        size: Int, configuration: PostgresConfiguration, logger: Logger, _ body: (PostgresPool) async throws -> sending Result
    ) async throws -> sending Result {
        func open(_ connections: [PostgresConnection]) async throws -> sending Result {
            if connections.count == size { return try await body(PostgresPool(connections)) }
            return try await PostgresConnection.withConnection(configuration, logger: logger, connectImmediately: false) { connection in
                try await open(connections + [connection])
            }
        }
        return try await open([])
    }

    /// A pool of `size` for each configuration (a node each), as ``withPool(size:configuration:logger:_:)``.
    static func withPools<Result>(
        size: Int, configurations: [PostgresConfiguration], logger: Logger, _ body: ([PostgresPool]) async throws -> sending Result
    ) async throws -> sending Result {
        func open(_ pools: [PostgresPool]) async throws -> sending Result {
            if pools.count == configurations.count { return try await body(pools) }
            return try await withPool(size: size, configuration: configurations[pools.count], logger: logger) { pool in
                try await open(pools + [pool])
            }
        }
        return try await open([])
    }

    /// Runs `body` with a connection of its own, waiting for one if all are lent.
    func withConnection<Result>(_ body: (PostgresConnection) async throws -> sending Result) async throws -> sending Result {
        let connection = try await borrow()
        defer { giveBack(connection) }
        return try await body(connection)
    }

    private func borrow() async throws -> PostgresConnection {
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<PostgresConnection, any Error>) in
                enum Outcome {
                    case ready(PostgresConnection)
                    case cancelled
                    case waiting
                }
                let outcome = state.withLock { state -> Outcome in
                    if Task.isCancelled { return .cancelled }
                    if let connection = state.idle.popLast() { return .ready(connection) }
                    state.waiters.append((id, continuation))
                    return .waiting
                }
                switch outcome {
                case .ready(let connection): continuation.resume(returning: connection)
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .waiting: break
                }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<PostgresConnection, any Error>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    private func giveBack(_ connection: PostgresConnection) {
        let waiter = state.withLock { state -> CheckedContinuation<PostgresConnection, any Error>? in
            if state.waiters.isEmpty {
                state.idle.append(connection)
                return nil
            }
            return state.waiters.removeFirst().continuation
        }
        waiter?.resume(returning: connection)
    }
}

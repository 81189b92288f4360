import AdWorkerRedis
import Logging
import ServiceLifecycle

/// With ``RedisConfiguration/replicaWait``: holds a read's entries (or a dead-letter
/// transaction's outcome) until the replicas have them, asking again after each WAIT that fell
/// short on the same connection. A shortfall is not a failed delivery: re-reading the entries
/// would count one against each, and a long replica outage would dead-letter good entries as
/// `max_deliveries_exceeded`. While it waits, `/readyz` says why.
struct ReplicationGate {
    let stream: String
    let logger: Logger
    let status: WorkerStatus?
    /// ADWORKER_REDIS_WAIT_REPLICAS is set.
    let waits: Bool

    /// - Parameter confirm: Throws ``RedisError/Code/replicationShortfall`` until the replicas
    ///   hold it (one of `RedisConnection`'s `waitForReplicas`), on the connection that read or wrote.
    /// - Returns: true once they do; false when the worker stops first (what it waited for stays
    ///   pending in Redis, for the next run).
    /// - Throws: What else the WAIT met (a lost connection: then the outcome is unknown).
    func wait(for activity: String, _ confirm: () async throws -> Void) async throws -> Bool {
        guard waits else { return true }
        let problemKey = "replicas \(stream) \(activity)"
        var shortfalls = 0
        defer { if shortfalls > 0 { status?.problem(problemKey, nil) } }
        while true {
            do {
                try await confirm()
                if shortfalls > 0 { logger.notice("redis replicas caught up", metadata: ["activity": "\(activity)", "waits": "\(shortfalls)"]) }
                return true
            } catch let error as RedisError {
                guard error.code == .replicationShortfall else { throw error }
                if shortfalls == 0 {
                    logger.warning("redis replicas do not acknowledge in time; holding on (ADWORKER_REDIS_WAIT_REPLICAS)", metadata: ["activity": "\(activity)", "error": "\(error.message)"])
                    status?.problem(problemKey, "redis replicas behind: \(error.message) (ADWORKER_REDIS_WAIT_REPLICAS); \(activity) waits for them")
                }
                shortfalls += 1
                if Task.isCancelled || Task.isShuttingDownGracefully { return false }
            }
        }
    }
}

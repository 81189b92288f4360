/// Log metadata keys used by the worker, in one place.
enum LogKey {
    static let stream = "stream"
    static let consumer = "consumer"
    static let entryID = "entry_id"
    static let batchSize = "batch_size"
    static let error = "error"
    static let reason = "reason"
    static let attempt = "attempt"
    static let delay = "delay"
    static let role = "role"
    static let postgresNode = "postgres_node"
}

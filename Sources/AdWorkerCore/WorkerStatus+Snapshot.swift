/// What `/status` serves (and the pool merges, and `adworker status` prints): Codable, so the JSON
/// is these types' field names.
extension WorkerStatus {
    /// One stream's last minute, and its queue as last sampled.
    public struct StreamSnapshot: Sendable, Codable, Equatable {
        public var stream: String
        public var entriesPerSecond: Double
        public var rowsPerSecond: Double
        public var latencyP50Milliseconds: Double?
        public var latencyP95Milliseconds: Double?
        public var latencyP99Milliseconds: Double?
        /// Dead-lettered entries over entries read, in the last minute.
        public var errorRate: Double
        public var failedAttempts: Int
        public var totalEntries: Int
        public var totalRows: Int
        public var totalDeadLetters: Int
        public var streamLength: Int?
        public var lag: Int?
        public var pending: Int?
        /// Lag plus pending: entries not yet stored.
        public var queueLength: Int?
        /// Letters in the stream's dead-letter stream, as last sampled.
        public var deadLetterStreamLength: Int?

        public init(
            stream: String, entriesPerSecond: Double, rowsPerSecond: Double, latencyP50Milliseconds: Double?,
            latencyP95Milliseconds: Double?, latencyP99Milliseconds: Double?, errorRate: Double, failedAttempts: Int,
            totalEntries: Int, totalRows: Int, totalDeadLetters: Int, streamLength: Int?, lag: Int?, pending: Int?, queueLength: Int?,
            deadLetterStreamLength: Int? = nil
        ) {
            self.stream = stream
            self.entriesPerSecond = entriesPerSecond
            self.rowsPerSecond = rowsPerSecond
            self.latencyP50Milliseconds = latencyP50Milliseconds
            self.latencyP95Milliseconds = latencyP95Milliseconds
            self.latencyP99Milliseconds = latencyP99Milliseconds
            self.errorRate = errorRate
            self.failedAttempts = failedAttempts
            self.totalEntries = totalEntries
            self.totalRows = totalRows
            self.totalDeadLetters = totalDeadLetters
            self.streamLength = streamLength
            self.lag = lag
            self.pending = pending
            self.queueLength = queueLength
            self.deadLetterStreamLength = deadLetterStreamLength
        }
    }

    public struct ConsumerSnapshot: Sendable, Codable, Equatable {
        public var consumer: String
        public var stream: String
        public var state: String
        public var openCircuits: [String]

        public init(consumer: String, stream: String, state: String, openCircuits: [String]) {
            self.consumer = consumer
            self.stream = stream
            self.state = state
            self.openCircuits = openCircuits
        }
    }

    public struct Snapshot: Sendable, Codable, Equatable {
        public var version: String
        public var uptimeSeconds: Double
        public var streams: [StreamSnapshot]
        public var consumers: [ConsumerSnapshot]
        /// The last minutes, for the status page's charts.
        public var history: History?

        public init(
            version: String, uptimeSeconds: Double, streams: [StreamSnapshot], consumers: [ConsumerSnapshot], history: History? = nil
        ) {
            self.version = version
            self.uptimeSeconds = uptimeSeconds
            self.streams = streams
            self.consumers = consumers
            self.history = history
        }
    }

    /// One point every ``History/intervalSeconds`` over the last ``History/capacity`` intervals, oldest first.
    public struct History: Sendable, Codable, Equatable {
        public static let interval = 5
        public static let capacity = 120

        public var intervalSeconds: Int
        public var points: [HistoryPoint]

        public init(intervalSeconds: Int = History.interval, points: [HistoryPoint]) {
            self.intervalSeconds = intervalSeconds
            self.points = points
        }
    }

    public struct HistoryPoint: Sendable, Codable, Equatable {
        /// The end of the interval, in seconds since the epoch (a multiple of the interval).
        public var time: Double
        public var streams: [String: HistoryStreamPoint]

        public init(time: Double, streams: [String: HistoryStreamPoint]) {
            self.time = time
            self.streams = streams
        }
    }

    /// One stream over one interval: its rows per second and latency, and its lag as last sampled.
    public struct HistoryStreamPoint: Sendable, Codable, Equatable {
        public var rowsPerSecond: Double
        public var lag: Int?
        public var latencyP99Milliseconds: Double?

        public init(rowsPerSecond: Double, lag: Int?, latencyP99Milliseconds: Double?) {
            self.rowsPerSecond = rowsPerSecond
            self.lag = lag
            self.latencyP99Milliseconds = latencyP99Milliseconds
        }
    }
}

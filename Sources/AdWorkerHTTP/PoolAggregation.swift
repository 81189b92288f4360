public import AdWorkerCore

/// Merging what the worker processes of a pool report into one endpoint.
public enum PoolAggregation {
    /// Prometheus text from each process, merged into one exposition: each family's HELP and TYPE
    /// once, every sample with a `process` label added, so `sum without (process)` gives the
    /// pool's figure. Nothing is summed here: a gauge such as stream length would be wrong summed.
    public static func mergeMetrics(_ texts: [(process: Int, text: String)]) -> String {
        var order: [String] = []
        var headers: [String: [String]] = [:]
        var samples: [String: [String]] = [:]
        for (process, text) in texts {
            var family = ""
            for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
                if line.hasPrefix("# ") {
                    let parts = line.split(separator: " ", maxSplits: 3)
                    guard parts.count >= 3 else { continue }
                    family = String(parts[2])
                    if headers[family] == nil { order.append(family); headers[family] = [] }
                    if !headers[family]!.contains(String(line)) { headers[family]!.append(String(line)) }
                    continue
                }
                let name = String(line.prefix { $0 != "{" && $0 != " " })
                if family.isEmpty || !name.hasPrefix(family) {
                    family = name
                    if headers[family] == nil { order.append(family); headers[family] = [] }
                }
                samples[family, default: []].append(withProcessLabel(String(line), process: process))
            }
        }
        var output = ""
        for family in order {
            for header in headers[family] ?? [] { output += header + "\n" }
            for sample in samples[family] ?? [] { output += sample + "\n" }
        }
        return output
    }

    private static func withProcessLabel(_ sample: String, process: Int) -> String {
        if let brace = sample.firstIndex(of: "{") {
            return String(sample[...brace]) + "process=\"\(process)\"," + String(sample[sample.index(after: brace)...])
        }
        guard let space = sample.firstIndex(of: " ") else { return sample }
        return String(sample[..<space]) + "{process=\"\(process)\"}" + String(sample[space...])
    }

    /// The pool's status: per stream, rates and totals summed over processes, queue figures (the
    /// same stream, sampled by each) from the freshest, latency quantiles the worst of any process
    /// (exact merging needs the samples; the worst is the figure to alert on), history points
    /// merged the same way. Consumers of every
    /// process; processes without a snapshot appear as one consumer in the state given.
    public static func mergeStatus(
        version: String, uptimeSeconds: Double, processes: [(process: Int, state: WorkerProcessState, snapshot: WorkerStatus.Snapshot?)]
    ) -> WorkerStatus.Snapshot {
        var streams: [String: WorkerStatus.StreamSnapshot] = [:]
        var deadPerMinute: [String: Double] = [:]
        var consumers: [WorkerStatus.ConsumerSnapshot] = []
        var history: [Double: [String: WorkerStatus.HistoryStreamPoint]] = [:]
        for (process, state, snapshot) in processes {
            guard let snapshot else {
                consumers.append(WorkerStatus.ConsumerSnapshot(consumer: "process \(process)", stream: "*", state: state.rawValue, openCircuits: []))
                continue
            }
            consumers += snapshot.consumers
            // Points end on multiples of the interval in every process, so equal times line up.
            for point in snapshot.history?.points ?? [] {
                for (stream, figures) in point.streams {
                    guard var merged = history[point.time, default: [:]][stream] else {
                        history[point.time, default: [:]][stream] = figures
                        continue
                    }
                    merged.rowsPerSecond += figures.rowsPerSecond
                    merged.lag = merged.lag ?? figures.lag
                    merged.latencyP99Milliseconds = worst(merged.latencyP99Milliseconds, figures.latencyP99Milliseconds)
                    history[point.time]![stream] = merged
                }
            }
            for stream in snapshot.streams {
                deadPerMinute[stream.stream, default: 0] += stream.errorRate * stream.entriesPerSecond
                guard var merged = streams[stream.stream] else {
                    streams[stream.stream] = stream
                    continue
                }
                merged.entriesPerSecond += stream.entriesPerSecond
                merged.rowsPerSecond += stream.rowsPerSecond
                merged.failedAttempts += stream.failedAttempts
                merged.totalEntries += stream.totalEntries
                merged.totalRows += stream.totalRows
                merged.totalDeadLetters += stream.totalDeadLetters
                merged.latencyP50Milliseconds = worst(merged.latencyP50Milliseconds, stream.latencyP50Milliseconds)
                merged.latencyP95Milliseconds = worst(merged.latencyP95Milliseconds, stream.latencyP95Milliseconds)
                merged.latencyP99Milliseconds = worst(merged.latencyP99Milliseconds, stream.latencyP99Milliseconds)
                merged.streamLength = merged.streamLength ?? stream.streamLength
                merged.lag = merged.lag ?? stream.lag
                merged.pending = merged.pending ?? stream.pending
                merged.queueLength = merged.queueLength ?? stream.queueLength
                // Sampled from the stream itself, the same in every process: taken, not summed.
                merged.deadLetterStreamLength = merged.deadLetterStreamLength ?? stream.deadLetterStreamLength
                streams[stream.stream] = merged
            }
        }
        for (name, dead) in deadPerMinute {
            guard let entries = streams[name]?.entriesPerSecond else { continue }
            streams[name]?.errorRate = entries == 0 ? 0 : dead / entries
        }
        let points = history.keys.sorted().suffix(WorkerStatus.History.capacity).map { WorkerStatus.HistoryPoint(time: $0, streams: history[$0]!) }
        return WorkerStatus.Snapshot(
            version: version, uptimeSeconds: uptimeSeconds, streams: streams.keys.sorted().map { streams[$0]! }, consumers: consumers,
            history: WorkerStatus.History(points: points)
        )
    }

    private static func worst(_ lhs: Double?, _ rhs: Double?) -> Double? {
        switch (lhs, rhs) {
        case (let lhs?, let rhs?): max(lhs, rhs)
        default: lhs ?? rhs
        }
    }
}

/// One stream's last ``seconds`` seconds, one bucket per wall-clock second: entries, rows, dead
/// letters, failed attempts and a bounded uniform sample of end-to-end latencies. A pure value:
/// the caller says which second it is, so tests move time by hand.
struct ThroughputWindow: Sendable {
    static let seconds = 60
    /// Latencies kept per second; beyond this, reservoir sampling keeps the quantiles honest at any
    /// rate within bounded memory.
    static let latencySamplesPerSecond = 2000

    struct Second: Sendable {
        /// Seconds since the epoch; a bucket whose time is not the second asked for is stale.
        var time: Int64 = 0
        var entries = 0
        var rows = 0
        var deadLetters = 0
        var failures = 0
        /// Milliseconds, at most ``ThroughputWindow/latencySamplesPerSecond``.
        var latencies: [Int64] = []
        /// Latencies offered this second, sampled or not.
        var latencyCount = 0
    }

    /// What a range of seconds adds up to.
    struct Totals: Equatable, Sendable {
        var entries = 0
        var rows = 0
        var deadLetters = 0
        var failures = 0
        /// The sampled latencies in milliseconds, ascending.
        var sortedLatencies: [Int64] = []

        /// The nearest-rank latency quantile in milliseconds; nil without samples.
        func latency(_ quantile: Double) -> Double? {
            Percentile.nearestRank(quantile, of: sortedLatencies).map(Double.init)
        }
    }

    private var buckets = [Second](repeating: Second(), count: ThroughputWindow.seconds)

    /// A committed batch in `second`.
    mutating func record(
        entries: Int, rows: Int, deadLetters: Int, latencies: [Int64], in second: Int64, using random: inout some RandomNumberGenerator
    ) {
        withBucket(second) { bucket in
            bucket.entries += entries
            bucket.rows += rows
            bucket.deadLetters += deadLetters
            for latency in latencies {
                bucket.latencyCount += 1
                if bucket.latencies.count < Self.latencySamplesPerSecond {
                    bucket.latencies.append(latency)
                } else {
                    let slot = Int.random(in: 0..<bucket.latencyCount, using: &random)
                    if slot < Self.latencySamplesPerSecond { bucket.latencies[slot] = latency }
                }
            }
        }
    }

    /// A failed attempt in `second`.
    mutating func recordFailure(in second: Int64) {
        withBucket(second) { $0.failures += 1 }
    }

    /// The seconds in `range` that the window still holds.
    func totals(over range: Range<Int64>) -> Totals {
        var totals = Totals()
        var latencies: [Int64] = []
        for bucket in buckets where range.contains(bucket.time) {
            totals.entries += bucket.entries
            totals.rows += bucket.rows
            totals.deadLetters += bucket.deadLetters
            totals.failures += bucket.failures
            latencies += bucket.latencies
        }
        totals.sortedLatencies = latencies.sorted()
        return totals
    }

    /// In place: copying a bucket out and back would copy its latency samples on every batch.
    private mutating func withBucket(_ second: Int64, _ body: (inout Second) -> Void) {
        let slot = Int(second % Int64(Self.seconds))
        if buckets[slot].time != second { buckets[slot] = Second(time: second) }
        body(&buckets[slot])
    }
}

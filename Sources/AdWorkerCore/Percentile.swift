/// The nearest-rank percentile: the smallest value with at least `quantile` of the values at or
/// below it. `/status` and `bench` both report latency quantiles this way, so their figures compare.
public enum Percentile {
    /// - Parameters:
    ///   - quantile: 0...1 (0.99 for p99).
    ///   - sorted: The values in ascending order.
    /// - Returns: nil when there are no values.
    public static func nearestRank<Value>(_ quantile: Double, of sorted: [Value]) -> Value? {
        guard !sorted.isEmpty else { return nil }
        let rank = Int((Double(sorted.count) * quantile).rounded(.up)) - 1
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }
}

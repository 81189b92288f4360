/// Exponential backoff with jitter for retrying a failing connection (the database, Redis) or process: each delay doubles
/// up to `maximum`, and is drawn from its upper half so that many workers do not retry in step.
public struct Backoff: Sendable {
    public let initial: Duration
    public let maximum: Duration
    public private(set) var attempt = 0

    public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(10)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The delay before the next retry.
    public mutating func nextDelay(using generator: inout some RandomNumberGenerator) -> Duration {
        let exponent = min(attempt, 30)
        attempt += 1
        let ceiling = min(maximum, initial * (1 << exponent))
        let (seconds, attoseconds) = ceiling.components
        let ceilingNanoseconds = UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
        let half = ceilingNanoseconds / 2
        // Scaled so that the generator's full range maps onto [half, ceiling] exactly. (Not
        // `Double.random(in:using:)`: it rejection-samples, and never returns for some generators.)
        let jitter = UInt64.max.dividingFullWidth(half.multipliedFullWidth(by: generator.next())).quotient
        return .nanoseconds(Int64(ceilingNanoseconds - half + jitter))
    }

    public mutating func nextDelay() -> Duration {
        var generator = SystemRandomNumberGenerator()
        return nextDelay(using: &generator)
    }
}

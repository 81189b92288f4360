/// Exponential backoff with jitter for retrying a failing database or Redis: each delay doubles
/// up to `maximum`, and is drawn from its upper half so that many workers do not retry in step.
struct Backoff {
    let initial: Duration
    let maximum: Duration
    private(set) var attempt = 0

    init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(10)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The delay before the next retry.
    mutating func nextDelay(using generator: inout some RandomNumberGenerator) -> Duration {
        let exponent = min(attempt, 30)
        attempt += 1
        let ceiling = min(maximum, initial * (1 << exponent))
        let fraction = Double.random(in: 0.5...1.0, using: &generator)
        return ceiling * fraction
    }

    mutating func nextDelay() -> Duration {
        var generator = SystemRandomNumberGenerator()
        return nextDelay(using: &generator)
    }

    mutating func reset() {
        attempt = 0
    }
}

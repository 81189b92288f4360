/// Decides when the entries read so far make a batch: when there are `maximumSize` of them, or
/// when the oldest has waited `maximumWait`. A value type driven by the caller's clock, so tests
/// can move time by hand.
struct Batcher<Element, Instant: InstantProtocol> where Instant.Duration == Duration {
    let maximumSize: Int
    let maximumWait: Duration
    private(set) var elements: [Element] = []
    private var oldestArrival: Instant?

    init(maximumSize: Int, maximumWait: Duration) {
        precondition(maximumSize > 0, "a batch holds at least one element")
        self.maximumSize = maximumSize
        self.maximumWait = maximumWait
    }

    var isEmpty: Bool { elements.isEmpty }

    /// How many more elements fit before the batch is full.
    var remainingCapacity: Int { maximumSize - elements.count }

    mutating func append(contentsOf newElements: [Element], at now: Instant) {
        guard !newElements.isEmpty else { return }
        if elements.isEmpty {
            oldestArrival = now
            elements.reserveCapacity(maximumSize)
        }
        elements.append(contentsOf: newElements)
    }

    /// Whether the batch should be flushed now.
    func isReady(at now: Instant) -> Bool {
        guard let oldestArrival else { return false }
        return elements.count >= maximumSize || oldestArrival.advanced(by: maximumWait) <= now
    }

    /// How long the next read may wait: up to `limit` when empty, otherwise no later than the
    /// batch's deadline (and at least 1 ms, since a zero BLOCK means "forever" to Redis).
    func readWait(at now: Instant, limit: Duration) -> Duration {
        guard let oldestArrival else { return limit }
        let remaining = now.duration(to: oldestArrival.advanced(by: maximumWait))
        return max(.milliseconds(1), min(limit, remaining))
    }

    /// Hands over the batch and starts a new one.
    mutating func take() -> [Element] {
        oldestArrival = nil
        defer { elements = [] }
        return elements
    }
}

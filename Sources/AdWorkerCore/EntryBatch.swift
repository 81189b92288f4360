import AdTelemetryRecords

/// Entries the reader hands to a sink as one batch, as read: the sink decodes them into a
/// ``PreparedBatch``.
struct EntryBatch: Equatable, Sendable {
    var entries: [StreamEntry]
    /// Own pending or claimed entries, which may be in the table already (the idempotent path).
    var redelivered: Bool
    /// Delivery counts of redelivered entries; fresh entries have been delivered once.
    var deliveries: [StreamEntryID: Int] = [:]

    /// The same entries (by id), path and counts.
    static func == (lhs: EntryBatch, rhs: EntryBatch) -> Bool {
        lhs.entries.map(\.id) == rhs.entries.map(\.id) && lhs.redelivered == rhs.redelivered && lhs.deliveries == rhs.deliveries
    }
}

extension Array where Element == StreamEntry {
    /// Whether these entries, in id order (as reads and claims return them), include `id`: a
    /// binary search, the one place a consumer asks whether an entry is already its own.
    func idOrderedContains(_ id: StreamEntryID) -> Bool {
        var low = 0
        var high = count
        while low < high {
            let middle = (low + high) / 2
            if self[middle].id < id { low = middle + 1 } else { high = middle }
        }
        return low < count && self[low].id == id
    }

    /// Whether the ids ascend; a batch's ids do, so this costs one pass and no allocation.
    var isIdOrdered: Bool {
        zip(self, dropFirst()).allSatisfy { $0.id < $1.id }
    }
}

import AdTelemetryRecords

/// The batches a consumer has handed to its sinks and not yet had back: at most a few, each kept
/// as the entries array handed over (shared with the sink, not copied), so the per-entry cost is
/// nothing and a lookup is one binary search per batch. Part of ``ConsumerStateMachine``.
///
/// A claim's reply (or a re-read's of own pending entries) shows the pending list as it was when
/// Redis ran it: an entry a sink acknowledged after that and before the reply arrived is no longer
/// in flight, yet must not be stored again. So while such a read is outstanding
/// (``beginPendingRead()`` to ``endPendingRead()``), batches given back stay visible to
/// ``contains(_:)``; only for that round trip, so memory stays bounded.
struct InFlightBatches {
    private var batches: [[StreamEntry]] = []
    private var readingPending = false
    private var returnedDuringRead: [[StreamEntry]] = []

    /// Nothing is in a sink.
    var isEmpty: Bool { batches.isEmpty }

    mutating func insert(_ entries: [StreamEntry]) {
        guard !entries.isEmpty else { return }
        batches.append(entries.isIdOrdered ? entries : entries.sorted { $0.id < $1.id })
    }

    /// Removes the batch these entries were inserted as (batches in flight share no entry, so
    /// the first id names it).
    mutating func remove(_ entries: [StreamEntry]) {
        guard let first = entries.lazy.map(\.id).min(),
            let index = batches.firstIndex(where: { $0.first?.id == first })
        else { return }
        let batch = batches.remove(at: index)
        if readingPending { returnedDuringRead.append(batch) }
    }

    mutating func beginPendingRead() {
        readingPending = true
        returnedDuringRead = []
    }

    mutating func endPendingRead() {
        readingPending = false
        returnedDuringRead = []
    }

    /// In flight, or given back since the outstanding claim or re-read began.
    func contains(_ id: StreamEntryID) -> Bool {
        batches.contains { $0.idOrderedContains(id) } || returnedDuringRead.contains { $0.idOrderedContains(id) }
    }
}

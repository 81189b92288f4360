import AdTelemetryRecords
import AdWorkerRedis

/// Which entries of one stream have a dead letter already, so that an entry read again never
/// gets a second one. One per sink task, used by that task alone.
///
/// Why entries are read again: a consumer group destroyed (`XGROUP DESTROY`) or lost with Redis's
/// state is recreated at `0`, because what it had acknowledged and what was pending went with it:
/// starting anywhere later could skip entries never stored. Rows are idempotent (the sink's
/// idempotent path), so only dead letters could double. No process knows that the group was
/// recreated (another replica may have done it), so every batch with letters asks the dead-letter
/// stream, cheaply:
/// - a letter is written after its entry was added, and both ids come from the same Redis's clock,
///   so only letters from the oldest entry's millisecond on (less ``clockMargin``, for a failover
///   to a node whose clock is behind) can be for the batch's entries;
/// - a script returns only each letter's `dead.entry_id`, not the letters (they carry their entry's
///   fields whole, entry_too_large ones too); it reads them in Redis one at a time, and ends a page
///   at ``pageSize`` letters or ``pageBytes`` of them, whichever comes first;
/// - what was read is remembered, so the next batch reads only letters written since.
/// In steady state a lookup reads the letters of the last minute or so; after a group was
/// recreated at 0, each letter about once.
final class DeadLetterLedger {
    /// What has been read, as a value: the decisions, apart from the reads.
    struct State: Equatable {
        /// How much earlier than its entry a letter's id may be (clocks of two nodes, a clock step).
        static let clockMargin: UInt64 = 60_000
        /// Entry ids remembered at most; past it, those too old to be asked about again are
        /// forgotten, and if that is not enough (a flood of letters), all but the newest
        /// ``keptPastTheBound``, so that only a lookup for entries older than those reads again.
        static let maximumRemembered = 50_000
        /// Below the bound, so that a flood sorts what it remembers now and then, not every batch.
        static let keptPastTheBound = maximumRemembered * 3 / 4

        /// Every letter with an id from `coveredFrom` through `readThrough` has been read; nil: none.
        private(set) var coveredFrom: StreamEntryID?
        private(set) var readThrough: StreamEntryID?
        /// The entries those letters are for (once pruned, only those a later lookup may still ask about).
        private(set) var lettered: Set<StreamEntryID> = []

        /// The oldest letter id that can belong to entry `id` or a later one.
        static func earliestLetter(for id: StreamEntryID) -> StreamEntryID {
            StreamEntryID(milliseconds: id.milliseconds > clockMargin ? id.milliseconds - clockMargin : 0, sequence: 0)
        }

        /// Where the next read starts, for entries whose oldest is `oldest`: after what was read if
        /// that covers them, otherwise (nothing read yet, or older entries: a claim) from their
        /// earliest letter, all again.
        mutating func readStart(forOldest oldest: StreamEntryID) -> StreamEntryID {
            let earliest = Self.earliestLetter(for: oldest)
            if let coveredFrom, coveredFrom <= earliest {
                guard let readThrough else { return coveredFrom }
                return readThrough.successor ?? readThrough
            }
            self = State()
            coveredFrom = earliest
            return earliest
        }

        /// Letters read, in id order, each with the entry it is for (nil: a letter without `dead.entry_id`).
        mutating func read(_ letters: [(id: StreamEntryID, entry: StreamEntryID?)]) {
            for letter in letters {
                if let entry = letter.entry { lettered.insert(entry) }
                readThrough = letter.id
            }
        }

        /// Which of `ids` have a letter among those read. Then keeps memory bounded: `oldest` is
        /// the oldest of `ids`.
        mutating func alreadyLettered(_ ids: [StreamEntryID], oldest: StreamEntryID) -> Set<StreamEntryID> {
            let found = Set(ids.filter { lettered.contains($0) })
            if lettered.count > Self.maximumRemembered {
                // A later lookup for entries this old or newer reads on from here and asks only
                // about ids at or after its own oldest; an older one reads again (readStart).
                let earliest = Self.earliestLetter(for: oldest)
                lettered = lettered.filter { $0 >= earliest }
                coveredFrom = max(coveredFrom ?? earliest, earliest)
                if lettered.count > Self.maximumRemembered { keepNewest() }
            }
            return found
        }

        /// Forgets all but the newest ``keptPastTheBound`` entries, whole milliseconds at a time,
        /// and moves `coveredFrom` up so that only a lookup whose oldest entry is newer than
        /// every one forgotten goes on from `readThrough`.
        private mutating func keepNewest() {
            let sorted = lettered.sorted()
            let lastForgotten = sorted[sorted.count - Self.keptPastTheBound - 1].milliseconds
            lettered = Set(sorted.drop { $0.milliseconds <= lastForgotten })
            // readStart goes on if coveredFrom <= earliestLetter(oldest), which is then exactly
            // oldest's millisecond > lastForgotten; at least 1 because earliestLetter is 0 for all
            // of the first clockMargin milliseconds (those then read again).
            let bound = StreamEntryID(milliseconds: max(lastForgotten + 1, Self.clockMargin + 1) - Self.clockMargin, sequence: 0)
            coveredFrom = max(coveredFrom ?? bound, bound)
        }
    }

    /// Letters read per script call at most.
    static let pageSize = 200
    /// Bytes of letters read per script call at most (past the first): a page of large letters is shorter.
    static let pageBytes = 1 << 20

    let deadLetterStream: String
    private(set) var state = State()

    init(stream: String) {
        self.deadLetterStream = DeadLetter.stream(for: stream)
    }

    /// The entries among `letters`' that have a dead letter already. A failed read keeps what was
    /// read before it, so a retry goes on from there.
    func alreadyLettered(_ letters: [DeadLetter], _ redis: RedisConnection) async throws -> Set<StreamEntryID> {
        let ids = letters.map(\.entry.id)
        guard let oldest = ids.min() else { return [] }
        var start = state.readStart(forOldest: oldest)
        while true {
            let page = try await redis.field(
                DeadLetter.Field.entryID, ofEntriesIn: deadLetterStream, from: start, count: Self.pageSize, maximumBytes: Self.pageBytes
            )
            state.read(page.entries.map { ($0.id, $0.value.flatMap { StreamEntryID(utf8: $0) }) })
            guard page.more, let next = page.entries.last?.id.successor else { break }
            start = next
        }
        return state.alreadyLettered(ids, oldest: oldest)
    }
}

import Logging

/// How a batch should be inserted.
public enum InsertPath: Sendable, Equatable {
    /// Direct `COPY` into the table: for entries read for the first time, which cannot be there yet.
    case fast
    /// `COPY` into a staging table, then `INSERT … ON CONFLICT DO NOTHING`: for redelivered entries.
    case idempotent
}

/// What happened to a batch.
public struct InsertOutcome: Sendable, Equatable {
    /// Rows that are now in the table and were not before.
    public var insertedRows = 0
    /// Rows that were there already (redeliveries after a commit whose ack was lost).
    public var duplicateRows = 0
    /// Rows the server refused for their data, with why; the others are committed.
    public var rejectedRows: [(index: Int, error: PostgresError)] = []
    /// Whether a unique violation on the fast path sent (part of) the batch down the idempotent path.
    public var fellBackToIdempotentPath = false
    /// Transactions used, counting bisection steps.
    public var transactions = 0

    public init() {}

    public static func == (lhs: InsertOutcome, rhs: InsertOutcome) -> Bool {
        lhs.insertedRows == rhs.insertedRows && lhs.duplicateRows == rhs.duplicateRows
            && lhs.rejectedRows.map(\.index) == rhs.rejectedRows.map(\.index)
            && lhs.fellBackToIdempotentPath == rhs.fellBackToIdempotentPath && lhs.transactions == rhs.transactions
    }
}

extension PostgresConnection {
    /// Inserts `rows` into `target`, each run of rows in one transaction.
    ///
    /// - Important: Rows are keyed by (enqueued_at, stream_id, shard), so the idempotent path makes a
    ///   redelivered entry a no-op. A unique violation on the fast path, or an error without its
    ///   code (``PostgresError/Code/unnamed``: Citus), retries the same rows on the idempotent
    ///   path; a data error (SQLSTATE class 22/23) bisects the rows until the refused ones are
    ///   isolated, and commits the rest. Any other error is thrown: nothing of the
    ///   failing run is committed, and the caller retries it later.
    public func insert(_ rows: BinaryCopyRows, into target: CopyTarget, path: InsertPath) throws(PostgresError) -> InsertOutcome {
        var outcome = InsertOutcome()
        if !rows.isEmpty {
            try insert(rows, range: 0..<rows.count, into: target, path: path, outcome: &outcome)
        }
        return outcome
    }

    private func insert(
        _ rows: BinaryCopyRows, range: Range<Int>, into target: CopyTarget, path: InsertPath, outcome: inout InsertOutcome
    ) throws(PostgresError) {
        do {
            outcome.transactions += 1
            let inserted: Int
            switch path {
            case .fast:
                // A COPY sent alone is a transaction of its own (all rows or none), its settings
                // sent in the same query string: no BEGIN and COMMIT round trips per batch.
                inserted = try copyOnce(rows, range: range, into: target, path: path)
            case .idempotent:
                inserted = try transaction { connection throws(PostgresError) in
                    try connection.copyOnce(rows, range: range, into: target, path: path)
                }
            }
            outcome.insertedRows += inserted
            outcome.duplicateRows += range.count - inserted
        } catch let error where (error.code == .uniqueViolation || error.code == .unnamed) && path == .fast {
            outcome.fellBackToIdempotentPath = true
            try insert(rows, range: range, into: target, path: .idempotent, outcome: &outcome)
        } catch let error where error.isDataError {
            if range.count == 1 {
                outcome.rejectedRows.append((range.lowerBound, error))
                logger.debug("row refused", metadata: ["error": "\(error)", "detail": "\(error.serverMessage ?? "")"])
                return
            }
            let middle = range.lowerBound + range.count / 2
            try insert(rows, range: range.lowerBound..<middle, into: target, path: path, outcome: &outcome)
            try insert(rows, range: middle..<range.upperBound, into: target, path: path, outcome: &outcome)
        }
    }

    /// On Citus, a COPY opens a connection to each node per shard it writes (up to
    /// `citus.max_adaptive_executor_pool_size`, 16) and a session keeps one per node afterwards,
    /// so every batch paid for new connections and a two-phase commit on each: measured with
    /// `adworker bench` on a coordinator and two workers, drain / raw COPY 0.18 and p50 1.1 s at
    /// 2,000 records/s; with one connection per node 0.69 to 0.85 and 11 ms. Elsewhere it sets a
    /// placeholder nothing reads.
    static let citusCopySetting = "SET LOCAL citus.max_adaptive_executor_pool_size = 1; "

    private func copyOnce(_ rows: BinaryCopyRows, range: Range<Int>, into target: CopyTarget, path: InsertPath) throws(PostgresError) -> Int {
        let chunks = rows.chunks(for: range)
        switch path {
        case .fast:
            return try copy(Self.citusCopySetting + "COPY \(target.table) (\(target.columnList)) FROM STDIN (FORMAT binary)", chunks: chunks)
        case .idempotent:
            let staging = target.stagingTable
            // Made and dropped by the transaction that uses it, sent with its COPY: through a pooler
            // in transaction mode the next transaction may run in another server session.
            _ = try copy(
                Self.citusCopySetting + "CREATE TEMP TABLE \(staging) (LIKE \(target.table) INCLUDING DEFAULTS) ON COMMIT DROP; "
                    + "COPY \(staging) (\(target.columnList)) FROM STDIN (FORMAT binary)",
                chunks: chunks
            )
            return try execute(
                "INSERT INTO \(target.table) (\(target.columnList)) SELECT \(target.columnList) FROM \(staging) ON CONFLICT DO NOTHING"
            )
        }
    }
}

/// A table and the columns a COPY fills, in the order rows are encoded.
public struct CopyTarget: Sendable, Equatable {
    public var table: String
    public var columns: [String]

    public init(table: String, columns: [String]) {
        self.table = table
        self.columns = columns
    }

    var columnList: String { columns.joined(separator: ", ") }
    /// The idempotent path's staging table, a temporary table that lives for one transaction. Not
    /// the name of the session-long table older versions kept, which a pooled session may still hold.
    var stagingTable: String { "adworker_txn_staging_" + table.map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined() }
}

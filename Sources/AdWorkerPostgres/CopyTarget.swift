/// A table and the columns a COPY fills, in the order rows are encoded.
public struct CopyTarget: Sendable, Equatable {
    public var table: String
    public var columns: [String]

    public init(table: String, columns: [String]) {
        self.table = table
        self.columns = columns
    }

    var columnList: String { columns.joined(separator: ", ") }
    /// A session-local staging table for the idempotent path.
    var stagingTable: String { "adworker_staging_" + table.map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined() }
}

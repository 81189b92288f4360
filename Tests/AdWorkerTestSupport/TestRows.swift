public import AdTelemetryRecords
public import AdWorkerCore
public import AdWorkerPostgres

/// Rows as the sink encodes them, for the insert paths' tests.
public enum TestRows {
    /// Inference rows with entry ids `1700000000000-<n>` for each n in `ids`; those in `bad` carry a
    /// value PostgreSQL refuses (a NUL byte: valid in a Swift string, refused by text, SQLSTATE 22021).
    public static func inference(_ ids: ClosedRange<UInt64>, badValueAt bad: Set<UInt64> = []) -> BinaryCopyRows {
        var rows = BinaryCopyRows()
        var telemetry = SyntheticTelemetry(seed: 3)
        for sequence in ids {
            var record = telemetry.inference(model: "m", requestID: "r-\(sequence)")
            if bad.contains(sequence) { record.model = "bad\u{0}model" }
            RowEncoder.append(record, id: StreamEntryID(milliseconds: 1_700_000_000_000, sequence: sequence), to: &rows)
        }
        return rows
    }
}

public import AdTelemetryRecords

/// Why an entry became a dead letter, as a closed set: written to the letter's `dead.code` field,
/// used as the `reason` label of `adworker_dead_letters_total`, and what `adworker dlq --reason`
/// selects by.
///
/// A decoding failure carries the decoder's own ``RecordError/Code`` rather than a copy of its
/// cases here: the records module stays the one list of decoding codes, and a code added there is
/// a dead-letter code (and a metric label, and a `--reason` value) without a second edit.
public enum DeadLetterCode: Hashable, Sendable, CaseIterable, RawRepresentable, CustomStringConvertible {
    /// The entry does not decode into a record.
    case undecodable(RecordError.Code)
    /// Delivered more often than `maximumDeliveries` without being stored or dead lettered.
    case maxDeliveriesExceeded
    /// PostgreSQL refused the row for a data reason (SQLSTATE class 22 or 23).
    case rejectedByDatabase

    public static var allCases: [DeadLetterCode] {
        RecordError.Code.allCases.map(Self.undecodable) + [.maxDeliveriesExceeded, .rejectedByDatabase]
    }

    /// The code as written in `dead.code`: `invalid_json`, `max_deliveries_exceeded`, `rejected_by_database`.
    public var rawValue: String {
        switch self {
        case .undecodable(let code): code.rawValue
        case .maxDeliveriesExceeded: "max_deliveries_exceeded"
        case .rejectedByDatabase: "rejected_by_database"
        }
    }

    public init?(rawValue: String) {
        switch rawValue {
        case "max_deliveries_exceeded": self = .maxDeliveriesExceeded
        case "rejected_by_database": self = .rejectedByDatabase
        default:
            guard let code = RecordError.Code(rawValue: rawValue) else { return nil }
            self = .undecodable(code)
        }
    }

    public var description: String { rawValue }
}

public import AdTelemetryRecords
import AdWorkerRedis

/// A dead letter: an entry that cannot become a row, with why. Written to `<stream>:dead` with the
/// original fields unchanged plus `dead.*` fields, so it can be read with `redis-cli XRANGE`
/// and replayed after a fix.
public struct DeadLetter: Sendable {
    public enum Field {
        public static let reason = "dead.reason"
        public static let sqlState = "dead.sqlstate"
        public static let entryID = "dead.entry_id"
        public static let stream = "dead.stream"
        public static let deadAt = "dead.at"
        public static let deliveries = "dead.deliveries"
        /// The ``DeadLetterCode``; written last of the `dead.*` fields, so that a version without
        /// it, replaying this letter, takes only it for an original field.
        public static let code = "dead.code"
    }

    public var entry: StreamEntry
    /// A code and a field name (``RecordError/description``) or a SQLSTATE class; never a value.
    public var reason: String
    /// The reason's code alone: written as `dead.code`, a bounded metric label, never parsed out of ``reason``.
    public var code: DeadLetterCode
    public var sqlState: String?
    /// How many times the entry had been delivered to a consumer.
    public var deliveries: Int

    public init(entry: StreamEntry, reason: String, code: DeadLetterCode, sqlState: String? = nil, deliveries: Int = 1) {
        self.entry = entry
        self.reason = reason
        self.code = code
        self.sqlState = sqlState
        self.deliveries = deliveries
    }

    /// The original entry's fields: what follows the leading `dead.*` fields, byte for byte (an
    /// original field that happens to be named `dead.…` is kept). What `dlq replay` sends again.
    public static func originalFields(of deadLetter: StreamFields) -> StreamFields {
        let deadNames = Set([Field.reason, Field.sqlState, Field.entryID, Field.stream, Field.deadAt, Field.deliveries, Field.code].map { Array($0.utf8) })
        var original = StreamFields()
        var inHeader = true
        for field in deadLetter {
            if inHeader && deadNames.contains(Array(field.name)) { continue }
            inHeader = false
            original.append(name: field.name, value: field.value)
        }
        return original
    }

    public static func stream(for stream: String) -> String { stream + ":dead" }

    /// The dead letter's fields: `dead.*` first, then the original fields byte for byte (a name
    /// that is not valid UTF-8 survives as it arrived).
    public func fields(from stream: String, at time: Timestamp) -> StreamFields {
        var fields = StreamFields()
        fields.reserveCapacity(fields: entry.fields.count + 7, bytes: entry.fields.byteCount + 160)
        fields.append(name: Field.reason.utf8, value: reason.utf8)
        if let sqlState { fields.append(name: Field.sqlState.utf8, value: sqlState.utf8) }
        fields.append(name: Field.entryID.utf8, value: entry.id.description.utf8)
        fields.append(name: Field.stream.utf8, value: stream.utf8)
        fields.append(name: Field.deadAt.utf8, value: String(time.millisecondsSinceEpoch).utf8)
        fields.append(name: Field.deliveries.utf8, value: String(deliveries).utf8)
        fields.append(name: Field.code.utf8, value: code.rawValue.utf8)
        for field in entry.fields { fields.append(name: field.name, value: field.value) }
        return fields
    }

    /// The XADD that records this dead letter for `stream`.
    func command(from stream: String, at time: Timestamp) -> RedisCommand {
        .streamAdd(to: Self.stream(for: stream), fields: fields(from: stream, at: time))
    }
}

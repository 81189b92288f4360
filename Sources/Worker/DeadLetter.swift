import Redis
public import TelemetryRecords

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
    }

    public var entry: StreamEntry
    /// A code and a field name (``RecordError/description``) or a SQLSTATE class; never a value.
    public var reason: String
    public var sqlState: String?

    public init(entry: StreamEntry, reason: String, sqlState: String? = nil) {
        self.entry = entry
        self.reason = reason
        self.sqlState = sqlState
    }

    public static func stream(for stream: String) -> String { stream + ":dead" }

    /// The XADD that records this dead letter for `stream`.
    func command(from stream: String, at time: Timestamp) -> RedisCommand {
        var command = RedisCommand.streamAdd(to: Self.stream(for: stream))
        command.writeField(Field.reason, reason.utf8)
        if let sqlState { command.writeField(Field.sqlState, sqlState.utf8) }
        command.writeField(Field.entryID, entry.id.description.utf8)
        command.writeField(Field.stream, stream.utf8)
        command.writeField(Field.deadAt, String(time.millisecondsSinceEpoch).utf8)
        for field in entry.fields {
            // Raw bytes: a name that is not valid UTF-8 must survive as it arrived.
            command.append(bytes: field.name)
            command.append(bytes: field.value)
        }
        return command
    }
}

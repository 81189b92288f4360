public import TelemetryRecords

/// One Redis command's arguments in a single buffer, ready for `redisAppendCommandArgv`.
///
/// Built by the caller off the connection's thread, so the connection thread only does I/O.
public struct RedisCommand: Sendable, StreamFieldWriter {
    var bytes: [UInt8] = []
    var ends: [Int] = []

    public init(_ arguments: String...) {
        for argument in arguments { append(argument) }
    }

    public init(_ arguments: [String]) {
        for argument in arguments { append(argument) }
    }

    public mutating func append(_ argument: String) {
        append(bytes: argument.utf8)
    }

    public mutating func append(bytes argument: some Collection<UInt8>) {
        bytes.append(contentsOf: argument)
        ends.append(bytes.count)
    }

    public mutating func writeField(_ name: String, _ value: some Collection<UInt8>) {
        append(name)
        append(bytes: value)
    }

    var argumentCount: Int { ends.count }

    /// `XADD stream [MAXLEN ~ n] * field value …`; fields follow via ``StreamFieldWriter``.
    public static func streamAdd(to stream: String, approximateMaximumLength: Int? = nil) -> RedisCommand {
        var command = RedisCommand("XADD", stream)
        if let approximateMaximumLength {
            command.append("MAXLEN")
            command.append("~")
            command.append(String(approximateMaximumLength))
        }
        command.append("*")
        return command
    }

    /// `XADD stream * field value …` with the given fields.
    public static func streamAdd(to stream: String, fields: StreamFields) -> RedisCommand {
        var command = RedisCommand("XADD", stream, "*")
        for field in fields {
            command.append(bytes: field.name)
            command.append(bytes: field.value)
        }
        return command
    }
}

public import AdTelemetryRecords

/// One Redis command, its arguments already in RESP (`$<length>\r\n<bytes>\r\n` each).
///
/// Built by the caller off the connection's thread, so the connection thread only copies bytes
/// into hiredis's output buffer (`redisAppendFormattedCommand`) and does I/O.
public struct RedisCommand: Sendable, StreamFieldWriter {
    /// The arguments in RESP; the `*<count>` header is written at send time.
    var body: [UInt8] = []
    var argumentCount = 0

    public init(_ arguments: String...) {
        for argument in arguments { append(argument) }
    }

    public init(_ arguments: [String]) {
        for argument in arguments { append(argument) }
    }

    /// The command as written to Redis (arguments in RESP) and its argument count: what a spool
    /// file keeps, to send the same bytes later.
    public var encoded: (argumentCount: Int, resp: [UInt8]) { (argumentCount, body) }

    /// A command from ``encoded``, as read back from a checksummed spool file.
    public init(argumentCount: Int, resp: [UInt8]) {
        self.argumentCount = argumentCount
        self.body = resp
    }

    public mutating func append(_ argument: String) {
        append(bytes: argument.utf8)
    }

    public mutating func append(bytes argument: some Collection<UInt8>) {
        body.append(UInt8(ascii: "$"))
        Self.appendDecimal(argument.count, to: &body)
        body.append(0x0D)
        body.append(0x0A)
        body.append(contentsOf: argument)
        body.append(0x0D)
        body.append(0x0A)
        argumentCount += 1
    }

    /// The RESP array header for this command.
    var header: [UInt8] {
        var header: [UInt8] = [UInt8(ascii: "*")]
        Self.appendDecimal(argumentCount, to: &header)
        header.append(0x0D)
        header.append(0x0A)
        return header
    }

    private static func appendDecimal(_ value: Int, to output: inout [UInt8]) {
        if value < 10 {
            output.append(UInt8(ascii: "0") + UInt8(value))
            return
        }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var remaining = value
        withUnsafeMutableBytes(of: &digits) { buffer in
            while remaining > 0 {
                buffer[count] = UInt8(ascii: "0") + UInt8(remaining % 10)
                remaining /= 10
                count += 1
            }
            for index in stride(from: count - 1, through: 0, by: -1) {
                output.append(buffer[index])
            }
        }
    }

    public mutating func writeField(_ name: String, _ value: some Collection<UInt8>) {
        append(name)
        append(bytes: value)
    }

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

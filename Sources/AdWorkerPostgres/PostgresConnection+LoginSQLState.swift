extension PostgresConnection {
    /// The SQLSTATE of a failed connection, from libpq's verbose rendering of the server's
    /// ErrorResponse: `<severity>:  <SQLSTATE>: <message>` (five digits or capitals); nil when the
    /// failure never reached the server (refused, unreachable, timed out).
    static func connectionSQLState(in message: String) -> String? {
        let bytes = Array(message.utf8)
        var index = 0
        while index + 9 < bytes.count {
            if bytes[index] == UInt8(ascii: ":"), bytes[index + 1] == UInt8(ascii: " "), bytes[index + 2] == UInt8(ascii: " ") {
                let code = bytes[(index + 3)..<(index + 8)]
                let isCode = code.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) }
                if isCode && bytes[index + 8] == UInt8(ascii: ":") { return String(decoding: code, as: UTF8.self) }
            }
            index += 1
        }
        return nil
    }
}

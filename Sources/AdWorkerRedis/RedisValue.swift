/// A decoded Redis reply.
public enum RedisValue: Sendable, Equatable {
    case bulk([UInt8])
    case status(String)
    case error(String)
    case integer(Int64)
    case array([RedisValue])
    case null

    /// Bulk or status text, if this is one.
    public var string: String? {
        switch self {
        case .bulk(let bytes): String(decoding: bytes, as: UTF8.self)
        case .status(let text): text
        default: nil
        }
    }

    public var integer: Int64? {
        if case .integer(let value) = self { value } else { nil }
    }

    public var array: [RedisValue]? {
        if case .array(let values) = self { values } else { nil }
    }
}

internal import AdTelemetryRecords

/// One of a Redis Cluster's 16384 hash slots: CRC16 (XMODEM, as Redis's `crc16.c`) of a key's
/// hash tag, modulo 16384. Every key lives in exactly one; a node serves ranges of them.
public struct HashSlot: Sendable, Hashable, Comparable, CustomStringConvertible {
    public static let count = 16384

    /// 0 to 16383.
    public let rawValue: UInt16

    /// Nil outside 0...16383.
    public init?(rawValue: some BinaryInteger) {
        guard rawValue >= 0, rawValue < Self.count else { return nil }
        self.rawValue = UInt16(rawValue)
    }

    /// The slot `key` lives in.
    public init(forKey key: some StringProtocol) {
        var utf8 = Array(key.utf8)
        if let tag = Self.hashTagRange(in: utf8) { utf8 = Array(utf8[tag]) }
        rawValue = CRC16.xmodem(utf8) & UInt16(Self.count - 1)
    }

    public static func < (left: HashSlot, right: HashSlot) -> Bool { left.rawValue < right.rawValue }

    public var description: String { String(rawValue) }

    /// What Redis hashes: the bytes between the first `{` and the next `}` when that is not empty,
    /// otherwise the whole key (`foo{{bar}}` hashes `{bar`, `foo{}{bar}` the whole key).
    static func hashTagRange(in key: [UInt8]) -> Range<Int>? {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")),
            let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        else { return nil }
        return (open + 1)..<close
    }
}

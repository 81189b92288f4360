/// Redis Cluster's key → slot function: CRC16 (XMODEM, as Redis's `crc16.c`) of the key's hash
/// tag, modulo 16384.
public enum HashSlot {
    public static let count = 16384

    /// The slot `key` lives in.
    public static func slot(forKey key: some StringProtocol) -> UInt16 {
        var utf8 = Array(key.utf8)
        if let tag = hashTagRange(in: utf8) { utf8 = Array(utf8[tag]) }
        return crc16(utf8) & UInt16(count - 1)
    }

    /// What Redis hashes: the bytes between the first `{` and the next `}` when that is not empty,
    /// otherwise the whole key (`foo{{bar}}` hashes `{bar`, `foo{}{bar}` the whole key).
    static func hashTagRange(in key: [UInt8]) -> Range<Int>? {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")),
            let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        else { return nil }
        return (open + 1)..<close
    }

    public static func crc16(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { index in
        var value = UInt16(index) << 8
        for _ in 0..<8 {
            value = value & 0x8000 != 0 ? (value << 1) ^ 0x1021 : value << 1
        }
        return value
    }
}

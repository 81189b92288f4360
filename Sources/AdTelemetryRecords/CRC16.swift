/// CRC16-XMODEM, as Redis's `crc16.c`: Redis Cluster hashes keys with it (`HashSlot`), and
/// ``ShardLayout`` picks a request's shard and its streams' hash tags with it.
public enum CRC16 {
    public static func xmodem(_ bytes: some Sequence<UInt8>) -> UInt16 {
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

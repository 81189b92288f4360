import AdTelemetryRecords
import AdWorkerRedis

/// A record waiting in the spool: its XADD as it would be sent, where, and who sent it.
struct SpooledRecord: Sendable {
    var stream: String
    var command: RedisCommand
    var origin: RecordOrigin
    /// Set when an earlier attempt may have stored it: look for it from here before sending.
    var lookFrom: LookupStart?
}

/// One record on disk: `length (u32 LE) · CRC-32C of the payload (u32 LE) · payload`, the payload
/// `version 1 · flags (1: look-from set, 2: it is a host-clock time) · look-from ms, seq · origin instance, sequence (u64 LE each) · stream
/// (u16 LE length + UTF-8) · argument count (u32 LE) · the XADD in RESP`. A frame whose length or
/// checksum does not hold is a write torn by a crash, or damage (``SpoolScan`` tells which).
enum SpoolFrame {
    static let version: UInt8 = 1
    static let headerSize = 8
    /// Larger than any record the producer writes (Redis's 512 MiB argument limit is far above it).
    static let maximumPayload = 64 << 20

    static func append(_ record: SpooledRecord, to output: inout [UInt8]) {
        let (flags, lookFrom): (UInt8, StreamEntryID) =
            switch record.lookFrom {
            case nil: (0, StreamEntryID(milliseconds: 0, sequence: 0))
            case .entry(let id): (1, id)
            case .sentAt(let host): (3, StreamEntryID(milliseconds: host, sequence: 0))
            }
        var payload: [UInt8] = [version, flags]
        let (argumentCount, resp) = record.command.encoded
        payload.reserveCapacity(48 + record.stream.utf8.count + resp.count)
        appendInteger(lookFrom.milliseconds, to: &payload)
        appendInteger(lookFrom.sequence, to: &payload)
        appendInteger(record.origin.instance, to: &payload)
        appendInteger(record.origin.sequence, to: &payload)
        appendInteger(UInt16(record.stream.utf8.count), to: &payload)
        payload.append(contentsOf: record.stream.utf8)
        appendInteger(UInt32(argumentCount), to: &payload)
        payload.append(contentsOf: resp)
        appendInteger(UInt32(payload.count), to: &output)
        appendInteger(CRC32C.checksum(payload), to: &output)
        output.append(contentsOf: payload)
    }

    enum Decoded {
        case record(SpooledRecord, size: Int)
        /// Not enough bytes for a whole frame: the end of the file, or a write cut short.
        case incomplete
        case damaged(String)
    }

    static func decode(_ bytes: ArraySlice<UInt8>) -> Decoded {
        guard bytes.count >= headerSize else { return .incomplete }
        let start = bytes.startIndex
        let length = Int(readInteger(bytes, at: start, as: UInt32.self))
        guard length <= maximumPayload else { return .damaged("frame length \(length)") }
        guard bytes.count >= headerSize + length else { return .incomplete }
        let payload = bytes[(start + headerSize)..<(start + headerSize + length)]
        guard CRC32C.checksum(payload) == readInteger(bytes, at: start + 4, as: UInt32.self) else { return .damaged("checksum mismatch") }
        guard length >= 2 + 32 + 2 + 4, payload[payload.startIndex] == version else { return .damaged("unknown frame version") }
        var at = payload.startIndex + 2
        func next<Integer: FixedWidthInteger>(_: Integer.Type) -> Integer {
            defer { at += Integer.bitWidth / 8 }
            return readInteger(payload, at: at, as: Integer.self)
        }
        let flags = payload[payload.startIndex + 1]
        let lookFromID = StreamEntryID(milliseconds: next(UInt64.self), sequence: next(UInt64.self))
        let lookFrom: LookupStart? =
            switch flags & 3 {
            case 1: .entry(lookFromID)
            case 3: .sentAt(hostMilliseconds: lookFromID.milliseconds)
            default: nil
            }
        let origin = RecordOrigin(instance: next(UInt64.self), sequence: next(UInt64.self))
        let streamLength = Int(next(UInt16.self))
        guard payload.endIndex - at >= streamLength + 4 else { return .damaged("stream name past the frame") }
        let stream = String(decoding: payload[at..<(at + streamLength)], as: UTF8.self)
        at += streamLength
        let argumentCount = Int(next(UInt32.self))
        let command = RedisCommand(argumentCount: argumentCount, resp: Array(payload[at...]))
        return .record(SpooledRecord(stream: stream, command: command, origin: origin, lookFrom: lookFrom), size: headerSize + length)
    }

    /// Where a frame starting at `bytes.startIndex` ends by its length field, whether or not the
    /// rest holds: nil when the length cannot be read or is past any frame's.
    static func declaredEnd(_ bytes: ArraySlice<UInt8>) -> Int? {
        guard bytes.count >= 4 else { return nil }
        let length = Int(readInteger(bytes, at: bytes.startIndex, as: UInt32.self))
        return length <= maximumPayload ? bytes.startIndex + headerSize + length : nil
    }

    private static func appendInteger<Integer: FixedWidthInteger>(_ value: Integer, to output: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { output.append(contentsOf: $0) }
    }

    private static func readInteger<Integer: FixedWidthInteger>(_ bytes: ArraySlice<UInt8>, at index: Int, as _: Integer.Type) -> Integer {
        var value: Integer = 0
        for offset in 0..<(Integer.bitWidth / 8) { value |= Integer(bytes[index + offset]) << (offset * 8) }
        return value
    }
}

/// CRC-32C (Castagnoli), the checksum of iSCSI, ext4 and Kafka's record batches.
enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}

public import AdTelemetryRecords

/// Rows in PostgreSQL's binary COPY format, encoded once and addressable by row so a failing
/// batch can be bisected without encoding anything again.
///
/// Holds the row bytes only; ``chunks(for:)`` frames any run of rows with the header and trailer.
public struct BinaryCopyRows: Sendable {
    /// `PGCOPY\n\xFF\r\n\0`, flags 0, header extension length 0.
    static let header: [UInt8] = [0x50, 0x47, 0x43, 0x4F, 0x50, 0x59, 0x0A, 0xFF, 0x0D, 0x0A, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]
    /// A field count of -1 ends the data.
    static let trailer: [UInt8] = [0xFF, 0xFF]
    /// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01 UTC.
    static let postgresEpochOffsetMicroseconds: Int64 = 946_684_800_000_000

    private(set) var bytes: [UInt8] = []
    private(set) var rowEnds: [Int] = []

    public init(reservingBytes capacity: Int = 0) {
        bytes.reserveCapacity(capacity)
    }

    public var count: Int { rowEnds.count }
    public var isEmpty: Bool { rowEnds.isEmpty }
    public var byteCount: Int { bytes.count }

    /// Starts a row of `fieldCount` fields; write exactly that many, then call ``endRow()``.
    public mutating func beginRow(fieldCount: Int16) {
        appendInteger(fieldCount)
    }

    public mutating func endRow() {
        rowEnds.append(bytes.count)
    }

    public mutating func writeNull() {
        appendInteger(Int32(-1))
    }

    /// `text`: the caller guarantees valid UTF-8 without NUL (the wire decoder checks).
    public mutating func writeText(_ text: String) {
        var text = text
        text.withUTF8 { utf8 in
            appendInteger(Int32(utf8.count))
            bytes.append(contentsOf: utf8)
        }
    }

    public mutating func writeText(ascii: some Collection<UInt8>) {
        appendInteger(Int32(ascii.count))
        bytes.append(contentsOf: ascii)
    }

    /// `jsonb`: version byte 1, then the JSON text.
    public mutating func writeJSONB(_ json: JSONText) {
        appendInteger(Int32(json.utf8.count + 1))
        bytes.append(1)
        bytes.append(contentsOf: json.utf8)
    }

    /// `timestamptz`: microseconds since 2000-01-01 UTC.
    public mutating func writeTimestamp(_ timestamp: Timestamp) {
        appendInteger(Int32(8))
        appendInteger(timestamp.millisecondsSinceEpoch * 1000 - Self.postgresEpochOffsetMicroseconds)
    }

    public mutating func writeFloat8(_ value: Double) {
        appendInteger(Int32(8))
        appendInteger(value.bitPattern)
    }

    public mutating func writeInt2(_ value: Int16) {
        appendInteger(Int32(2))
        appendInteger(value)
    }

    public mutating func writeInt4(_ value: Int32) {
        appendInteger(Int32(4))
        appendInteger(value)
    }

    public mutating func writeBool(_ value: Bool) {
        appendInteger(Int32(1))
        bytes.append(value ? 1 : 0)
    }

    /// `inet`: family (2 = IPv4, 3 = IPv6 in PostgreSQL's numbering), prefix bits, is_cidr 0, length, address.
    public mutating func writeInet(_ address: IPAddress) {
        appendInteger(Int32(4 + address.bytes.count))
        bytes.append(address.isIPv6 ? 3 : 2)
        bytes.append(address.isIPv6 ? 128 : 32)
        bytes.append(0)
        bytes.append(UInt8(address.bytes.count))
        bytes.append(contentsOf: address.bytes)
    }

    /// The COPY data for `rows`: header, those rows' bytes, trailer; nothing is copied.
    public func chunks(for rows: Range<Int>) -> [ArraySlice<UInt8>] {
        let start = rows.lowerBound == 0 ? 0 : rowEnds[rows.lowerBound - 1]
        let end = rows.isEmpty ? start : rowEnds[rows.upperBound - 1]
        return [Self.header[...], bytes[start..<end], Self.trailer[...]]
    }

    /// Byte by byte, big-endian: a row has about twenty of these, and appending a 4-byte buffer
    /// through `append(contentsOf:)` was the worker's most expensive function.
    private mutating func appendInteger<Integer: FixedWidthInteger>(_ value: Integer) {
        var shift = Integer.bitWidth - 8
        while shift >= 0 {
            bytes.append(UInt8(truncatingIfNeeded: value >> shift))
            shift -= 8
        }
    }
}

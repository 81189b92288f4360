/// One stream entry as read from Redis: its id and its field/value pairs.
public struct StreamEntry: Sendable {
    public var id: StreamEntryID
    public var fields: StreamFields

    public init(id: StreamEntryID, fields: StreamFields) {
        self.id = id
        self.fields = fields
    }
}

/// An entry's field/value pairs, kept in one contiguous buffer.
///
/// One allocation for the bytes and one for the offsets per entry, instead of two per field: the
/// reader builds hundreds of thousands of these a second.
public struct StreamFields: Sendable, RandomAccessCollection {
    public typealias Index = Int

    /// One field: slices of the shared buffer, so reading a field copies nothing.
    public struct Field: Sendable {
        public var name: ArraySlice<UInt8>
        public var value: ArraySlice<UInt8>

        public var nameString: String { String(decoding: name, as: UTF8.self) }
    }

    private var bytes: [UInt8]
    // Field i's name is bytes[offsets[2i]..<offsets[2i+1]], its value bytes[offsets[2i+1]..<offsets[2i+2]].
    private var offsets: [Int]

    public init() {
        bytes = []
        offsets = [0]
    }

    public init(_ pairs: [(String, String)]) {
        self.init()
        for (name, value) in pairs {
            append(name: name.utf8, value: value.utf8)
        }
    }

    public mutating func reserveCapacity(fields: Int, bytes byteCount: Int) {
        bytes.reserveCapacity(byteCount)
        offsets.reserveCapacity(2 * fields + 1)
    }

    public mutating func append(name: some Collection<UInt8>, value: some Collection<UInt8>) {
        bytes.append(contentsOf: name)
        offsets.append(bytes.count)
        bytes.append(contentsOf: value)
        offsets.append(bytes.count)
    }

    /// Appends a field from raw memory, as the Redis reply decoder hands it over.
    public mutating func append(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        bytes.append(contentsOf: name)
        offsets.append(bytes.count)
        bytes.append(contentsOf: value)
        offsets.append(bytes.count)
    }

    /// Total bytes of names and values: what the size limit is checked against.
    public var byteCount: Int { bytes.count }

    public var startIndex: Int { 0 }
    public var endIndex: Int { (offsets.count - 1) / 2 }

    public subscript(position: Int) -> Field {
        let nameStart = offsets[2 * position]
        let nameEnd = offsets[2 * position + 1]
        let valueEnd = offsets[2 * position + 2]
        return Field(name: bytes[nameStart..<nameEnd], value: bytes[nameEnd..<valueEnd])
    }

    /// The value of the first field with this name.
    public func value(of name: String) -> ArraySlice<UInt8>? {
        first { $0.name.elementsEqual(name.utf8) }?.value
    }
}

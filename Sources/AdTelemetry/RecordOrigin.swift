import AdTelemetryRecords

/// A record's identity, assigned by the producer and written as the entry's `origin` field:
/// this producer instance (random at start) and a sequence number.
///
/// A pipeline cut mid-way (connection reset, reply timeout) leaves XADDs that Redis may or may
/// not have run. Before sending them again the producer reads the stream from just before them
/// and looks for their origins (``UnknownOutcomeLookup``), so each record is stored once.
struct RecordOrigin: Hashable, Sendable {
    var instance: UInt64
    var sequence: UInt64

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// `<instance as 16 lowercase hex digits>-<sequence in decimal>`.
    var fieldValue: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(38)
        for shift in stride(from: 60, through: 0, by: -4) { bytes.append(Self.hexDigits[Int((instance >> UInt64(shift)) & 0xF)]) }
        bytes.append(UInt8(ascii: "-"))
        bytes.append(contentsOf: String(sequence).utf8)
        return bytes
    }

    init(instance: UInt64, sequence: UInt64) {
        self.instance = instance
        self.sequence = sequence
    }

    /// Parses ``fieldValue``; nil for anything else (entries of other clients, hand-written ones).
    init?(fieldValue bytes: some Collection<UInt8>) {
        let bytes = Array(bytes)
        guard bytes.count > 17, bytes.count <= 37, bytes[16] == UInt8(ascii: "-") else { return nil }
        var instance: UInt64 = 0
        for byte in bytes[..<16] {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            default: return nil
            }
            instance = instance << 4 | UInt64(digit)
        }
        guard let sequence = UInt64(String(decoding: bytes[17...], as: UTF8.self)) else { return nil }
        self.init(instance: instance, sequence: sequence)
    }
}

/// Where to look for a record whose outcome is unknown: ids come from Redis's clock, so a start
/// is either an id Redis gave, or a moment by this host's clock that is turned into Redis's clock
/// (its `TIME`) just before looking. A host whose clock runs ahead of Redis's would otherwise
/// look past records Redis stored, and send them again.
enum LookupStart: Hashable, Sendable {
    /// From this id on the record's stream.
    case entry(StreamEntryID)
    /// From when the record was sent, by this host's clock (milliseconds since the epoch).
    case sentAt(hostMilliseconds: UInt64)
}

/// Where to look for records whose outcome is unknown, and which of them a page of the stream holds.
enum UnknownOutcomeLookup {
    /// Entries XRANGE returns per page while looking.
    static let pageSize = 1000
    /// How far before a host-clock start to look (``DeliveryContract/hostClockMargin``).
    static let hostClockMargin = UInt64(DeliveryContract.hostClockMargin.wholeMilliseconds)
    /// How far before the last confirmed id to look (``DeliveryContract/confirmedIDMargin``).
    static let confirmedIDMargin = UInt64(DeliveryContract.confirmedIDMargin.wholeMilliseconds)

    /// Ids on one stream only grow, on whatever node holds it now, so a record sent after the last
    /// id confirmed on its stream has a larger one. The margin covers the one way that fails: a
    /// failover that lost the confirmed entry, to a primary whose clock is behind. With nothing
    /// confirmed yet, when it was sent by this host's clock, to be turned into Redis's.
    static func start(lastConfirmed: StreamEntryID?, sentAtMilliseconds: UInt64) -> LookupStart {
        guard let lastConfirmed else { return .sentAt(hostMilliseconds: sentAtMilliseconds) }
        let milliseconds = lastConfirmed.milliseconds - min(lastConfirmed.milliseconds, confirmedIDMargin)
        return .entry(StreamEntryID(milliseconds: milliseconds, sequence: 0))
    }

    /// The id to read from. - Parameter redisAhead: Redis's clock less this host's, in milliseconds,
    ///   measured just before (needed for ``LookupStart/sentAt(hostMilliseconds:)`` only).
    static func entryID(for start: LookupStart, redisAhead: Int64) -> StreamEntryID {
        switch start {
        case .entry(let id):
            return id
        case .sentAt(let host):
            let redis = Int64(clamping: host) &+ redisAhead &- Int64(hostClockMargin)
            return StreamEntryID(milliseconds: UInt64(max(0, redis)), sequence: 0)
        }
    }

    /// The ids under which `entries` hold the `wanted` records.
    static func stored(in entries: [StreamEntry], wanted: Set<RecordOrigin>) -> [RecordOrigin: StreamEntryID] {
        var found: [RecordOrigin: StreamEntryID] = [:]
        let originName = Array(WireFormat.FieldName.origin.utf8)
        for entry in entries {
            for field in entry.fields where field.name.elementsEqual(originName) {
                if let origin = RecordOrigin(fieldValue: field.value), wanted.contains(origin) {
                    // The first copy counts; a second could only come from another client re-adding it.
                    if found[origin] == nil { found[origin] = entry.id }
                }
                break
            }
        }
        return found
    }
}

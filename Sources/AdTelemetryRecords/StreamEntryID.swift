/// The id Redis gives a stream entry: `<milliseconds>-<sequence>`.
///
/// Its milliseconds are the time Redis accepted the entry, which the worker stores as `enqueued_at`
/// and uses for end-to-end latency.
public struct StreamEntryID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var milliseconds: UInt64
    public var sequence: UInt64

    public init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    /// Parses the `ms-seq` text form; `nil` for anything else.
    public init?(_ text: some StringProtocol) {
        self.init(utf8: Array(text.utf8))
    }

    /// Parses the `ms-seq` form from raw reply bytes without building a `String`.
    public init?(utf8 bytes: some Collection<UInt8>) {
        var milliseconds: UInt64 = 0
        var sequence: UInt64 = 0
        var seenDash = false
        var digitsInPart = 0
        for byte in bytes {
            if byte == UInt8(ascii: "-") {
                guard !seenDash, digitsInPart > 0 else { return nil }
                seenDash = true
                digitsInPart = 0
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let digit = UInt64(byte - UInt8(ascii: "0"))
            digitsInPart += 1
            guard digitsInPart <= 20 else { return nil }
            if seenDash {
                let (times, overflow1) = sequence.multipliedReportingOverflow(by: 10)
                let (plus, overflow2) = times.addingReportingOverflow(digit)
                guard !overflow1, !overflow2 else { return nil }
                sequence = plus
            } else {
                let (times, overflow1) = milliseconds.multipliedReportingOverflow(by: 10)
                let (plus, overflow2) = times.addingReportingOverflow(digit)
                guard !overflow1, !overflow2 else { return nil }
                milliseconds = plus
            }
        }
        guard seenDash, digitsInPart > 0 else { return nil }
        self.init(milliseconds: milliseconds, sequence: sequence)
    }

    public var description: String { "\(milliseconds)-\(sequence)" }

    /// The `<ms>-<seq>` text, written into a stack buffer (no String on the per-row path).
    public func withUTF8<Result>(_ body: (UnsafeBufferPointer<UInt8>) throws -> Result) rethrows -> Result {
        // Two UInt64 of at most 20 digits each, and the dash.
        try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 41) { buffer in
            var end = 41
            func prepend(_ number: UInt64) {
                var number = number
                repeat {
                    end -= 1
                    buffer[end] = UInt8(ascii: "0") + UInt8(number % 10)
                    number /= 10
                } while number > 0
            }
            prepend(sequence)
            end -= 1
            buffer[end] = UInt8(ascii: "-")
            prepend(milliseconds)
            return try body(UnsafeBufferPointer(rebasing: buffer[end...]))
        }
    }

    /// The next possible id: where a range continues after this one; nil after the largest id.
    public var successor: StreamEntryID? {
        if sequence < .max { return StreamEntryID(milliseconds: milliseconds, sequence: sequence + 1) }
        if milliseconds < .max { return StreamEntryID(milliseconds: milliseconds + 1, sequence: 0) }
        return nil
    }

    /// Whether the id's milliseconds are a time PostgreSQL's `timestamptz` can hold (the years
    /// 1970 through 9999, ``Timestamp/acceptedRange``). Redis takes any explicit id up to
    /// 2^64 - 1, and gives every later `*` entry at least the same milliseconds.
    public var isStorable: Bool { milliseconds <= UInt64(Timestamp.acceptedRange.upperBound) }

    /// The time Redis accepted the entry (clamped for ids that are not ``isStorable``).
    public var timestamp: Timestamp { Timestamp(millisecondsSinceEpoch: Int64(clamping: milliseconds)) }

    public static func < (lhs: StreamEntryID, rhs: StreamEntryID) -> Bool {
        (lhs.milliseconds, lhs.sequence) < (rhs.milliseconds, rhs.sequence)
    }
}

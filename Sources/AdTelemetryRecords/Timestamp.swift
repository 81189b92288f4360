#if canImport(Glibc)
import Glibc
#endif

/// A UTC instant with millisecond precision, as the wire format carries it (`ts`).
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var millisecondsSinceEpoch: Int64

    public init(millisecondsSinceEpoch: Int64) {
        self.millisecondsSinceEpoch = millisecondsSinceEpoch
    }

    /// The current wall-clock time.
    public static func now() -> Timestamp {
        Timestamp(millisecondsSinceEpoch: microsecondsSinceEpochNow() / 1000)
    }

    /// The current wall-clock time in microseconds since the epoch, for figures finer than a
    /// timestamp's milliseconds.
    public static func microsecondsSinceEpochNow() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1000
    }

    /// The range PostgreSQL's `timestamptz` and the worker accept: the years 1970 through 9999.
    public static let acceptedRange: ClosedRange<Int64> = 0...253_402_300_799_999

    public var description: String { "\(millisecondsSinceEpoch)ms" }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        lhs.millisecondsSinceEpoch < rhs.millisecondsSinceEpoch
    }
}

/// UTF-8 validation without building a `String` first: the wire decoder checks every text field of
/// every entry, and the standard library's generic `String(validating:as:)` costs a metadata
/// lookup per call.
enum UTF8Validation {
    /// Whether `buffer` is well-formed UTF-8 (RFC 3629).
    static func isValid(_ buffer: UnsafeBufferPointer<UInt8>) -> Bool {
        var position = 0
        while position < buffer.count {
            if buffer[position] < 0x80 {
                position += 1
                continue
            }
            guard let length = scalarLength(in: buffer, at: position) else { return false }
            position += length
        }
        return true
    }

    /// The length of the multi-byte scalar starting at `position`, or `nil` if it is malformed
    /// (overlong, surrogate, above U+10FFFF or truncated).
    static func scalarLength(in buffer: UnsafeBufferPointer<UInt8>, at position: Int) -> Int? {
        let lead = buffer[position]
        let length: Int
        var lowerBound: UInt8 = 0x80
        var upperBound: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; lowerBound = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; upperBound = 0x9F
        case 0xF0: length = 4; lowerBound = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; upperBound = 0x8F
        default: return nil
        }
        guard buffer.count - position >= length else { return nil }
        let second = buffer[position + 1]
        guard second >= lowerBound, second <= upperBound else { return nil }
        for offset in 2..<max(2, length) where buffer[position + offset] & 0xC0 != 0x80 {
            return nil
        }
        return length
    }
}

/// Parses decimal numbers as the wire format carries them (`0.978`, `-12.5`, `51`).
public enum DecimalText {
    /// The value of `bytes` if they are a decimal number as JSON writes one (an optional `-`,
    /// digits, an optional fraction, an optional exponent; leading zeros allowed), as `Double(String)`
    /// reads it; nil for anything else. `Double(String)` alone would also take `+1`, `.5`, `5.`,
    /// hex (`0x1p3`), `nan` and `inf`, which no producer writes and PostgreSQL's float8 input refuses.
    ///
    /// Plain decimals of up to 15 significant digits, which is what producers write, are computed
    /// as an integer divided by a power of ten. Both are exact doubles, and IEEE division rounds
    /// correctly, so the result is the correctly rounded value, the same as `strtod` gives
    /// (Clinger's fast path). Anything else (exponents, more digits, `inf`, hex) goes through
    /// `Double(String)`. In the worker's profile, String plus `strtod` were 7 % of its CPU; this
    /// path is about 1 %.
    public static func double(_ bytes: some Collection<UInt8>) -> Double? {
        if let value = fastDouble(bytes) { return value }
        guard isDecimalNumber(bytes) else { return nil }
        return Double(String(decoding: bytes, as: UTF8.self))
    }

    /// Whether the significand of `bytes`, a decimal number, has a digit other than 0: whether
    /// the number it spells is not zero, whatever its exponent.
    public static func hasNonzeroDigit(_ bytes: some Collection<UInt8>) -> Bool {
        for byte in bytes {
            if byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") { return false }
            if byte >= UInt8(ascii: "1") && byte <= UInt8(ascii: "9") { return true }
        }
        return false
    }

    /// `-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    static func isDecimalNumber(_ bytes: some Collection<UInt8>) -> Bool {
        var index = bytes.startIndex
        func digits() -> Int {
            var count = 0
            while index != bytes.endIndex, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                bytes.formIndex(after: &index)
                count += 1
            }
            return count
        }
        func skip(_ byte: UInt8) -> Bool {
            guard index != bytes.endIndex, bytes[index] == byte else { return false }
            bytes.formIndex(after: &index)
            return true
        }
        _ = skip(UInt8(ascii: "-"))
        guard digits() > 0 else { return false }
        if skip(UInt8(ascii: ".")) && digits() == 0 { return false }
        if skip(UInt8(ascii: "e")) || skip(UInt8(ascii: "E")) {
            if !skip(UInt8(ascii: "+")) { _ = skip(UInt8(ascii: "-")) }
            guard digits() > 0 else { return false }
        }
        return index == bytes.endIndex
    }

    private static let exactPowersOfTen: [Double] = (0...22).map { exponent in
        (0..<exponent).reduce(1.0) { value, _ in value * 10 }
    }

    private static func fastDouble(_ bytes: some Collection<UInt8>) -> Double? {
        var mantissa: UInt64 = 0
        var digits = 0
        var fractionDigits = 0
        var negative = false
        var seenPoint = false
        var index = bytes.startIndex
        if index != bytes.endIndex && bytes[index] == UInt8(ascii: "-") {
            negative = true
            bytes.formIndex(after: &index)
        }
        var integerDigits = 0
        while index != bytes.endIndex {
            let byte = bytes[index]
            bytes.formIndex(after: &index)
            if byte == UInt8(ascii: ".") {
                guard !seenPoint else { return nil }
                seenPoint = true
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            digits += 1
            guard digits <= 15 else { return nil }
            mantissa = mantissa * 10 + UInt64(byte - UInt8(ascii: "0"))
            if seenPoint { fractionDigits += 1 } else { integerDigits += 1 }
        }
        // "-", ".", "5." and ".5" are left to Double(String), which decides what they mean.
        guard integerDigits > 0, !seenPoint || fractionDigits > 0 else { return nil }
        let magnitude = Double(mantissa) / exactPowersOfTen[fractionDigits]
        return negative ? -magnitude : magnitude
    }
}

/// A strict JSON (RFC 8259) syntax check over raw bytes, written to accept exactly what
/// PostgreSQL's `jsonb` accepts, so a document that passes here cannot fail the COPY.
///
/// Beyond the RFC that means: valid UTF-8, no `\u0000`, surrogate escapes only in pairs, and a
/// nesting limit well inside PostgreSQL's stack depth. No allocation; about one branch per byte.
public enum JSONSyntax {
    /// What a document's top-level value is.
    public enum Kind: Sendable, Equatable {
        case object, array, string, number, boolean, null
    }

    /// Deeper documents are refused rather than risking the server's stack-depth error.
    public static let maximumDepth = 512

    /// The kind of the single top-level value, or `nil` if `bytes` is not one valid JSON document.
    public static func validate(_ bytes: ArraySlice<UInt8>) -> Kind? {
        bytes.withUnsafeBufferPointer { buffer in
            var scanner = Scanner(buffer: buffer)
            scanner.skipWhitespace()
            guard let kind = scanner.value(depth: 0) else { return nil }
            scanner.skipWhitespace()
            return scanner.position == buffer.count ? kind : nil
        }
    }

    public static func validate(_ text: String) -> Kind? {
        validate(ArraySlice(text.utf8))
    }

    private struct Scanner {
        let buffer: UnsafeBufferPointer<UInt8>
        var position = 0

        init(buffer: UnsafeBufferPointer<UInt8>) {
            self.buffer = buffer
        }

        var current: UInt8? { position < buffer.count ? buffer[position] : nil }

        mutating func skipWhitespace() {
            while let byte = current, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 {
                position += 1
            }
        }

        mutating func consume(_ literal: StaticString) -> Bool {
            let count = literal.utf8CodeUnitCount
            guard buffer.count - position >= count else { return false }
            for offset in 0..<count where buffer[position + offset] != literal.utf8Start[offset] {
                return false
            }
            position += count
            return true
        }

        mutating func value(depth: Int) -> Kind? {
            guard let byte = current else { return nil }
            switch byte {
            case UInt8(ascii: "{"):
                return object(depth: depth + 1) ? .object : nil
            case UInt8(ascii: "["):
                return array(depth: depth + 1) ? .array : nil
            case UInt8(ascii: "\""):
                return string() ? .string : nil
            case UInt8(ascii: "t"):
                return consume("true") ? .boolean : nil
            case UInt8(ascii: "f"):
                return consume("false") ? .boolean : nil
            case UInt8(ascii: "n"):
                return consume("null") ? .null : nil
            default:
                return number() ? .number : nil
            }
        }

        mutating func object(depth: Int) -> Bool {
            guard depth <= JSONSyntax.maximumDepth else { return false }
            position += 1
            skipWhitespace()
            if current == UInt8(ascii: "}") {
                position += 1
                return true
            }
            while true {
                guard current == UInt8(ascii: "\""), string() else { return false }
                skipWhitespace()
                guard current == UInt8(ascii: ":") else { return false }
                position += 1
                skipWhitespace()
                guard value(depth: depth) != nil else { return false }
                skipWhitespace()
                switch current {
                case UInt8(ascii: ","):
                    position += 1
                    skipWhitespace()
                case UInt8(ascii: "}"):
                    position += 1
                    return true
                default:
                    return false
                }
            }
        }

        mutating func array(depth: Int) -> Bool {
            guard depth <= JSONSyntax.maximumDepth else { return false }
            position += 1
            skipWhitespace()
            if current == UInt8(ascii: "]") {
                position += 1
                return true
            }
            while true {
                guard value(depth: depth) != nil else { return false }
                skipWhitespace()
                switch current {
                case UInt8(ascii: ","):
                    position += 1
                    skipWhitespace()
                case UInt8(ascii: "]"):
                    position += 1
                    return true
                default:
                    return false
                }
            }
        }

        mutating func string() -> Bool {
            position += 1
            while let byte = current {
                switch byte {
                case UInt8(ascii: "\""):
                    position += 1
                    return true
                case UInt8(ascii: "\\"):
                    position += 1
                    guard escape() else { return false }
                case 0..<0x20:
                    return false
                case 0x20..<0x80:
                    position += 1
                default:
                    guard utf8Sequence() else { return false }
                }
            }
            return false
        }

        mutating func escape() -> Bool {
            guard let byte = current else { return false }
            position += 1
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                return true
            case UInt8(ascii: "u"):
                guard let unit = hex4() else { return false }
                switch unit {
                case 0:
                    return false  // jsonb cannot store U+0000
                case 0xD800...0xDBFF:
                    guard consume("\\u"), let low = hex4(), (0xDC00...0xDFFF).contains(low) else { return false }
                    return true
                case 0xDC00...0xDFFF:
                    return false
                default:
                    return true
                }
            default:
                return false
            }
        }

        mutating func hex4() -> UInt32? {
            guard buffer.count - position >= 4 else { return nil }
            var unit: UInt32 = 0
            for _ in 0..<4 {
                let byte = buffer[position]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: return nil
                }
                unit = unit << 4 | UInt32(digit)
                position += 1
            }
            return unit
        }

        mutating func utf8Sequence() -> Bool {
            guard let length = UTF8Validation.scalarLength(in: buffer, at: position) else { return false }
            position += length
            return true
        }

        mutating func number() -> Bool {
            if current == UInt8(ascii: "-") { position += 1 }
            guard let first = current, isDigit(first) else { return false }
            position += 1
            if first != UInt8(ascii: "0") {
                skipDigits()
            }
            if current == UInt8(ascii: ".") {
                position += 1
                guard let digit = current, isDigit(digit) else { return false }
                skipDigits()
            }
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                position += 1
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
                guard let digit = current, isDigit(digit) else { return false }
                skipDigits()
            }
            return true
        }

        mutating func skipDigits() {
            while let byte = current, isDigit(byte) { position += 1 }
        }

        func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
    }
}

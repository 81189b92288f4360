import Foundation

/// The syntax of a `.env` settings file: `KEY=VALUE` lines (ended by LF or CRLF); `#` comments,
/// blank lines, an optional `export `, and single or double quotes around a value. Parsing only:
/// the CLI reads the file and decides what the settings mean.
public enum DotEnv {
    /// A line that is not `KEY=VALUE`; `line` counts from 1.
    public struct SyntaxError: Error, Equatable, CustomStringConvertible {
        public var line: Int
        public var description: String { ".env line \(line) is not KEY=VALUE" }
    }

    /// The values of `text`, a later line's over an earlier one's.
    public static func parse(_ text: String) throws(SyntaxError) -> [String: String] {
        var values: [String: String] = [:]
        // "\r\n" (a file saved on Windows) is one Character, which a split on "\n" does not see.
        let lines = text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" }
        for (number, rawLine) in lines.enumerated() {
            var line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst(7)) }
            guard let equals = line.firstIndex(of: "=") else {
                throw SyntaxError(line: number + 1)
            }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
            }
            values[key] = value
        }
        return values
    }
}

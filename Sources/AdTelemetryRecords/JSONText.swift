/// The text of one valid JSON document, checked by ``JSONSyntax``: what goes into a `jsonb` column
/// and onto the wire as-is.
public struct JSONText: Sendable, Equatable, CustomStringConvertible {
    /// UTF-8 bytes; a slice, so the worker can point into the entry it read without copying.
    public let utf8: ArraySlice<UInt8>
    public let kind: JSONSyntax.Kind

    /// Serializes a value built in Swift; always valid.
    public init(_ value: JSONValue) {
        var bytes: [UInt8] = []
        value.write(into: &bytes)
        self.utf8 = bytes[...]
        self.kind = JSONSyntax.validate(self.utf8) ?? .null
    }

    /// Checks JSON that arrived as text.
    public init(validating utf8: ArraySlice<UInt8>, field: String = "json") throws(RecordError) {
        guard let kind = JSONSyntax.validate(utf8) else {
            // Say what is wrong in the terms of the bytes first: invalid UTF-8 is not a JSON typo.
            let isUTF8 = utf8.withUnsafeBufferPointer { UTF8Validation.isValid($0) }
            throw RecordError(isUTF8 ? .invalidJSON : .invalidUTF8, field: field)
        }
        self.utf8 = utf8
        self.kind = kind
    }

    public init(validating text: String, field: String = "json") throws(RecordError) {
        try self.init(validating: ArraySlice(text.utf8), field: field)
    }

    public var description: String { String(decoding: utf8, as: UTF8.self) }

    public static func == (lhs: JSONText, rhs: JSONText) -> Bool { lhs.utf8 == rhs.utf8 }
}

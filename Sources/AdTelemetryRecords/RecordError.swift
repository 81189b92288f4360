/// Why an entry could not become a record. Its ``description`` is what the dead-letter stream
/// stores as the reason: a code and a field name, never the value.
public struct RecordError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, CaseIterable {
        case emptyEntry = "empty_entry"
        case entryTooLarge = "entry_too_large"
        case missingField = "missing_field"
        case duplicateField = "duplicate_field"
        case unknownVersion = "unknown_version"
        case invalidUTF8 = "invalid_utf8"
        case nulByte = "nul_byte"
        case invalidJSON = "invalid_json"
        case notAnObject = "not_a_json_object"
        case invalidNumber = "invalid_number"
        case invalidBoolean = "invalid_boolean"
        case outOfRange = "out_of_range"
        case invalidIPAddress = "invalid_ip_address"
        case fieldTooLarge = "field_too_large"
    }

    public var code: Code
    /// The wire field at fault, if one is.
    public var field: String?

    public init(_ code: Code, field: String? = nil) {
        self.code = code
        self.field = field
    }

    public var description: String {
        if let field { "\(code.rawValue): \(field)" } else { code.rawValue }
    }
}

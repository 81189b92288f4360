import AdTelemetryRecords
import Testing

@Suite("JSON syntax check")
struct JSONSyntaxTests {
    @Test(arguments: [
        (#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#, JSONSyntax.Kind.object),
        (" [1, -2.5e10, 0.1E-3, 0] ", .array),
        (#""caf\u00e9 \ud83d\ude00 é""#, .string),
        ("-0", .number),
        ("true", .boolean),
        ("null", .null),
        ("{}", .object),
    ])
    func acceptsValidDocuments(text: String, kind: JSONSyntax.Kind) {
        #expect(JSONSyntax.validate(text) == kind)
    }

    @Test(arguments: [
        "", "{", "{\"a\":1,}", "[1,]", "01", "1.", ".5", "+1", "NaN", "Infinity", "'a'", "{a:1}",
        "\"tab\there\"", #""\u0000""#, #""\ud800""#, #""\udc00x""#, #""\x""#, "[1] [2]", "tru", "nul",
    ])
    func refusesInvalidDocuments(text: String) {
        #expect(JSONSyntax.validate(text) == nil)
    }

    @Test func refusesInvalidUTF8InsideStrings() {
        let overlong: [UInt8] = Array(#"{"a":""#.utf8) + [0xC0, 0xAF] + Array(#""}"#.utf8)
        let surrogate: [UInt8] = Array(#"""#.utf8) + [0xED, 0xA0, 0x80] + Array(#"""#.utf8)
        let truncated: [UInt8] = Array(#"""#.utf8) + [0xE2, 0x82] + Array(#"""#.utf8)
        let valid: [UInt8] = Array(#"""#.utf8) + [0xE2, 0x82, 0xAC] + Array(#"""#.utf8)
        #expect(JSONSyntax.validate(overlong[...]) == nil)
        #expect(JSONSyntax.validate(surrogate[...]) == nil)
        #expect(JSONSyntax.validate(truncated[...]) == nil)
        #expect(JSONSyntax.validate(valid[...]) == .string)
    }

    @Test func limitsNestingDepth() {
        let deep = String(repeating: "[", count: JSONSyntax.maximumDepth + 1) + String(repeating: "]", count: JSONSyntax.maximumDepth + 1)
        let allowed = String(repeating: "[", count: JSONSyntax.maximumDepth) + String(repeating: "]", count: JSONSyntax.maximumDepth)
        #expect(JSONSyntax.validate(deep) == nil)
        #expect(JSONSyntax.validate(allowed) == .array)
    }

    @Test func serializedValuesAreValidAndEscaped() {
        let value: JSONValue = ["quote\"back\\slash": "line\nbreak\u{01}\u{0}", "n": [1, 2.5, .double(.nan), nil, true]]
        let text = JSONText(value)
        #expect(text.kind == .object)
        #expect(text.description == #"{"quote\"back\\slash":"line\nbreak\u0001\ufffd","n":[1,2.5,null,null,true]}"#)
    }
}

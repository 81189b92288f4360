import AdTelemetryRecords
import Testing

@Suite("Decimal text")
struct DecimalTextTests {
    /// Same value, bit for bit, as Double(String) for decimal numbers; nil for anything else.
    private func expectSameAsStandardLibrary(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let parsed = DecimalText.double(Array(text.utf8))
        let expected = Self.lenient.contains(text) ? nil : Double(text)
        #expect(parsed?.bitPattern == expected?.bitPattern, "\(text)", sourceLocation: sourceLocation)
    }

    /// What Double(String) takes and the wire format does not.
    static let lenient: Set<String> = ["+1", ".5", "5.", "nan", "inf", "-infinity", "0x1p3", "1e", "1e+", "-.5"]

    @Test(arguments: [
        "1e", "1e+", "-.5", "1e+5", "1E-05", "-0e0", "5e-324", "1.7976931348623157e+308", "1e400",
        "0", "-0", "0.0", "-0.0", "51", "0.978", "-12.5", "007", "0.1", "0.3", "123456789012345", "1234567890123456",
        "0.000000000000001", "0.0000000000000001", "999999999999999.9", "9007199254740993", "1e5", "1.5E-3", "-", ".", ".5",
        "5.", "1.2.3", "", " 1", "1 ", "+1", "nan", "inf", "-infinity", "0x1p3", "1_000", "١٢", "12a",
    ])
    func agreesWithTheStandardLibrary(text: String) {
        expectSameAsStandardLibrary(text)
    }

    @Test func agreesOnRandomDecimalsOfEveryLength() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let integerDigits = Int.random(in: 1...10, using: &generator)
            let fractionDigits = Int.random(in: 0...12, using: &generator)
            var text = Bool.random(using: &generator) ? "-" : ""
            text += String((0..<integerDigits).map { _ in "0123456789".randomElement(using: &generator)! })
            if fractionDigits > 0 {
                text += "." + String((0..<fractionDigits).map { _ in "0123456789".randomElement(using: &generator)! })
            }
            expectSameAsStandardLibrary(text)
        }
    }

    @Test func agreesOnWhatProducersWrite() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let value = Double.random(in: -1_000...1_000, using: &generator)
            expectSameAsStandardLibrary("\(value)")
            expectSameAsStandardLibrary("\((value * 1000).rounded() / 1000)")
        }
    }
}

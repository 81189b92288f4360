/// A test's own set-up failed (no free port, a state never reached): says what, for the test's failure.
public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// Polls a state that another task or process reaches on its own (a count in PostgreSQL, a lease in
/// Redis, a producer's buffer) until `condition` holds. Throws once `limit` has passed without it,
/// saying what was awaited, so a test fails with a reason instead of running into its time limit.
///
/// Only for state that sends no event; a test that can await an event awaits it instead.
public func waitUntil(
    _ what: @autoclosure () -> String = "a condition", within limit: Duration = .seconds(30), every interval: Duration = .milliseconds(10),
    fileID: String = #fileID, line: Int = #line, _ condition: () async throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + limit
    while try await !condition() {
        guard clock.now < deadline else { throw TestSupportError("\(fileID):\(line): waited \(limit) for \(what())") }
        try await Task.sleep(for: interval)
    }
}

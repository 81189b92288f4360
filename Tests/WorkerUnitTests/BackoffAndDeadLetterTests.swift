import Postgres
import Redis
import TelemetryRecords
import Testing
@testable import Worker

@Suite("Backoff")
struct BackoffTests {
    struct Fixed: RandomNumberGenerator {
        var value: UInt64
        mutating func next() -> UInt64 { value }
    }

    @Test func doublesUpToTheMaximumWithJitterInTheUpperHalf() {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        var highest = Fixed(value: .max)
        let delays = (0..<6).map { _ in backoff.nextDelay(using: &highest) }
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)])
        var lowest = Fixed(value: 0)
        var fresh = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        #expect(fresh.nextDelay(using: &lowest) == .milliseconds(50))
    }
}

@Suite("Dead letters")
struct DeadLetterTests {
    @Test func replayRecoversTheOriginalFieldsByteForByte() {
        let original = StreamFields([("v", "1"), ("model", "m"), ("dead.note", "kept: it follows an original field")])
        let letter = DeadLetter(entry: StreamEntry(id: StreamEntryID(milliseconds: 7, sequence: 1), fields: original), reason: "invalid_json: input", code: "invalid_json", sqlState: "22P02", deliveries: 2)
        let written = letter.fields(from: "s", at: Timestamp(millisecondsSinceEpoch: 9))
        #expect(written.value(of: DeadLetter.Field.deliveries).map { Array($0) } == Array("2".utf8))
        #expect(written.value(of: DeadLetter.Field.sqlState).map { Array($0) } == Array("22P02".utf8))
        func pairs(_ fields: StreamFields) -> [[UInt8]] { fields.flatMap { [Array($0.name), Array($0.value)] } }
        #expect(pairs(DeadLetter.originalFields(of: written)) == pairs(original))
    }
}

@Suite("Error labels")
struct ErrorLabelTests {
    /// Metric labels come from codes set at the C boundary, never from an error's text (which may
    /// hold a server's message): bounded, and the same whatever the message says.
    @Test func labelsAreCodesAndSQLStates() {
        let refused = PostgresError(.dataError, "the server refused a value (really)", sqlState: "22P02")
        #expect(WorkerStatus.errorLabels(refused).map { "\($0.0)=\($0.1)" } == ["kind=dataError", "sqlstate=22P02"])
        let lost = PostgresError(.connectionLost, "server closed the connection unexpectedly")
        #expect(WorkerStatus.errorLabels(lost).map { "\($0.0)=\($0.1)" } == ["kind=connectionLost", "sqlstate=none"])
        let full = RedisError.fromReply("OOM command not allowed when used memory > 'maxmemory'.")
        #expect(WorkerStatus.errorLabels(full).map { "\($0.0)=\($0.1)" } == ["kind=outOfMemory"])
        #expect(WorkerStatus.errorLabels(CancellationError()).map { "\($0.0)=\($0.1)" } == ["kind=other"])
    }
}

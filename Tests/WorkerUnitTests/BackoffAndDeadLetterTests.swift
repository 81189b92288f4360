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
        let letter = DeadLetter(entry: StreamEntry(id: StreamEntryID(milliseconds: 7, sequence: 1), fields: original), reason: "invalid_json: input", sqlState: "22P02", deliveries: 2)
        let written = letter.fields(from: "s", at: Timestamp(millisecondsSinceEpoch: 9))
        #expect(written.value(of: DeadLetter.Field.deliveries).map { Array($0) } == Array("2".utf8))
        #expect(written.value(of: DeadLetter.Field.sqlState).map { Array($0) } == Array("22P02".utf8))
        func pairs(_ fields: StreamFields) -> [[UInt8]] { fields.flatMap { [Array($0.name), Array($0.value)] } }
        #expect(pairs(DeadLetter.originalFields(of: written)) == pairs(original))
    }
}

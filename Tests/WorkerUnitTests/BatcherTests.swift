import Redis
import TelemetryRecords
import Testing
@testable import Worker

@Suite("Batcher")
struct BatcherTests {
    let start = ContinuousClock.Instant.now

    @Test func flushesWhenFull() {
        var batcher = Batcher<Int, ContinuousClock.Instant>(maximumSize: 3, maximumWait: .seconds(1))
        batcher.append(contentsOf: [1, 2], at: start)
        #expect(!batcher.isReady(at: start))
        #expect(batcher.remainingCapacity == 1)
        batcher.append(contentsOf: [3], at: start)
        #expect(batcher.isReady(at: start))
        #expect(batcher.take() == [1, 2, 3])
        #expect(batcher.isEmpty)
        #expect(!batcher.isReady(at: start + .seconds(5)))
    }

    @Test func flushesWhenTheOldestEntryHasWaitedLongEnough() {
        var batcher = Batcher<Int, ContinuousClock.Instant>(maximumSize: 100, maximumWait: .milliseconds(200))
        batcher.append(contentsOf: [1], at: start)
        batcher.append(contentsOf: [2], at: start + .milliseconds(150))
        #expect(!batcher.isReady(at: start + .milliseconds(199)))
        #expect(batcher.isReady(at: start + .milliseconds(200)))
    }

    @Test func readWaitEndsAtTheBatchDeadline() {
        var batcher = Batcher<Int, ContinuousClock.Instant>(maximumSize: 100, maximumWait: .milliseconds(200))
        #expect(batcher.readWait(at: start, limit: .seconds(1)) == .seconds(1))
        batcher.append(contentsOf: [1], at: start)
        #expect(batcher.readWait(at: start + .milliseconds(50), limit: .seconds(1)) == .milliseconds(150))
        // Past the deadline the wait never reaches zero, which Redis would read as "block forever".
        #expect(batcher.readWait(at: start + .seconds(3), limit: .seconds(1)) == .milliseconds(1))
    }

    @Test func emptyReadsDoNotStartTheClock() {
        var batcher = Batcher<Int, ContinuousClock.Instant>(maximumSize: 10, maximumWait: .milliseconds(10))
        batcher.append(contentsOf: [], at: start)
        #expect(!batcher.isReady(at: start + .seconds(1)))
        batcher.append(contentsOf: [7], at: start + .seconds(1))
        #expect(!batcher.isReady(at: start + .seconds(1)))
        #expect(batcher.isReady(at: start + .seconds(1) + .milliseconds(10)))
    }
}

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

@testable import AdTelemetry
import AdTelemetryRecords
import AdWorkerConnectionThread
import AdWorkerCore
import Testing

/// The producer's look-before-resend and the worker's trim, measured from what each side does.
@Suite("The producer-worker delivery contract")
struct DeliveryContractTests {
    @Test func everyEntryTheProducerLooksAtIsStillKeptByTheWorkersTrim() {
        // The producer: how far before a record it starts reading, from either kind of start...
        let sentAt: UInt64 = 1_700_000_000_000
        let byHostClock = UnknownOutcomeLookup.entryID(for: UnknownOutcomeLookup.start(lastConfirmed: nil, sentAtMilliseconds: sentAt), redisAhead: 0)
        let confirmed = StreamEntryID(milliseconds: sentAt, sequence: 7)
        let byConfirmedID = UnknownOutcomeLookup.entryID(for: UnknownOutcomeLookup.start(lastConfirmed: confirmed, sentAtMilliseconds: sentAt), redisAhead: 0)
        let reach = Duration.milliseconds(sentAt - min(byHostClock.milliseconds, byConfirmedID.milliseconds))
        // ...and the longest it pauses before the next round looks, once Redis answers again.
        // (Its jitter drawn at the top, the most each pause can be.)
        var backoff = ProducerStateMachine<ContinuousClock, Int>.retryBackoff
        var highest = Highest()
        let longestPause = (0..<30).map { _ in backoff.nextDelay(using: &highest) }.max()!

        #expect(reach == DeliveryContract.lookupReach)
        #expect(longestPause == DeliveryContract.longestRetryPause)
        // The worker: what its trim keeps behind the stream's newest id.
        #expect(StreamMaintenance.defaultKeepRecent == DeliveryContract.keepWindow)
        #expect(reach + longestPause == DeliveryContract.lookupWindow)
        #expect(DeliveryContract.lookupWindow < StreamMaintenance.defaultKeepRecent)
        #expect(DeliveryContract.holds)
    }
}

/// A generator that always draws its largest value.
private struct Highest: RandomNumberGenerator {
    mutating func next() -> UInt64 { .max }
}

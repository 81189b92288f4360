import AdTelemetryRecords
@testable import AdWorkerCore
import Testing

@Suite struct ThroughputWindowTests {
    @Test func aRangeAddsUpOnlyTheSecondsItCovers() {
        var window = ThroughputWindow()
        var random = SplitMix64(seed: 1)
        window.record(entries: 10, rows: 9, deadLetters: 1, latencies: [5, 1], in: 1_000, using: &random)
        window.record(entries: 4, rows: 4, deadLetters: 0, latencies: [3], in: 1_001, using: &random)
        window.recordFailure(in: 1_001)
        window.record(entries: 100, rows: 100, deadLetters: 0, latencies: [], in: 1_005, using: &random)

        let first = window.totals(over: 1_000..<1_002)
        #expect(first == ThroughputWindow.Totals(entries: 14, rows: 13, deadLetters: 1, failures: 1, sortedLatencies: [1, 3, 5]))
        #expect(window.totals(over: 1_002..<1_005) == ThroughputWindow.Totals())
        #expect(window.totals(over: 1_005..<1_006).rows == 100)
    }

    @Test func aSecondAMinuteLaterReplacesTheBucketItSharesInsteadOfAddingToIt() {
        var window = ThroughputWindow()
        var random = SplitMix64(seed: 1)
        window.record(entries: 7, rows: 7, deadLetters: 0, latencies: [9], in: 2_000, using: &random)
        let later = 2_000 + Int64(ThroughputWindow.seconds)
        window.record(entries: 1, rows: 1, deadLetters: 0, latencies: [2], in: later, using: &random)
        #expect(window.totals(over: 2_000..<(later + 1)) == ThroughputWindow.Totals(entries: 1, rows: 1, sortedLatencies: [2]))
    }

    @Test func aBusySecondKeepsABoundedSampleOfItsLatencies() {
        var window = ThroughputWindow()
        var random = SplitMix64(seed: 1)
        let latencies = (0..<Int64(3 * ThroughputWindow.latencySamplesPerSecond)).map { $0 % 100 }
        window.record(entries: latencies.count, rows: latencies.count, deadLetters: 0, latencies: latencies, in: 3_000, using: &random)
        let totals = window.totals(over: 3_000..<3_001)
        #expect(totals.entries == latencies.count)
        #expect(totals.sortedLatencies.count == ThroughputWindow.latencySamplesPerSecond)
        #expect(totals.sortedLatencies.allSatisfy { (0..<100).contains($0) })
        // A uniform sample of 0...99 repeated: its median is near 50.
        #expect((35...65).contains(totals.latency(0.5) ?? -1), "\(String(describing: totals.latency(0.5)))")
    }
}

@Suite struct PercentileTests {
    @Test func theNearestRankIsTheSmallestValueWithTheQuantileAtOrBelowIt() {
        let values = Array(1...100)
        #expect(Percentile.nearestRank(0.5, of: values) == 50)
        #expect(Percentile.nearestRank(0.99, of: values) == 99)
        #expect(Percentile.nearestRank(0.999, of: values) == 100)
        #expect(Percentile.nearestRank(0.0, of: values) == 1)
        #expect(Percentile.nearestRank(1.0, of: values) == 100)
        #expect(Percentile.nearestRank(0.99, of: [7.5]) == 7.5)
        #expect(Percentile.nearestRank(0.5, of: [Int]()) == nil)
    }
}

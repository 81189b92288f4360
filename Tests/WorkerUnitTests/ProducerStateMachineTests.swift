@testable import AdTelemetry
import AdTelemetryRecords
import AdWorkerRedis
import AdWorkerTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The producer's decisions without Redis: each error class, cut pipelines, the deadline, the
/// spool and shutdown, with time moved by hand.
@Suite("The producer's state machine")
struct ProducerStateMachineTests {
    typealias Machine = ProducerStateMachine<ManualClock, Int>
    static let streams = ["t:training", "t:inference"]

    static func machine(_ clock: ManualClock) -> Machine {
        Machine(
            configuration: .init(
                streams: streams, maximumBufferedRecords: 100, maximumPipelineLength: 10, maximumRetryDuration: .seconds(300),
                shutdownRetryDuration: .seconds(10)
            ),
            clock: clock
        )
    }

    static func origin(_ sequence: UInt64) -> RecordOrigin { RecordOrigin(instance: 9, sequence: sequence) }

    static func records(_ sequences: ClosedRange<UInt64>, route: Int = 1) -> [PendingRecord] {
        sequences.map { sequence in
            var command = RedisCommand.streamAdd(to: streams[route])
            command.writeField("request_id", Array("r-\(sequence)".utf8))
            return PendingRecord(command: command, route: route, origin: origin(sequence))
        }
    }

    static func id(_ milliseconds: UInt64, _ sequence: UInt64 = 0) -> StreamEntryID { StreamEntryID(milliseconds: milliseconds, sequence: sequence) }

    /// Takes the round a step says to send, or fails the test.
    static func round(_ step: Machine.FlushStep, sourceLocation: SourceLocation = #_sourceLocation) throws -> Machine.Round {
        guard case .round = step.next, let round = step.round else {
            Issue.record("expected a round, got \(step.next)", sourceLocation: sourceLocation)
            throw CancellationError()
        }
        return round
    }

    static func isIdle(_ step: Machine.FlushStep) -> Bool { if case .idle = step.next { true } else { false } }

    static func isLost(_ step: Machine.FlushStep) -> Bool { if case .lost = step.availability { true } else { false } }

    static func results(_ step: Machine.FlushStep) -> [[Result<StreamEntryID, TelemetryProducerError>]] { step.completed.compactMap(\.results) }

    static func sequences(_ round: Machine.Round) -> [UInt64] { round.sends.flatMap { $0.records.map(\.origin.sequence) } }

    @Test func aPipelineCutAfterRedisAppliedPartOfItIsLookedUpAndOnlyTheMissingRecordsAreSentAgain() throws {
        let clock = ManualClock()
        var machine = Self.machine(clock)
        #expect(machine.admit(4) == nil)
        machine.append(Self.records(1...4), waiter: 1)
        var round = try Self.round(machine.next(.wakeup))
        #expect(round.lookups().isEmpty)
        #expect(round.commandsToSend().routes == [1, 1, 1, 1])
        // Redis stored the first two and answered; the connection broke before the other replies.
        let reset = RedisError(.connectionLost, "Connection reset by peer")
        round.sent([.success(Self.id(5000, 0)), .success(Self.id(5000, 1)), .failure(reset), .failure(reset)], sentAtMilliseconds: 4990, cancelled: false)
        let held = machine.next(.sent(round))
        #expect(held.completed.isEmpty && held.retried == 2 && held.failed == 0)
        #expect(held.bufferedRecords == 4, "the step carries what is held (the send is not done), for the buffered gauge")
        #expect(Self.isLost(held))
        guard case .sleep(let pause) = held.next else { throw CancellationError() }
        #expect(pause >= .milliseconds(25) && pause <= .milliseconds(50), "the first pause, jittered in its upper half")

        var retry = try Self.round(machine.next(.slept))
        let lookups = retry.lookups()
        #expect(lookups.map(\.route) == [1])
        #expect(lookups[0].wanted == [Self.origin(3), Self.origin(4)])
        // From a second before the last id Redis confirmed on that stream: no TIME needed.
        #expect(!lookups[0].needsRedisClock)
        #expect(lookups[0].start(redisAhead: 0) == Self.id(4000))
        // Redis holds record 3 (it ran before the cut), not record 4.
        #expect(retry.found([Self.origin(3): Self.id(5000, 2)], route: 1) == (stored: 1, resent: 1))
        let again = retry.commandsToSend()
        #expect(again.commands.count == 1)
        retry.sent([.success(Self.id(5001))], sentAtMilliseconds: 5001, cancelled: false)
        let done = machine.next(.sent(retry))
        let ids = try #require(Self.results(done).first).map { try? $0.get() }
        #expect(ids == [Self.id(5000, 0), Self.id(5000, 1), Self.id(5000, 2), Self.id(5001)])
        #expect(done.completed.map(\.waiter) == [1])
        #expect(done.sent == 4 && done.failed == 0)
        #expect({ if case .restored = done.availability { true } else { false } }())
        #expect(Self.isIdle(done))
        #expect(machine.bufferedRecords == 0)
    }

    /// Where a failed XADD goes, by its error's class, as Redis's replies and hiredis's errors are classified.
    struct ErrorClass: Sendable, CustomTestStringConvertible {
        var name: String
        var error: RedisError
        /// Held back and sent again (else failed at once).
        var held: Bool
        /// Looked for in its stream before it is sent again.
        var lookedUp: Bool
        /// A `submit` record with a spool goes there at once (else it waits in memory).
        var spilled: Bool
        /// What the caller is told, when not `redisUnavailable` (transient) or `rejected`.
        var told: TelemetryProducerError.Code? = nil
        var testDescription: String { name }
    }

    static let errorClasses: [ErrorClass] = [
        .init(name: "connection refused", error: RedisError(.connectionFailed, "Connection refused"), held: true, lookedUp: false, spilled: true),
        .init(name: "connection reset", error: RedisError(.connectionLost, "Connection reset by peer"), held: true, lookedUp: true, spilled: true),
        .init(name: "reply timeout", error: RedisError(.timeout, "Resource temporarily unavailable"), held: true, lookedUp: true, spilled: true),
        .init(name: "LOADING", error: .fromReply("LOADING Redis is loading the dataset in memory"), held: true, lookedUp: false, spilled: true),
        .init(name: "OOM", error: .fromReply("OOM command not allowed when used memory > 'maxmemory'."), held: true, lookedUp: false, spilled: false),
        .init(name: "MOVED", error: .fromReply("MOVED 3999 127.0.0.1:30002"), held: true, lookedUp: false, spilled: true),
        .init(name: "ASK", error: .fromReply("ASK 3999 127.0.0.1:30002"), held: true, lookedUp: false, spilled: true),
        .init(name: "CLUSTERDOWN", error: .fromReply("CLUSTERDOWN The cluster is down"), held: true, lookedUp: false, spilled: true),
        .init(name: "NOPERM", error: .fromReply("NOPERM this user has no permissions to access one of the keys"), held: false, lookedUp: false, spilled: false),
        .init(name: "WRONGTYPE", error: .fromReply("WRONGTYPE Operation against a key holding the wrong kind of value"), held: false, lookedUp: false, spilled: false),
        .init(name: "TLS certificate rejected", error: RedisError(.tlsCertificateRejected, "not trusted"), held: false, lookedUp: false, spilled: true, told: .misconfigured),
        .init(name: "TLS required", error: RedisError(.tlsRequired, "speaks only TLS"), held: false, lookedUp: false, spilled: true, told: .misconfigured),
    ]

    @Test(arguments: errorClasses)
    func aSendWaitsOrFailsByItsErrorsClassAndFailsAtTheDeadlineWithItsCode(_ errorClass: ErrorClass) throws {
        let clock = ManualClock()
        var machine = Self.machine(clock)
        #expect(machine.admit(1) == nil)
        machine.append(Self.records(1...1), waiter: 7)
        var round = try Self.round(machine.next(.wakeup))
        _ = round.commandsToSend()
        round.sent([.failure(errorClass.error)], sentAtMilliseconds: 1000, cancelled: false)
        let step = machine.next(.sent(round))
        let code: TelemetryProducerError.Code = errorClass.told ?? (errorClass.error.isTransient ? .redisUnavailable : .rejected)
        guard errorClass.held else {
            #expect(step.failed == 1 && step.retried == 0)
            #expect(Self.results(step).first?.first?.failure?.code == code)
            return
        }
        #expect(step.retried == 1 && step.completed.isEmpty)
        // Held to the deadline, then given up with what the caller is told.
        clock.advance(by: .seconds(300))
        var last = try Self.round(machine.next(.slept))
        #expect(last.lookups().map(\.wanted) == (errorClass.lookedUp ? [[Self.origin(1)]] : []))
        if errorClass.lookedUp {
            last.lookupFailed(errorClass.error, route: 1, cancelled: false)
        } else {
            _ = last.commandsToSend()
            last.sent([.failure(errorClass.error)], sentAtMilliseconds: 2000, cancelled: false)
        }
        let givenUp = machine.next(.sent(last))
        #expect(givenUp.failed == 1 && givenUp.completed.map(\.waited) == [.seconds(300)])
        #expect(Self.results(givenUp).first?.first?.failure?.code == code)
        #expect(Self.isIdle(givenUp))
    }

    @Test(arguments: errorClasses)
    func aSubmittedRecordRedisDidNotTakeGoesToTheSpoolAtOnceOnlyWhenRedisMayTakeItLater(_ errorClass: ErrorClass) throws {
        let clock = ManualClock()
        var machine = Self.machine(clock)
        machine.spoolOpened(records: 0)
        #expect(machine.submit(Self.records(1...2)) == .queued)
        var round = try Self.round(machine.next(.wakeup))
        _ = round.commandsToSend()
        round.sent([.success(Self.id(9000)), .failure(errorClass.error)], sentAtMilliseconds: 8999, cancelled: false)
        let step = machine.next(.sent(round))
        #expect(step.spill.map(\.origin) == (errorClass.spilled ? [Self.origin(2)] : []))
        #expect(step.retried == (errorClass.held && !errorClass.spilled ? 1 : 0))
        if errorClass.spilled {
            // Kept with where to look for it, when Redis may have stored it.
            #expect(step.spill[0].lookFrom == (errorClass.lookedUp ? .entry(Self.id(8000)) : nil))
            #expect(step.spill[0].stream == "t:inference")
            #expect(step.sent == 1 && step.failed == 0 && machine.spooledRecords == 1)
        }
    }

    @Test func aRecordRedisRefusesIsHeldUntilTheRetryDeadlineAndNoLonger() throws {
        let clock = ManualClock()
        var machine = Self.machine(clock)
        #expect(machine.admit(1) == nil)
        machine.append(Self.records(1...1), waiter: 1)
        let refused = RedisError(.connectionFailed, "Connection refused")
        var round = try Self.round(machine.next(.wakeup))
        var pauses: [Duration] = []
        // Refused at 0 s, 120 s and 299 s: held each time, with growing pauses.
        for wait in [120, 179, 1] as [Int64] {
            _ = round.commandsToSend()
            round.sent([.failure(refused)], sentAtMilliseconds: 0, cancelled: false)
            let held = machine.next(.sent(round))
            #expect(held.completed.isEmpty && held.retried == 1)
            guard case .sleep(let pause) = held.next else { throw CancellationError() }
            pauses.append(pause)
            clock.advance(by: .seconds(wait))
            round = try Self.round(machine.next(.slept))
        }
        // Doubling from 50 ms, each drawn from the upper half of its ceiling.
        #expect(zip(pauses, [50, 100, 200] as [Int64]).allSatisfy { pause, ceiling in
            pause >= .milliseconds(ceiling / 2) && pause <= .milliseconds(ceiling)
        }, "\(pauses)")
        #expect(machine.bufferedRecords == 1)
        // At 300 s: given up.
        _ = round.commandsToSend()
        round.sent([.failure(refused)], sentAtMilliseconds: 0, cancelled: false)
        let givenUp = machine.next(.sent(round))
        #expect(givenUp.completed.map(\.waited) == [.seconds(300)])
        #expect(Self.results(givenUp).first?.first?.failure?.code == .redisUnavailable)
        #expect(givenUp.failed == 1 && machine.bufferedRecords == 0)
    }

    @Test func spooledRecordsComeBackFirstAndInOrderAcrossARestartAndThoseInFlightAreLookedUpFirst() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("adworker-machine-\(UInt64.random(in: 0 ... .max))").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let logger = Logger(label: "producer-machine-test")
        let spooled = Self.records(1...6).map { SpooledRecord(stream: Self.streams[$0.route], command: $0.command, origin: $0.origin, lookFrom: nil) }
        // The first run spooled six records and was sending the first four when it stopped.
        try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, logger: logger) { spool in
            #expect(await spool.append(spooled).appended == 6)
            #expect(await spool.takeBatch(maximum: 4, nowMilliseconds: 2_000_000).count == 4)
        }
        try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, logger: logger) { spool in
            let clock = ManualClock()
            var machine = Self.machine(clock)
            machine.spoolOpened(records: await spool.recordCount)
            // A submit while they wait goes behind them, to the spool.
            let later = Self.records(7...8)
            #expect(machine.submit(later) == .spill)
            let outcome = await spool.append(later.map { SpooledRecord(stream: Self.streams[$0.route], command: $0.command, origin: $0.origin, lookFrom: nil) })
            machine.submitSpilled(refused: outcome.refused, unwritable: false)
            guard case .loadFromSpool(let maximum) = machine.next(.wakeup).next else { throw CancellationError() }
            let batch = await spool.takeBatch(maximum: maximum, nowMilliseconds: 3_000_000)
            var round = try Self.round(machine.next(.loaded(batch, unreadable: 0)))
            // The earlier run's segment first (a batch never spans segments).
            #expect(Self.sequences(round) == Array(1...6))
            // The four in flight may have been stored by the first run: looked for, by Redis's clock.
            let lookups = round.lookups()
            #expect(lookups.map(\.wanted) == [Set((1...4).map(Self.origin))])
            #expect(lookups[0].needsRedisClock)
            #expect(lookups[0].start(redisAhead: 250) == Self.id(2_000_000 + 250 - 5000))
            #expect(round.found([Self.origin(1): Self.id(1_999_000), Self.origin(2): Self.id(1_999_001)], route: 1) == (stored: 2, resent: 2))
            #expect(round.commandsToSend().commands.count == 4)
            round.sent((0..<4).map { .success(Self.id(3_000_000 + UInt64($0))) }, sentAtMilliseconds: 3_000_000, cancelled: false)
            let settled = round.sends[0].records.map { try? $0.result?.get() }
            let expected: [StreamEntryID?] = [Self.id(1_999_000), Self.id(1_999_001)] + (0..<4).map { Optional(Self.id(3_000_000 + UInt64($0))) }
            #expect(settled == expected)
            let first = machine.next(.sent(round))
            #expect(first.spool == .commit(records: 6))
            #expect(first.sent == 6 && machine.spooledRecords == 2)
            await spool.commit(records: 6)
            // Then the submit that came while they waited.
            guard case .loadFromSpool(let room) = first.next else { throw CancellationError() }
            var second = try Self.round(machine.next(.loaded(await spool.takeBatch(maximum: room, nowMilliseconds: 3_000_100), unreadable: 0)))
            #expect(Self.sequences(second) == [7, 8])
            #expect(second.lookups().isEmpty)
            #expect(second.commandsToSend().commands.count == 2)
            second.sent([.success(Self.id(3_000_100)), .success(Self.id(3_000_101))], sentAtMilliseconds: 3_000_100, cancelled: false)
            let done = machine.next(.sent(second))
            #expect(done.spool == .commit(records: 2))
            #expect(machine.spooledRecords == 0 && machine.bufferedRecords == 0)
            await spool.commit(records: 2)
            #expect(await spool.recordCount == 0)
        }
    }

    @Test func atShutdownWithRedisAwayASpoolBatchStaysOnDiskAtOnceAndSendsFailAfterTheGrace() throws {
        let clock = ManualClock()
        var machine = Self.machine(clock)
        machine.spoolOpened(records: 2)
        guard case .loadFromSpool = machine.next(.wakeup).next else { throw CancellationError() }
        let onDisk = Self.records(1...2).map { SpooledRecord(stream: Self.streams[$0.route], command: $0.command, origin: $0.origin, lookFrom: nil) }
        var round = try Self.round(machine.next(.loaded(onDisk, unreadable: 0)))
        let refused = RedisError(.connectionFailed, "Connection refused")
        _ = round.commandsToSend()
        round.sent([.failure(refused), .failure(refused)], sentAtMilliseconds: 0, cancelled: false)
        #expect(machine.next(.sent(round)).retried == 2)
        // Redis is away: a send waits in memory, a submit goes to the spool.
        #expect(machine.admit(1) == nil)
        machine.append(Self.records(3...3), waiter: 3)
        #expect(machine.submit(Self.records(4...4)) == .spill)
        machine.submitSpilled(refused: 0, unwritable: false)

        clock.advance(by: .seconds(1))
        machine.close()
        #expect(machine.submit(Self.records(5...5)) == .refused(.shutDown))
        round = try Self.round(machine.next(.slept))
        #expect(Self.sequences(round) == [1, 2, 3])
        _ = round.commandsToSend()
        round.sent([.failure(refused), .failure(refused), .failure(refused)], sentAtMilliseconds: 0, cancelled: false)
        let stopping = machine.next(.sent(round))
        // The spool batch is on disk already: released at once, not read again in this flush.
        #expect(stopping.spool == .release)
        #expect(stopping.completed.isEmpty && stopping.retried == 1)
        #expect(machine.spooledRecords == 3)

        clock.advance(by: .seconds(10))
        var last = try Self.round(machine.next(.slept))
        #expect(Self.sequences(last) == [3])
        _ = last.commandsToSend()
        last.sent([.failure(refused)], sentAtMilliseconds: 0, cancelled: false)
        let givenUp = machine.next(.sent(last))
        #expect(givenUp.completed.map(\.waiter) == [3])
        #expect(Self.results(givenUp).first?.first?.failure?.code == .redisUnavailable)
        #expect(Self.isIdle(givenUp) && machine.bufferedRecords == 0)
    }

    @Test func whileRedisIsAwaySubmittedRecordsQueuedInMemoryMoveToTheSpool() throws {
        let clock = ManualClock()
        var machine = Self.machine(clock)
        machine.spoolOpened(records: 0)
        let refused = RedisError(.connectionFailed, "Connection refused")
        #expect(machine.admit(10) == nil)
        machine.append(Self.records(1...10), waiter: 1)
        var round = try Self.round(machine.next(.wakeup))
        // Queued while Redis still seemed to answer, behind a send that fills a pipeline.
        #expect(machine.submit(Self.records(11...12)) == .queued)
        _ = round.commandsToSend()
        round.sent(Array(repeating: .failure(refused), count: 10), sentAtMilliseconds: 0, cancelled: false)
        #expect(machine.next(.sent(round)).retried == 10)
        round = try Self.round(machine.next(.slept))
        // Not in this pipeline's turn, they go to disk now rather than wait in memory.
        #expect(Self.sequences(round) == Array(1...12))
        #expect(round.commandsToSend().commands.count == 10)
        round.sent(Array(repeating: .failure(refused), count: 10), sentAtMilliseconds: 0, cancelled: false)
        let step = machine.next(.sent(round))
        #expect(step.spill.map(\.origin.sequence) == [11, 12] && step.failed == 0)
        #expect(machine.spooledRecords == 2 && machine.bufferedRecords == 10)
    }
}

extension Result {
    fileprivate var failure: Failure? { if case .failure(let error) = self { error } else { nil } }
}

@testable import AdWorkerCore
import AdWorkerRedis
import Testing

@Suite struct ReadinessStateTests {
    typealias State = ReadinessState<ContinuousClock.Instant>
    let start = ContinuousClock.Instant.now
    func at(_ seconds: Int) -> ContinuousClock.Instant { start + .seconds(seconds) }

    @Test func probesAreReasonsUntilTheyAnswerAndAgainOnceTheyAreStale() {
        var state = State(started: start)
        let maximumAge: Duration = .seconds(5)
        #expect(state.notReadyReasons(probing: ["redis"], probeMaximumAge: maximumAge, now: at(0)) == ["redis not probed yet"])
        state.probe("redis", failure: "refused", at: at(1))
        #expect(state.notReadyReasons(probing: ["redis"], probeMaximumAge: maximumAge, now: at(1)) == ["redis unreachable: refused"])
        state.probe("redis", failure: nil, at: at(2))
        #expect(state.notReadyReasons(probing: ["redis"], probeMaximumAge: maximumAge, now: at(7)).isEmpty)
        #expect(state.notReadyReasons(probing: ["redis"], probeMaximumAge: maximumAge, now: at(8)) == ["redis not probed for 6.0 seconds"])
    }

    @Test func oneRefusalMetByManyConsumersIsOneReasonAndCircuitsNameTheirConsumer() {
        var state = State(started: start)
        state.problem("postgres sink 1 of s/a", "PostgreSQL refuses")
        state.problem("postgres sink 2 of s/a", "PostgreSQL refuses")
        let consumer = State.ConsumerKey(stream: "s", name: "a")
        let opened = state.circuit(.init(target: "postgres", role: "sink 1"), of: consumer, isOpen: true)
        #expect(opened)
        #expect(
            state.notReadyReasons(probing: [], probeMaximumAge: .seconds(5), now: at(0))
                == ["postgres (sink 1) circuit open on consumer s/a", "PostgreSQL refuses"]
        )
        let stillOpen = state.circuit(.init(target: "postgres", role: "sink 1"), of: consumer, isOpen: false)
        #expect(!stillOpen)
        state.problem("postgres sink 1 of s/a", nil)
        state.problem("postgres sink 2 of s/a", nil)
        #expect(state.notReadyReasons(probing: [], probeMaximumAge: .seconds(5), now: at(0)).isEmpty)
    }

    @Test func aCircuitGaugeStaysOpenWhileAnyConsumerOfTheStreamHasOneOpen() {
        var state = State(started: start)
        let first = State.ConsumerKey(stream: "s", name: "a"), second = State.ConsumerKey(stream: "s", name: "b")
        let other = State.ConsumerKey(stream: "t", name: "a")
        let reader = State.OpenCircuit(target: "redis", role: "reader")
        let answers = [
            state.circuit(reader, of: first, isOpen: true), state.circuit(reader, of: second, isOpen: true),
            state.circuit(reader, of: first, isOpen: false),
            state.circuit(reader, of: other, isOpen: false),
        ]
        // Closing a's leaves b's open; closing one on another stream leaves that stream with none.
        #expect(answers == [true, true, true, false])
        #expect(state.openTargets(of: "s") == ["redis"] && state.openTargets(of: "t").isEmpty)
    }

    @Test func consumersAliveCountOnlyTheStreamsConsumersNotStopped() {
        var state = State(started: start)
        #expect(state.consumer(.init(stream: "s", name: "a"), state: .running) == 1)
        #expect(state.consumer(.init(stream: "s", name: "b"), state: .running) == 2)
        #expect(state.consumer(.init(stream: "t", name: "a"), state: .running) == 1)
        #expect(state.consumer(.init(stream: "s", name: "a"), state: .stopped) == 1)
    }

    @Test func aPermanentFailureIsAProblemAndItsKindStaysRaisedWhileAnotherOfTheTargetHasIt() throws {
        var state = State(started: start)
        let full = try #require(PermanentFailure(RedisError(.outOfMemory, "OOM")))
        let denied = try #require(PermanentFailure(RedisError(.noPermission, "NOPERM")))
        #expect(state.permanentFailure("a", target: "redis", full).map { "\($0.kind.rawValue)=\($0.raised)" } == ["outOfMemory=true"])
        _ = state.permanentFailure("b", target: "redis", full)
        #expect(state.problems["a"] == full.fix)
        #expect(state.permanentFailure("a", target: "redis", nil).map { "\($0.kind.rawValue)=\($0.raised)" } == ["outOfMemory=true"], "b has it")
        let changed = state.permanentFailure("b", target: "redis", denied).map { "\($0.kind.rawValue)=\($0.raised)" }.sorted()
        #expect(changed == ["noPermission=true", "outOfMemory=false"])
        #expect(state.problems["a"] == nil)
    }

    @Test func aStreamStallsOnlyWhileEntriesWaitWithoutProgressAndWithoutAnExplanation() {
        var state = State(started: start)
        let timeout: Duration = .seconds(120)
        #expect(state.waiting("s", entries: 0, at: at(1)) == .seconds(1), "since the start: it never progressed")
        #expect(state.stalledStreams(after: timeout, now: at(200)).isEmpty, "nothing waits")
        _ = state.waiting("s", entries: 50, at: at(2))
        #expect(state.stalledStreams(after: timeout, now: at(120)).isEmpty, "within the timeout")
        #expect(state.stalledStreams(after: timeout, now: at(121)) == ["s: no batch committed for 121 s while 50 entries wait, and no circuit is open"])

        let consumer = State.ConsumerKey(stream: "s", name: "a")
        _ = state.circuit(.init(target: "postgres", role: "sink 1"), of: consumer, isOpen: true)
        #expect(state.stalledStreams(after: timeout, now: at(200)).isEmpty, "an open circuit explains it")
        _ = state.circuit(.init(target: "postgres", role: "sink 1"), of: consumer, isOpen: false)
        state.problem("group s", "cannot create consumer group")
        #expect(state.stalledStreams(after: timeout, now: at(200)).isEmpty, "a raised problem explains it")
        state.problem("group s", nil)

        state.progressed("s", at: at(150))
        #expect(state.waiting("s", entries: 50, at: at(160)) == .seconds(10))
        #expect(state.stalledStreams(after: timeout, now: at(270)).isEmpty, "progress resets the clock")
        #expect(state.stalledStreams(after: timeout, now: at(271)).count == 1)
    }
}

@Suite struct ReadinessProbeWordingTests {
    @Test func aFailedPingSaysWhetherTheServerRefusedItOrTheConnectionFailed() {
        #expect(ReadinessProbe.pingFailure(RedisError.fromReply("LOADING Redis is loading the dataset in memory")) == "refused PING: serverBusy")
        #expect(ReadinessProbe.pingFailure(RedisError(.unexpectedReply, "PING")) == "unexpected reply to PING")
        let lost = RedisError(.connectionLost, "Connection reset by peer")
        #expect(ReadinessProbe.pingFailure(lost) == "\(lost)")
    }
}

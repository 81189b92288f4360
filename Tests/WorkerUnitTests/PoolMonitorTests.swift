@testable import AdWorkerCore
import Testing

@Suite("Pool monitor")
struct PoolMonitorTests {
    typealias Monitor = PoolMonitor<ContinuousClock.Instant>
    let start = ContinuousClock.Instant.now

    func at(_ milliseconds: Int) -> ContinuousClock.Instant { start + .milliseconds(milliseconds) }

    /// Two processes started at 0 that have both answered once, at 100 ms.
    func running() -> Monitor {
        var monitor = Monitor(count: 2, configuration: .init(shutdownGrace: .seconds(32)))
        monitor.started(0, pid: 100, at: at(0))
        monitor.started(1, pid: 101, at: at(0))
        monitor.answered(0, stuckReasons: [])
        monitor.answered(1, stuckReasons: [])
        return monitor
    }

    @Test func aProcessWhoseProbesGoUnansweredForASecondIsNamedAsNotAnswering() {
        var monitor = running()
        // Probes every second, each given up after 500 ms.
        monitor.unanswered(0, asked: at(1000), givenUp: at(1500))
        #expect(monitor.unhealthyReasons().isEmpty, "one unanswered probe spans only 500 ms")
        monitor.unanswered(0, asked: at(2000), givenUp: at(2500))
        #expect(monitor.unhealthyReasons() == ["worker process 0 (pid 100) is not answering: no answer to /healthz for 1.5 s"])
        monitor.answered(0, stuckReasons: [])
        #expect(monitor.unhealthyReasons().isEmpty, "an answer ends the silence")
    }

    @Test func oneSlowAnswerBetweenQuickOnesNeverCounts() {
        var monitor = running()
        for second in 1...10 {
            monitor.unanswered(0, asked: at(second * 1000), givenUp: at(second * 1000 + 500))
            #expect(monitor.unhealthyReasons().isEmpty)
            monitor.answered(0, stuckReasons: [])
        }
    }

    @Test func aProcessThatAnswersWithItsOwnReasonsIsStuckWithThoseReasons() {
        var monitor = running()
        monitor.answered(1, stuckReasons: ["inference: no batch committed for 130 s"])
        #expect(monitor.unhealthyReasons() == ["worker process 1: inference: no batch committed for 130 s"])
    }

    @Test func aStartingProcessIsNotJudgedBeforeItsStartupGraceUnlessItHasAnswered() {
        var monitor = Monitor(count: 1, configuration: .init(startupGrace: .seconds(15), shutdownGrace: .seconds(32)))
        monitor.started(0, pid: 100, at: at(0))
        // Its port is not bound yet: every probe is refused at once.
        for second in 0..<15 { monitor.unanswered(0, asked: at(second * 1000), givenUp: at(second * 1000 + 1)) }
        #expect(monitor.unhealthyReasons().isEmpty)
        monitor.unanswered(0, asked: at(15000), givenUp: at(15001))
        #expect(monitor.unhealthyReasons() == ["worker process 0 (pid 100) is not answering: no answer to /healthz for 15.0 s"])
    }

    @Test func aRestartedProcessStartsAfreshAndAProbeOfItsPredecessorIsIgnored() {
        var monitor = running()
        monitor.unanswered(0, asked: at(1000), givenUp: at(1500))
        monitor.unanswered(0, asked: at(2000), givenUp: at(2500))
        #expect(!monitor.unhealthyReasons().isEmpty)
        monitor.exited(0)
        #expect(monitor.unhealthyReasons().isEmpty, "a process that is down is the supervisor's to restart")
        monitor.started(0, pid: 200, at: at(3000))
        monitor.unanswered(0, asked: at(2900), givenUp: at(20000))
        #expect(monitor.unhealthyReasons().isEmpty, "that probe was sent to the process before")
    }

    @Test func pastTheShutdownGraceEveryProcessStillRunningIsKilledOnce() {
        var monitor = running()
        #expect(monitor.killDeadline == nil && !monitor.isShuttingDown)
        #expect(monitor.overdue(at: at(100_000)).isEmpty, "nothing is killed before shutdown")
        monitor.shutdownBegan(at: at(10_000))
        monitor.shutdownBegan(at: at(11_000))
        #expect(monitor.isShuttingDown && monitor.killDeadline == at(42_000), "the first SIGTERM counts")
        #expect(monitor.overdue(at: at(41_999)).isEmpty)
        monitor.exited(1)
        let overdue = monitor.overdue(at: at(42_000))
        #expect(overdue.map(\.index) == [0] && overdue.map(\.pid) == [100])
        #expect(monitor.overdue(at: at(43_000)).isEmpty, "each process is killed once")
    }
}

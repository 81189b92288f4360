import AdWorkerCore
import Testing

/// What each process of `adworker run --processes N` is started with.
@Suite struct PoolChildLaunchTests {
    @Test func theOptionsTheSupervisorSetsPerChildAreDroppedInBothSpellings() {
        let given = ["--env-file", ".env", "--processes", "4", "--http=0.0.0.0:9400", "--streams", "training", "--consumer-name", "w", "--drain"]
        #expect(PoolChildLaunch.sharedArguments(from: given) == ["--env-file", ".env", "--streams", "training", "--drain"])
        #expect(PoolChildLaunch.sharedArguments(from: ["--processes=2", "--consumer-name=w", "--http", "off"]) == [])
    }

    @Test func eachChildRunsOneProcessUnderItsOwnNameOnThePortAfterTheSupervisors() {
        let shared = ["--env-file", ".env", "--drain"]
        #expect(PoolChildLaunch.arguments(shared: shared, child: 2, consumerName: "worker", basePort: 9400) == [
            "run", "--env-file", ".env", "--drain", "--processes", "1", "--consumer-name", "worker-p2", "--http", "127.0.0.1:9403",
        ])
        #expect(PoolChildLaunch.arguments(shared: [], child: 0, consumerName: "worker", basePort: nil) == [
            "run", "--processes", "1", "--consumer-name", "worker-p0", "--http", "off",
        ])
    }

    @Test func aChildGetsTheSupervisorsEnvironmentAndPidButNotSystemdsNotifySocket() {
        let supervisor = [
            "REDIS_HOST": "redis", "NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41",
            PoolChildLaunch.supervisorVariable: "7",
        ]
        #expect(PoolChildLaunch.environment(from: supervisor, supervisorPID: 41) == ["REDIS_HOST": "redis", "ADWORKER_SUPERVISOR_PID": "41"])
    }
}

public import AdWorkerCore

/// What `/readyz` answers: no consumer has a circuit open, nothing the worker depends on is
/// failing (group creation, say), and the ``ReadinessProbe`` found both servers answering as they
/// should within the last few seconds. Read from memory: asking costs the servers nothing.
public enum Readiness {
    public static func reasons(status: WorkerStatus) -> [String] {
        status.notReadyReasons(probing: ReadinessProbe.targets, probeMaximumAge: ReadinessProbe.maximumAge)
    }
}

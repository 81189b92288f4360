import Synchronization

/// A consumer's ``ConsumerStateMachine`` behind one lock, where its reader and its sinks meet:
/// each event takes the lock once, and what the machine decides runs outside it (postgres-nio's
/// `ConnectionPool` with its `PoolStateMachine`). The lock is taken once per read and per batch,
/// twice per claim or re-read (to filter the reply, then to queue it with its delivery counts),
/// never per entry.
final class SharedConsumerMachine: Sendable {
    typealias Machine = ConsumerStateMachine<ContinuousClock.Instant>

    private struct State {
        var machine: Machine
        /// The reader, suspended in ``waitForSink()``.
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state: Mutex<State>

    init(_ machine: Machine) {
        state = Mutex(State(machine: machine))
    }

    /// The reader's events and decisions; `body` runs under the lock, so it must not block.
    func withMachine<Result: Sendable>(_ body: (inout Machine) -> Result) -> Result {
        state.withLock { body(&$0.machine) }
    }

    /// Returns once a sink has reported since the machine said ``ConsumerStateMachine/Action/waitForSink``
    /// (at once if one did in between), or when the task is cancelled.
    func waitForSink() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let waits = state.withLock { state in
                    // A sink's report between the decision and here cleared the wait.
                    guard state.machine.readerWaits && !Task.isCancelled else { return false }
                    state.waiter = continuation
                    return true
                }
                if !waits { continuation.resume() }
            }
        } onCancel: {
            state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }?.resume()
        }
    }

    /// A sink committed `batch` and acknowledged its entries.
    func committed(_ batch: EntryBatch) {
        report { $0.committed(batch) }
    }

    /// A sink gave up on `batch`: it threw, and ends.
    func failed(_ batch: EntryBatch) {
        report { $0.failed(batch) }
    }

    /// A sink's circuit opened or closed (from its ``CircuitBreaker``'s state changes).
    func circuit(isOpen: Bool) {
        state.withLock { $0.machine.circuit(isOpen: isOpen) }
    }

    private func report(_ event: (inout Machine) -> Machine.SinkEventAction) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            switch event(&state.machine) {
            case .none:
                return nil
            case .resumeReader:
                defer { state.waiter = nil }
                return state.waiter
            }
        }
        waiter?.resume()
    }
}

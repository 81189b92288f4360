/// A worker process of `adworker run --processes N`, as the pool's `/status` and `/readyz` show
/// it (the raw value is the text they show).
public enum WorkerProcessState: String, Sendable, Codable {
    case starting
    case running
    /// Crashed; started again after a backoff.
    case restarting
    /// Ended by the pool's shutdown.
    case stopped
    /// Exited 0 by itself (`--drain`).
    case finished
    /// Crash-looping: the supervisor gave up on it and stops the pool.
    case dead
    /// Running, but its own `/status` did not answer the pool's.
    case unreachable
}

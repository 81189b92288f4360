/// A consumer's state as `/status` shows it (`consumers[].state`).
public enum ConsumerState: String, Sendable, Codable {
    /// Launched: reading, or retrying while a circuit is open.
    case running
    /// Returned (drained, shut down, or failed).
    case stopped
}

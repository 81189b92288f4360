/// A connection actor that lives for one scope: connected (now, or by its first command) before
/// the scope's body runs, closed (and its thread stopped) however the body ends. Redis and
/// PostgreSQL connections share this shape, so the scope is written once.
package protocol ScopedConnection: Actor {
    func connect() async throws
    func close() async
}

extension ScopedConnection {
    /// Runs `body` with this connection and closes it afterwards, thrown or not.
    /// - Parameter connectImmediately: Connect before `body` runs and throw if that fails; with
    ///   `false` the first command connects, so a long-running caller can retry with its own backoff.
    package nonisolated func withinScope<Result>(connectImmediately: Bool, _ body: (Self) async throws -> sending Result) async throws -> sending Result {
        do {
            if connectImmediately {
                try await connect()
            }
            let result = try await body(self)
            await close()
            return result
        } catch {
            await close()
            throw error
        }
    }
}

public import ServiceLifecycle

/// Runs `service` (a producer, an HTTP endpoint) in a service group of its own while `body` runs,
/// then shuts it down gracefully and waits for it: a producer has flushed what it held by then.
/// - Parameters:
///   - service: What to run; it is stopped when `body` returns or throws.
///   - body: The test's work against the running service.
public func withRunningService<Result: Sendable>(_ service: some Service, _ body: () async throws -> Result) async throws -> Result {
    let group = ServiceGroup(services: [service], logger: TestServers.logger)
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        defer { tasks.cancelAll() }
        let result = try await body()
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
        return result
    }
}

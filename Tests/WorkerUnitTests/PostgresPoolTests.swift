@testable import AdWorkerCore
import AdWorkerPostgres
import AdWorkerTestSupport
import Synchronization
import Testing

/// The pool's lending, without a server: its connections connect on first use, and these tests
/// never use them, only borrow and give them back.
@Suite(.timeLimit(.minutes(1))) struct PostgresPoolTests {
    static let nowhere = PostgresConfiguration(host: "127.0.0.1", port: 1, database: "none", user: "none", password: nil)

    /// Who holds which connection: a connection lent twice at once, or more borrowers than
    /// connections, would show here.
    final class Lending: Sendable {
        private let state = Mutex((holders: Set<ObjectIdentifier>(), most: 0, seen: Set<ObjectIdentifier>(), doubleLent: false))

        func took(_ connection: PostgresConnection) {
            state.withLock { state in
                state.doubleLent = state.doubleLent || !state.holders.insert(ObjectIdentifier(connection)).inserted
                state.seen.insert(ObjectIdentifier(connection))
                state.most = max(state.most, state.holders.count)
            }
        }

        func gaveBack(_ connection: PostgresConnection) {
            _ = state.withLock { $0.holders.remove(ObjectIdentifier(connection)) }
        }

        var summary: (most: Int, seen: Int, doubleLent: Bool) { state.withLock { ($0.most, $0.seen.count, $0.doubleLent) } }
    }

    @Test func manyBorrowersShareTheConnectionsOneAtATimeEach() async throws {
        let lending = Lending()
        let borrowed = try await PostgresPool.withPool(size: 3, configuration: Self.nowhere, logger: TestServers.logger) { pool in
            try await withThrowingTaskGroup(of: Int.self) { borrowers in
                for _ in 0..<40 {
                    borrowers.addTask {
                        try await pool.withConnection { connection in
                            lending.took(connection)
                            await Task.yield()
                            lending.gaveBack(connection)
                            return 1
                        }
                    }
                }
                return try await borrowers.reduce(0, +)
            }
        }
        #expect(borrowed == 40)
        let summary = lending.summary
        #expect(!summary.doubleLent)
        #expect(summary.most <= 3)
        #expect(summary.seen == 3)
    }

    @Test func aConnectionComesBackWhenTheBorrowerThrows() async throws {
        struct Failed: Error {}
        try await PostgresPool.withPool(size: 1, configuration: Self.nowhere, logger: TestServers.logger) { pool in
            await #expect(throws: Failed.self) { try await pool.withConnection { _ in throw Failed() } }
            // With the only connection lost, this would wait for ever.
            try await pool.withConnection { _ in }
        }
    }

    @Test func aCancelledWaiterGetsCancellationAndTakesNoConnectionWithIt() async throws {
        try await PostgresPool.withPool(size: 1, configuration: Self.nowhere, logger: TestServers.logger) { pool in
            let (released, release) = AsyncStream.makeStream(of: Void.self)
            let (held, hold) = AsyncStream.makeStream(of: Void.self)
            let holder = Task {
                try await pool.withConnection { _ in
                    hold.yield()
                    for await _ in released { break }
                }
            }
            for await _ in held { break }
            let waiter = Task { try await pool.withConnection { _ in } }
            waiter.cancel()
            await #expect(throws: CancellationError.self) { try await waiter.value }
            release.yield()
            try await holder.value
            // The connection went back to the pool, not to the cancelled waiter.
            try await pool.withConnection { _ in }
        }
    }
}

import AdWorkerConnectionThread
import Foundation
import Testing

@Suite("Connection threads")
struct ThreadExecutorTests {
    /// Linux ignores a thread name over 15 bytes altogether; the executor's thread must still
    /// show under its (cut) name in `top -H` and `perf`, not under its creator's.
    @Test func aThreadShowsItsNameCutToWhatLinuxKeeps() async throws {
        let executor = ThreadExecutor(name: "redis 6379 127.0.0.1")
        defer { executor.shutdown() }
        let name = await Task(executorPreference: executor) {
            try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)
        }.value
        #expect(name == "redis 6379 127.\n")
    }
}

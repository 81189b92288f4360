public import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The repository's scripts, run from tests.
public enum Scripts {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Runs `scripts/<name>` with `arguments` and returns what it printed on standard output.
    /// Spawned and reaped with posix_spawn and waitpid, polled from the task: Foundation's
    /// `Process` missed a child's exit here now and then (`waitUntilExit` and `isRunning` both
    /// waited for a script that had long ended, and the test with them).
    @discardableResult
    public static func run(_ name: String, _ arguments: [String] = [], environment: [String: String] = [:]) async throws -> String {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("adworker-script-\(UUID().uuidString).out").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let argv = ["/bin/bash", repository.appendingPathComponent("scripts/\(name)").path] + arguments
        let environ = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { "\($0.key)=\($0.value)" }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var pid: pid_t = 0
        let spawned = withCStrings(argv) { argvPointers in
            withCStrings(environ) { environPointers in
                posix_spawn(&pid, argv[0], &actions, nil, argvPointers, environPointers)
            }
        }
        guard spawned == 0 else { throw TestSupportError("scripts/\(name): posix_spawn failed with \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 { try await Task.sleep(for: .milliseconds(20)) }
        // Exited normally with 0: WIFEXITED and WEXITSTATUS, which Swift does not import.
        guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else { throw TestSupportError("scripts/\(name) ended with wait status \(status)") }
        return try String(contentsOfFile: output, encoding: .utf8)
    }

    private static func withCStrings<Result>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> Result) -> Result {
        var pointers = strings.map { strdup($0) } + [nil]
        defer { pointers.forEach { free($0) } }
        return body(&pointers)
    }
}

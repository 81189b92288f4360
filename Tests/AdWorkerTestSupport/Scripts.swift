public import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The repository's scripts, run from tests.
public enum Scripts {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Runs `scripts/<name>` with `arguments` and returns what it printed on standard output.
    @discardableResult
    public static func run(_ name: String, _ arguments: [String] = [], environment: [String: String] = [:]) async throws -> String {
        let (status, output) = try await launch("/bin/bash", [repository.appendingPathComponent("scripts/\(name)").path] + arguments, environment: environment)
        guard status == 0 else { throw TestSupportError("scripts/\(name) ended with status \(status)") }
        return output
    }

    /// The `adworker` binary the tests were built with (`swift build --build-tests` builds it
    /// beside the test bundle), run with `arguments`. - Returns: its exit status and what it
    /// printed on standard output and error.
    public static func adworker(_ arguments: [String], environment: [String: String] = [:]) async throws -> (status: Int32, output: String) {
        let testBundle = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let binary = URL(fileURLWithPath: testBundle).deletingLastPathComponent().appendingPathComponent("adworker").path
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw TestSupportError("no adworker binary at \(binary)") }
        return try await launch(binary, arguments, environment: environment, standardError: true)
    }

    /// Spawned and reaped with posix_spawn and waitpid, polled from the task: Foundation's
    /// `Process` missed a child's exit here now and then (`waitUntilExit` and `isRunning` both
    /// waited for a script that had long ended, and the test with them).
    /// - Returns: the exit status (-1 when a signal ended it) and standard output (and error when asked).
    static func launch(
        _ executable: String, _ arguments: [String], environment: [String: String], standardError: Bool = false
    ) async throws -> (status: Int32, output: String) {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("adworker-script-\(UUID().uuidString).out").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let argv = [executable] + arguments
        let environ = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { "\($0.key)=\($0.value)" }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        if standardError {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        } else {
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        var pid: pid_t = 0
        let spawned = withCStrings(argv) { argvPointers in
            withCStrings(environ) { environPointers in
                posix_spawn(&pid, argv[0], &actions, nil, argvPointers, environPointers)
            }
        }
        guard spawned == 0 else { throw TestSupportError("\(executable): posix_spawn failed with \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 { try await Task.sleep(for: .milliseconds(20)) }
        // WIFEXITED and WEXITSTATUS, which Swift does not import.
        let exitStatus = status & 0x7f == 0 ? (status >> 8) & 0xff : -1
        return (exitStatus, try String(contentsOfFile: output, encoding: .utf8))
    }

    private static func withCStrings<Result>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> Result) -> Result {
        var pointers = strings.map { strdup($0) } + [nil]
        defer { pointers.forEach { free($0) } }
        return body(&pointers)
    }
}

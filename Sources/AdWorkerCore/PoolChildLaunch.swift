/// How `adworker run --processes N` starts each worker process: the `run` arguments the
/// supervisor was given, less the options it sets per child, then those options; and its own
/// environment, less systemd's notify variables, plus its pid. Pure, so tests check what a child
/// gets without starting one.
public enum PoolChildLaunch {
    /// Set in each child's environment to the supervisor's pid: the child asks to be terminated
    /// when the supervisor dies, so a killed supervisor leaves no workers behind.
    public static let supervisorVariable = "ADWORKER_SUPERVISOR_PID"

    /// The options the supervisor sets for each child itself.
    static let perChildOptions: Set = ["--processes", "--http", "--consumer-name"]

    /// The `run` arguments without the options the supervisor sets per child (as `--name value`
    /// or `--name=value`).
    public static func sharedArguments(from arguments: [String]) -> [String] {
        var result: [String] = []
        var skipNext = false
        for argument in arguments {
            if skipNext { skipNext = false; continue }
            if perChildOptions.contains(argument) { skipNext = true; continue }
            if perChildOptions.contains(where: { argument.hasPrefix($0 + "=") }) { continue }
            result.append(argument)
        }
        return result
    }

    /// Child `index`'s arguments: one process, consumer names `<consumerName>-p<index>-<slot>`,
    /// and its endpoint on 127.0.0.1:basePort+1+index (none without a base port).
    public static func arguments(shared: [String], child index: Int, consumerName: String, basePort: Int?) -> [String] {
        ["run"] + shared + ["--processes", "1", "--consumer-name", "\(consumerName)-p\(index)"]
            + ["--http", basePort.map { "127.0.0.1:\($0 + 1 + index)" } ?? "off"]
    }

    /// A child's environment: the supervisor's, with its pid, and without systemd's notify
    /// variables (the supervisor speaks to systemd for the pool; a child's READY or WATCHDOG would be a lie).
    public static func environment(from supervisor: [String: String], supervisorPID: Int32) -> [String: String] {
        var environment = supervisor
        environment[supervisorVariable] = String(supervisorPID)
        for variable in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] { environment[variable] = nil }
        return environment
    }
}

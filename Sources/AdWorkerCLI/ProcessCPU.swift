import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// CPU time of the processes a bench run keeps busy, read from /proc: this process (producer,
/// load generator and worker), every `redis-server` and every `postgres` on this machine, and
/// the machine as a whole. Two snapshots around a run give each one's CPU per row, which names
/// the resource a latency or throughput figure is bound by.
struct ProcessCPU {
    /// Clock ticks spent (user + system, with reaped children: PostgreSQL backends that exited,
    /// Redis's AOF-rewrite forks), and the machine's busy and total ticks.
    struct Snapshot {
        var bench: Int
        var redis: Int
        var postgres: Int
        var machineBusy: Int
        var machineTotal: Int
    }

    /// CPU between two snapshots, per row and as a share of the machine.
    struct PerRow: Encodable {
        var benchMicroseconds: Double
        var redisMicroseconds: Double
        var postgresMicroseconds: Double
        /// Busy share of all cores over the run (0-1), everything on the machine included.
        var machineBusy: Double
        var cores: Int
    }

    static func snapshot() -> Snapshot {
        var redis = 0
        var postgres = 0
        let processes = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for pid in processes where pid.first?.isNumber == true {
            guard let (command, ticks) = Self.ticks(of: "/proc/\(pid)/stat") else { continue }
            if command == "redis-server" { redis += ticks }
            if command == "postgres" { postgres += ticks }
        }
        let (busy, total) = Self.machineTicks()
        return Snapshot(bench: Self.ticks(of: "/proc/self/stat")?.ticks ?? 0, redis: redis, postgres: postgres, machineBusy: busy, machineTotal: total)
    }

    static func perRow(from start: Snapshot, to end: Snapshot, rows: Int) -> PerRow {
        let microsecondsPerTick = 1_000_000 / Double(sysconf(Int32(_SC_CLK_TCK)))
        func perRow(_ ticks: Int) -> Double { rows > 0 ? Double(max(0, ticks)) * microsecondsPerTick / Double(rows) : 0 }
        let total = end.machineTotal - start.machineTotal
        return PerRow(
            benchMicroseconds: perRow(end.bench - start.bench), redisMicroseconds: perRow(end.redis - start.redis),
            postgresMicroseconds: perRow(end.postgres - start.postgres),
            machineBusy: total > 0 ? Double(end.machineBusy - start.machineBusy) / Double(total) : 0,
            cores: ProcessInfo.processInfo.activeProcessorCount
        )
    }

    /// The command name and utime + stime + cutime + cstime of a /proc/<pid>/stat. The name is
    /// in parentheses and may hold spaces, so the fields are counted from its closing one.
    private static func ticks(of path: String) -> (command: String, ticks: Int)? {
        guard let stat = try? String(contentsOfFile: path, encoding: .utf8),
            let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
        else { return nil }
        let command = String(stat[stat.index(after: open)..<close])
        // After the name: state (field 3), ..., utime (14), stime (15), cutime (16), cstime (17).
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 14 else { return nil }
        let ticks = fields[11...14].compactMap { Int($0) }.reduce(0, +)
        return (command, ticks)
    }

    /// Busy and total ticks of all cores, from the first line of /proc/stat (idle and iowait are
    /// not busy).
    private static func machineTicks() -> (busy: Int, total: Int) {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = stat.split(separator: "\n").first, line.hasPrefix("cpu ")
        else { return (0, 0) }
        let values = line.split(separator: " ").dropFirst().compactMap { Int($0) }
        guard values.count >= 5 else { return (0, 0) }
        // user nice system idle iowait irq softirq steal (guest time is inside user already).
        let counted = Array(values.prefix(8))
        let total = counted.reduce(0, +)
        return (total - counted[3] - counted[4], total)
    }
}

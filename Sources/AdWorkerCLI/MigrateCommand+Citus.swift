import AdWorkerPostgres
import ArgumentParser
import Logging

extension MigrateCommand {
    /// What Citus did, and whether the tables are distributed (then TimescaleDB is not used).
    struct CitusResult {
        var message: String?
        var distributed: Bool
    }

    /// Citus after the versioned migrations, before TimescaleDB, on every run (``CitusSetup``):
    /// creates the extension when the server preloads it, converts the tables that are not
    /// distributed yet (rows kept), then runs the partition upkeep and schedules it with pg_cron
    /// where the database has that.
    func setUpCitus(_ connection: PostgresConnection, hypertables: Set<String>, logger: Logger) async throws -> CitusResult {
        var setup = CitusSetup.decide(try await citusFacts(connection, hypertables: hypertables), tables: Self.tables)
        if case .createExtension = setup {
            do {
                try await connection.execute("CREATE EXTENSION IF NOT EXISTS citus")
            } catch {
                guard error.sqlState == "42501" else { throw error }
                return CitusResult(
                    message: "Citus: preloaded, but this role may not create the extension, so tables stay on this node: run CREATE EXTENSION citus as a superuser in this database, then adworker migrate again",
                    distributed: false
                )
            }
            setup = CitusSetup.decide(try await citusFacts(connection, hypertables: hypertables), tables: Self.tables)
        }
        switch setup {
        case .notInstalled: return CitusResult(message: nil, distributed: false)
        case .stayLocal(let message):
            let ignored = compressAfterDays > 0 || retainDays > 0 ? "; compression and retention flags apply to hypertables only" : ""
            return CitusResult(message: message + ignored, distributed: false)
        case .createExtension: return CitusResult(message: "Citus: the extension could not be created", distributed: false)
        case .distribute(let tables):
            return CitusResult(message: try await distribute(tables, connection: connection, logger: logger), distributed: true)
        }
    }

    private func distribute(_ tables: [String], connection: PostgresConnection, logger: Logger) async throws -> String {
        var converted: [String] = []
        for table in tables {
            let rows = try await connection.query("SELECT count(*) FROM \(table)").first?.first.flatMap { $0 } ?? "0"
            logger.notice("converting to a distributed table", metadata: ["table": "\(table)", "rows": "\(rows)"])
            try await connection.execute(CitusSetup.conversion(of: table))
            converted.append("\(table) (\(rows) rows kept)")
        }
        try await connection.execute(CitusSetup.upkeepProcedure)
        // Citus's columnar access method is an extension of its own since Citus 11.1.
        if compressAfterDays > 0 { try await connection.execute("CREATE EXTENSION IF NOT EXISTS citus_columnar") }
        try await connection.execute("CALL adworker_partition_upkeep(\(retainDays), \(compressAfterDays))", callCommitting: true)
        let nodes = try await connection.query(
            CitusSetup.workerNodesQuery
        ).first?.first.flatMap { $0 } ?? "?"
        let through = try await connection.query(
            "SELECT max(to_value) FROM time_partitions WHERE parent_table = 'inference_results'::regclass"
        ).first?.first.flatMap { $0 } ?? "?"
        var done = [
            "distributed on \(CitusSetup.distributionColumn) over \(nodes) worker nodes, co-located",
            "daily partitions through \(through)",
        ]
        if !converted.isEmpty { done.insert("converted " + converted.joined(separator: ", "), at: 0) }
        if compressAfterDays > 0 { done.append("columnar after \(compressAfterDays) days") }
        if retainDays > 0 { done.append("retention \(retainDays) days") }
        done.append(try await scheduleUpkeep(connection))
        return "Citus: \(Self.tables.count) distributed tables, " + done.joined(separator: ", ")
    }

    /// pg_cron runs the upkeep hourly where this database has it; otherwise the partitions made
    /// now last ``CitusSetup/partitionsAhead`` days, after which rows go to the default partition
    /// until the next `migrate` moves them.
    private func scheduleUpkeep(_ connection: PostgresConnection) async throws -> String {
        let hasCron = try await connection.query("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')").first?.first == "t"
        guard hasCron else {
            return "upkeep: run adworker migrate at least every \(CitusSetup.partitionsAhead) days with the same flags (or CREATE EXTENSION pg_cron in this database, and migrate schedules it hourly)"
        }
        _ = try await connection.query(
            "SELECT cron.schedule('adworker-partition-upkeep', '17 * * * *', $1)",
            ["CALL adworker_partition_upkeep(\(retainDays), \(compressAfterDays))"]
        )
        return "upkeep scheduled hourly with pg_cron"
    }

    private func citusFacts(_ connection: PostgresConnection, hypertables: Set<String>) async throws -> CitusSetup.Facts {
        let (available, installed, preloaded) = try await Self.extensionPresence("citus", on: connection)
        guard installed && preloaded else {
            return CitusSetup.Facts(
                available: available, preloaded: preloaded, installed: installed, workerNodes: 0, distributed: [], hypertables: hypertables
            )
        }
        let workers = try await connection.query(
            CitusSetup.workerNodesQuery
        ).first?.first.flatMap { $0 }.flatMap { Int($0) } ?? 0
        let distributed = try await connection.query(
            """
            SELECT relname FROM pg_dist_partition JOIN pg_class ON pg_class.oid = logicalrelid
             WHERE partmethod = 'h' AND relnamespace = current_schema()::regnamespace
            """
        ).compactMap { $0.first ?? nil }
        return CitusSetup.Facts(
            available: true, preloaded: true, installed: true, workerNodes: workers,
            distributed: Set(distributed).intersection(Self.tables), hypertables: hypertables
        )
    }
}

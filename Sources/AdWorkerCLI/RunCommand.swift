import ArgumentParser
import Logging
import ServiceLifecycle
import UnixSignals
import Worker

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Reads the telemetry streams through a consumer group and COPYs them into PostgreSQL.",
        discussion: """
            Entries are acknowledged only after their rows are committed. Entries that cannot \
            become rows go to <stream>:dead with a reason. SIGTERM or SIGINT: stop reading, \
            commit and acknowledge the batch in hand, exit 0.
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var worker: WorkerOptions

    @Flag(help: "Process until the streams have no new and no pending entries, then exit 0 (backfills, tests).")
    var drain = false

    @Option(help: "Seconds to finish the batch in hand after SIGTERM before giving up (env ADWORKER_SHUTDOWN_TIMEOUT; default 30).")
    var shutdownTimeout: Int?

    func run() async throws {
        let settings = try connection.settings()
        let logger = try connection.bootstrap(settings, label: "adworker")
        let configuration = try worker.workerConfiguration(settings, connection: connection, drain: drain)
        let timeout = try shutdownTimeout ?? settings.integer("ADWORKER_SHUTDOWN_TIMEOUT") ?? 30
        logger.info("connecting", metadata: ["redis": "\(configuration.redis)", "postgres": "\(configuration.postgres)"])
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: WorkerService(configuration: configuration, logger: logger), successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            ).withMaximumGracefulShutdownDuration(.seconds(timeout))
        )
        try await group.run()
    }
}

extension ServiceGroupConfiguration {
    func withMaximumGracefulShutdownDuration(_ duration: Duration) -> ServiceGroupConfiguration {
        var configuration = self
        configuration.maximumGracefulShutdownDuration = duration
        return configuration
    }
}

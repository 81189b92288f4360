import ArgumentParser

@main
struct AdWorker: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "adworker",
        abstract: "Moves ad-serving telemetry from Redis Streams into PostgreSQL.",
        discussion: """
            Settings come from flags, then the environment, then the .env file (see .env.template). \
            Passwords are read only from the environment, .env or *_FILE paths, never from flags.
            """,
        version: version,
        subcommands: [RunCommand.self, MigrateCommand.self, ProduceCommand.self, BenchCommand.self, DeadLetterCommand.self, StatusCommand.self, StatsCommand.self]
    )
}

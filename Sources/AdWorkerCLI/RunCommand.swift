import AdWorkerCore
import AdWorkerHTTP
import AdWorkerPostgres
import AdWorkerRedis
import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import UnixSignals

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Reads the telemetry streams through a consumer group and COPYs them into PostgreSQL.",
        discussion: """
            Entries are acknowledged only after their rows are committed. Entries that cannot \
            become rows go to <stream>:dead with a reason. SIGTERM or SIGINT: stop reading, \
            commit and acknowledge the batch in hand, exit 0. SIGHUP, SIGUSR1 and SIGUSR2 are logged and \
            ignored: adworker reloads nothing. Exit 3: another live process uses \
            this consumer name (give each process its own --consumer-name). Exit 4: refused at start-up, \
            the configuration cannot work (Redis or PostgreSQL refuses the credentials, the database \
            or a table is missing, the role may not insert); the log line says what to change.
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var worker: WorkerOptions

    @Flag(help: "Process until the streams have no new and no pending entries, then exit 0 (backfills, tests).")
    var drain = false

    @Option(help: "Seconds to finish the batch in hand after SIGTERM before giving up (env ADWORKER_SHUTDOWN_TIMEOUT; default 30).")
    var shutdownTimeout: Int?

    @Option(help: "HOST:PORT for /healthz, /readyz, /metrics and /status, or 'off' (env ADWORKER_HTTP; default 127.0.0.1:9464).")
    var http: String?

    @Option(help: "Seconds without a committed batch, while entries wait and no circuit is open, after which /healthz answers 503 and the systemd watchdog stops being fed; 0: never (env ADWORKER_STALL_TIMEOUT; default 120).")
    var stallTimeout: Int?

    @Option(help: "Worker processes; more than 1 runs a supervisor that restarts crashed ones and serves their aggregate on --http, each process on 127.0.0.1:<port+1+i>; a process that leaves its /healthz unanswered (500 ms per probe) for 1 s makes the pool's /healthz 503, and one still running 2 s past --shutdown-timeout after SIGTERM is killed (env ASYNC_PROCESSING_NUM_WORKERS; default 1).")
    var processes: Int?

    func run() async throws {
        let settings = try connection.settings()
        let logger = try connection.bootstrap(settings, label: "adworker")
        let strays = await StraySignals.trapping(logger: logger)
        let configuration = try worker.workerConfiguration(settings, connection: connection, drain: drain)
        let timeout = try shutdownTimeout ?? settings.integer("ADWORKER_SHUTDOWN_TIMEOUT") ?? 30
        let address = try HTTPAddress(http ?? settings.string("ADWORKER_HTTP") ?? "127.0.0.1:9464")
        let processCount = try processes ?? settings.integer("ASYNC_PROCESSING_NUM_WORKERS") ?? 1
        guard (1...64).contains(processCount) else { throw ValidationError("processes must be 1...64, not \(processCount)") }
        let stallSeconds = try stallTimeout ?? settings.integer("ADWORKER_STALL_TIMEOUT") ?? 120
        guard stallSeconds >= 0 else { throw ValidationError("--stall-timeout must not be negative, not \(stallSeconds)") }
        if processCount > 1 {
            try await runPool(processCount, configuration: configuration, address: address, timeout: timeout, strays: strays, logger: logger)
        } else {
            try await runWorker(configuration: configuration, address: address, timeout: timeout, stallSeconds: stallSeconds, strays: strays, logger: logger)
        }
    }

    /// Exit status when another live process holds this consumer name.
    static let consumerNameInUseExitCode: Int32 = 3
    /// Exit status when the configuration cannot work (a wrong password, a missing table): restarting cannot fix it.
    static let startupRefusedExitCode: Int32 = 4
}

extension RunCommand {
    /// One worker process: the consumers, its endpoint and readiness probe, the systemd notifier.
    private func runWorker(
        configuration: WorkerConfiguration, address: HTTPAddress?, timeout: Int, stallSeconds: Int, strays: StraySignals, logger: Logger
    ) async throws {
        Supervisor.terminateWithSupervisor(logger: logger)
        logger.info("connecting", metadata: ["redis": "\(configuration.redis)", "postgres": "\(configuration.postgres)"])
        let registry = Self.bootstrapPrometheus()
        let status = WorkerStatus(version: AdWorker.version, shards: configuration.shardNumbers)
        let stuckReasons: @Sendable () -> [String] = { stallSeconds == 0 ? [] : status.stalledStreams(after: .seconds(stallSeconds)) }
        // First, so shut down last: a stray signal during the final commit is ignored with a log line too.
        var services = [ServiceGroupConfiguration.ServiceConfiguration(service: strays)]
        services.append(
            .init(
                service: WorkerService(configuration: configuration, logger: logger, status: status),
                successTerminationBehavior: .gracefullyShutdownGroup,
                // A start-up refusal stops the endpoint gracefully: cancelled, Hummingbird logs two errors beside the one clear line.
                failureTerminationBehavior: .gracefullyShutdownGroup
            )
        )
        if let notifier = SystemdNotifier(
            environment: ProcessInfo.processInfo.environment, logger: logger, isReady: { status.hasStarted }, unhealthyReasons: stuckReasons
        ) {
            services.append(.init(service: notifier))
        }
        if let address {
            let server = ObservabilityServer.application(
                host: address.host, port: address.port, status: status, registry: registry,
                readiness: { Readiness.reasons(status: status) }, liveness: stuckReasons, logger: logger
            )
            services.append(.init(service: server))
            services.append(
                .init(service: ReadinessProbe(redis: configuration.redis, postgres: configuration.postgres, status: status, logger: logger))
            )
            logger.info("serving /healthz /readyz /metrics /status", metadata: ["http": "\(address.host):\(address.port)"])
        }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
                .withMaximumGracefulShutdownDuration(.seconds(timeout))
        )
        do {
            try await group.run()
        } catch let error as ConsumerNameInUse {
            // A distinct code, so that a supervisor or a test can tell it from a crash.
            logger.critical("\(error)")
            throw ExitCode(Self.consumerNameInUseExitCode)
        } catch let error as StartupRefused {
            logger.critical("cannot start: \(error)")
            throw ExitCode(Self.startupRefusedExitCode)
        }
    }

    /// The process's metrics go to the registry `/metrics` serves.
    private static func bootstrapPrometheus() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Milliseconds when keeping up, minutes under a backlog: the default buckets stop at 10 s.
        factory.durationHistogramBuckets["adworker_end_to_end_latency_seconds"] = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(20), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
            .seconds(30), .seconds(60), .seconds(120), .seconds(300), .seconds(600),
        ]
        MetricsSystem.bootstrap(factory)
        return registry
    }

    /// The supervisor and the pool's endpoint; the children are this binary with `--processes 1`.
    private func runPool(
        _ count: Int, configuration: WorkerConfiguration, address: HTTPAddress?, timeout: Int, strays: StraySignals, logger: Logger
    ) async throws {
        let arguments = CommandLine.arguments
        let afterRun = arguments.firstIndex(of: "run").map { arguments.index(after: $0) } ?? arguments.endIndex
        // Each child has the shutdown timeout for its batch; a child still running a little
        // after that does not handle SIGTERM (frozen) and is killed.
        let monitor = PoolMonitor<ContinuousClock.Instant>.Configuration(shutdownGrace: .seconds(timeout + 2))
        let supervisor = Supervisor(
            count: count, arguments: PoolChildLaunch.sharedArguments(from: Array(arguments[afterRun...])),
            consumerName: configuration.consumerPrefix, basePort: address?.port, monitor: monitor, logger: logger
        )
        let processes: @Sendable () -> [PoolEndpoint.Process] = {
            supervisor.snapshot.map { PoolEndpoint.Process(index: $0.index, state: $0.state, port: $0.port) }
        }
        var services = [ServiceGroupConfiguration.ServiceConfiguration(service: strays)]
        if let address {
            let endpoint = PoolEndpoint.application(
                host: address.host, port: address.port, version: AdWorker.version,
                processes: processes, health: { supervisor.unhealthyReasons }, probeTimeout: monitor.probeTimeout,
                logger: logger
            )
            services.append(.init(service: endpoint))
            // The pool's health is its children's /healthz (without --http they serve none).
            services.append(.init(service: PoolProbe(processes: processes, timeout: monitor.probeTimeout, report: supervisor.probed)))
        }
        // A group shuts its services down one at a time, last first: the supervisor after the
        // endpoint would pass SIGTERM on to the children only once the endpoint had stopped, and
        // the endpoint keeps answering (503, children stopping) while the children finish.
        services.append(
            .init(service: supervisor, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup)
        )
        if let notifier = SystemdNotifier(
            environment: ProcessInfo.processInfo.environment, logger: logger,
            isReady: { processes().allSatisfy { $0.state == .running } },
            unhealthyReasons: { supervisor.unhealthyReasons }
        ) {
            services.append(.init(service: notifier))
        }
        logger.info("starting \(count) worker processes", metadata: ["http": "\(address.map { "\($0.host):\($0.port)" } ?? "off")"])
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
                // The children have the shutdown timeout each; the supervisor kills any left at
                // timeout + 2 s and waits a little longer for them to be reaped.
                .withMaximumGracefulShutdownDuration(.seconds(timeout + 5))
        )
        try await group.run()
    }
}

/// `--http`: HOST:PORT, or off.
struct HTTPAddress {
    var host: String
    var port: Int

    init?(_ text: String) throws {
        if text == "off" { return nil }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("--http must be HOST:PORT or off, not '\(text)'")
        }
        self.host = String(text[..<colon])
        self.port = port
    }
}

extension ServiceGroupConfiguration {
    func withMaximumGracefulShutdownDuration(_ duration: Duration) -> ServiceGroupConfiguration {
        var configuration = self
        configuration.maximumGracefulShutdownDuration = duration
        return configuration
    }
}

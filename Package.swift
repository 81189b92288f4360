// swift-tools-version: 6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
]

let package = Package(
    name: "adworker",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "adworker", targets: ["AdWorkerCLI"]),
        .library(name: "AdTelemetry", targets: ["AdTelemetry"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-async-algorithms.git", from: "1.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
    ],
    targets: [
        .systemLibrary(name: "CAdWorkerHiredis", path: "Sources/CAdWorkerHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CAdWorkerLibPQ", path: "Sources/CAdWorkerLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .target(name: "AdWorkerConnectionThread", swiftSettings: swiftSettings),
        .target(name: "CAdWorkerProcessControl"),
        .target(name: "CAdWorkerRedisArena", dependencies: ["CAdWorkerHiredis"]),
        // OpenSSL from Debian's libssl-dev (libpq links the same library).
        .target(name: "CAdWorkerTLS", linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        .target(name: "CAdWorkerRedisTransport", dependencies: ["CAdWorkerHiredis", "CAdWorkerTLS"]),
        .target(name: "AdTelemetryRecords", swiftSettings: swiftSettings),
        .target(
            name: "AdWorkerRedis",
            dependencies: [
                "CAdWorkerHiredis", "CAdWorkerRedisArena", "CAdWorkerRedisTransport", "CAdWorkerTLS", "AdWorkerConnectionThread", "AdTelemetryRecords",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "AdWorkerPostgres",
            dependencies: [
                "CAdWorkerLibPQ", "CAdWorkerTLS", "AdWorkerConnectionThread", "AdTelemetryRecords",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "AdTelemetry",
            dependencies: [
                "AdTelemetryRecords", "AdWorkerRedis", "AdWorkerConnectionThread",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "AdWorkerCore",
            dependencies: [
                "AdTelemetryRecords", "AdWorkerConnectionThread", "AdWorkerRedis", "AdWorkerPostgres",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "AdWorkerHTTP",
            dependencies: [
                "AdWorkerCore", "AdTelemetryRecords",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "AdWorkerCLI",
            dependencies: [
                "AdTelemetry", "AdWorkerCore", "AdWorkerHTTP", "AdWorkerPostgres", "AdWorkerRedis", "AdTelemetryRecords", "AdWorkerConnectionThread",
                "CAdWorkerProcessControl",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "AdServingExample",
            dependencies: [
                "AdTelemetry",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            path: "Examples/AdServingAPI",
            swiftSettings: swiftSettings
        ),
        // What the test targets share: the servers, producers, free ports, a clock moved by hand.
        .target(
            name: "AdWorkerTestSupport",
            dependencies: [
                "AdTelemetry", "AdTelemetryRecords", "AdWorkerCore", "AdWorkerPostgres", "AdWorkerRedis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Tests/AdWorkerTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "TelemetryRecordsTests", dependencies: ["AdTelemetryRecords"], swiftSettings: swiftSettings),
        .testTarget(
            name: "WorkerUnitTests",
            dependencies: [
                "AdTelemetry", "AdWorkerConnectionThread", "AdWorkerCore", "AdWorkerHTTP", "AdWorkerPostgres", "AdWorkerRedis", "AdTelemetryRecords", "AdWorkerTestSupport",
                "CAdWorkerHiredis", "CAdWorkerRedisArena",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "AdTelemetry", "AdWorkerCore", "AdWorkerHTTP", "AdWorkerPostgres", "AdWorkerRedis", "AdTelemetryRecords",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                "AdWorkerTestSupport", .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)

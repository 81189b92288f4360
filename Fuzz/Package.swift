// swift-tools-version: 6.1
// libFuzzer harness for the wire decoder and the COPY row encoder: every entry anyone can XADD
// must become a row or a RecordError, never a trap. The modules are the project's own files
// (symlinked), compiled without their I/O neighbours. Run: scripts/fuzz.sh [seconds].
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
]

let package = Package(
    name: "adworker-fuzz",
    targets: [
        .target(name: "AdTelemetryRecords", swiftSettings: swiftSettings),
        .target(name: "AdWorkerPostgres", dependencies: ["AdTelemetryRecords"], swiftSettings: swiftSettings),
        .target(name: "AdWorkerCore", dependencies: ["AdTelemetryRecords", "AdWorkerPostgres"], swiftSettings: swiftSettings),
        .executableTarget(name: "EntryFuzzer", dependencies: ["AdTelemetryRecords", "AdWorkerPostgres", "AdWorkerCore"], swiftSettings: swiftSettings),
    ]
)

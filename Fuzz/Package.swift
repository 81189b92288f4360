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
        .target(name: "TelemetryRecords", swiftSettings: swiftSettings),
        .target(name: "Postgres", dependencies: ["TelemetryRecords"], swiftSettings: swiftSettings),
        .target(name: "Worker", dependencies: ["TelemetryRecords", "Postgres"], swiftSettings: swiftSettings),
        .executableTarget(name: "EntryFuzzer", dependencies: ["TelemetryRecords", "Postgres", "Worker"], swiftSettings: swiftSettings),
    ]
)

public import AdWorkerCore
import Synchronization

/// Collects batch reports from consumer tasks.
public final class ReportLog: Sendable {
    private let reports = Mutex<[BatchReport]>([])

    public init() {}

    @Sendable public func append(_ report: BatchReport) {
        reports.withLock { $0.append(report) }
    }

    public var all: [BatchReport] { reports.withLock { $0 } }
}

import AdTelemetryRecords
import AdWorkerConnectionThread
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Records kept on local disk while Redis cannot take them: past the memory buffer, and still
/// unconfirmed when the producer stops. Read back in order once Redis answers, or on the next start.
///
/// On disk: segment files `segment-<n>.spool` of checksummed ``SpoolFrame``s (a new one past
/// 8 MiB, at each start, and after damage was found in the one being written), and `progress`, the
/// read position in the oldest segment and the batch being sent from it. Records are written with
/// `write(2)` as they come, so a crash of the process loses none of them; ``sync()`` (every
/// second, and at close) fsyncs, so a crash of the machine loses at most the last second. A write
/// that fails part way (a full disk) is cut back to the last whole record. A batch read back is
/// marked in flight before it is sent; after a restart its records are looked up in Redis before
/// they are sent again (they may have been stored). Damaged bytes are read past (``SpoolScan``),
/// and the records they held are counted, logged and reported once (``takeUnreadable()``). Once
/// everything is sent, the segments are removed, so the disk space comes back.
///
/// An actor on a thread of its own: file I/O never blocks Swift's cooperative pool. Opened and
/// closed by ``withRecordSpool(directory:maximumBytes:segmentLimit:logger:_:)``.
actor RecordSpool {
    static let readChunk = 4 << 20

    let directory: String
    let maximumBytes: Int
    /// A new segment is begun past this size, so that the sent part of the spool is freed.
    let segmentLimit: Int
    let logger: Logger
    let executor: ThreadExecutor
    /// Held (flock) while the spool is open.
    let lockDescriptor: Int32
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    struct Segment {
        var number: UInt64
        /// Whole records in it not yet sent (committed).
        var records: Int
    }

    /// Segments on disk, oldest first. Records are appended to the last one while
    /// ``writeDescriptor`` is open on it; segments of an earlier run are only read.
    var segments: [Segment] = []
    var nextSegment: UInt64
    var writeDescriptor: Int32 = -1
    var writeSize = 0
    /// Where reading continues in `segments[0]`.
    var readOffset = 0
    /// The batch handed out and not yet committed: where it ends, and when it was handed out.
    var inFlight: (end: Int, sinceMilliseconds: UInt64)?
    /// After a restart: the part of the oldest segment that was in flight when the last run stopped.
    var recoveredInFlight: (end: Int, sinceMilliseconds: UInt64)?
    /// Records that could not be read back (damage) and were not yet reported.
    var unreadable = 0
    var byteCount = 0
    var dirty = false

    var recordCount: Int { segments.reduce(0) { $0 + $1.records } }
    /// ``recordCount`` and ``byteCount`` in one call: one hop to the spool's thread for the gauges.
    var counts: (records: Int, bytes: Int) { (recordCount, byteCount) }

    enum OpenError: Error, CustomStringConvertible {
        case unusable(String, errno: Int32)
        var description: String {
            switch self {
            case .unusable(let what, let code): "spool: \(what): \(String(cString: strerror(code)))"
            }
        }
    }

    /// Why records were not written.
    enum Refusal: Equatable, Sendable, CustomStringConvertible {
        /// They would pass ``maximumBytes``.
        case full(maximumBytes: Int)
        /// The file system refused them (`ENOSPC`, `EIO`, a read-only remount).
        case unwritable(errno: Int32)

        var description: String {
            switch self {
            case .full(let maximumBytes): "the spool holds its maximum of \(maximumBytes) bytes"
            case .unwritable(let code): "the spool cannot be written: \(String(cString: strerror(code)))"
            }
        }
    }

    struct AppendOutcome: Equatable, Sendable {
        var appended: Int
        var refused: Int
        /// Why the last refused records were refused; nil when none were.
        var refusal: Refusal?
    }

    /// Opens `directory` (made if missing) for as long as `body` runs, with what an earlier run
    /// left there; then syncs it and ends its thread.
    /// - Parameters:
    ///   - maximumBytes: Records past this many bytes on disk are refused.
    ///   - segmentLimit: A new segment is begun past this size.
    ///   - body: Uses the spool; nothing may call it after `body` returns.
    static func withRecordSpool<Result>(
        directory: String, maximumBytes: Int, segmentLimit: Int = 8 << 20, logger: Logger, _ body: (RecordSpool) async throws -> Result
    ) async throws -> Result {
        let spool = try RecordSpool(directory: directory, maximumBytes: maximumBytes, segmentLimit: segmentLimit, logger: logger)
        do {
            let result = try await body(spool)
            await spool.finish()
            return result
        } catch {
            await spool.finish()
            throw error
        }
    }

    private init(directory: String, maximumBytes: Int, segmentLimit: Int, logger: Logger) throws(OpenError) {
        let lock = try Self.lock(directory)
        Self.restoreRenamedSegments(in: directory, logger: logger)
        let found = Self.recover(directory, logger: logger)
        self.directory = directory
        self.maximumBytes = maximumBytes
        self.segmentLimit = segmentLimit
        self.logger = logger
        self.executor = ThreadExecutor(name: "telemetry spool")
        self.lockDescriptor = lock
        self.segments = found.segments
        self.nextSegment = found.nextSegment
        self.readOffset = found.readOffset
        self.recoveredInFlight = found.recoveredInFlight
        self.byteCount = found.byteCount
        self.unreadable = found.unreadable
    }

    /// Appends records, in order, as far as ``maximumBytes`` and the disk allow.
    /// - Parameter allOrNothing: Refuse all if any one cannot be written (the records of one API
    ///   request, whose caller is told one outcome); otherwise keep as many as fit.
    func append(_ records: [SpooledRecord], allOrNothing: Bool = false) -> AppendOutcome {
        var buffer: [UInt8] = []
        // Where each frame kept in `buffer` ends.
        var ends: [Int] = []
        var refused = 0
        for record in records {
            let before = buffer.count
            SpoolFrame.append(record, to: &buffer)
            guard byteCount + buffer.count <= maximumBytes else {
                buffer.removeLast(buffer.count - before)
                if allOrNothing { return AppendOutcome(appended: 0, refused: records.count, refusal: .full(maximumBytes: maximumBytes)) }
                refused += 1
                continue
            }
            ends.append(buffer.count)
        }
        var refusal: Refusal? = refused > 0 ? .full(maximumBytes: maximumBytes) : nil
        guard !buffer.isEmpty else { return AppendOutcome(appended: 0, refused: refused, refusal: refusal) }
        var kept = ends.count
        if let failure = write(buffer) {
            kept = allOrNothing ? 0 : ends.count { $0 <= failure.written }
            refused += ends.count - kept
            refusal = .unwritable(errno: failure.errno)
            logger.error(
                "adtelemetry spool: cannot write", metadata: ["adtelemetry_error": "\(String(cString: strerror(failure.errno)))", "adtelemetry_records": "\(ends.count - kept)"]
            )
            if !cutBack(to: writeSize + (kept == 0 ? 0 : ends[kept - 1])) {
                // The half-written bytes stay, to be read past: counted, as reading them is.
                byteCount += failure.written - (kept == 0 ? 0 : ends[kept - 1])
            }
        }
        let keptBytes = kept == 0 ? 0 : ends[kept - 1]
        if kept > 0 {
            writeSize += keptBytes
            byteCount += keptBytes
            segments[segments.count - 1].records += kept
            dirty = true
        }
        return AppendOutcome(appended: kept, refused: refused, refusal: refusal)
    }

    /// Writes `bytes` to the segment being written (a new one when there is none, or it is full).
    /// - Returns: nil, or how much was written before the write failed, and why.
    func write(_ bytes: [UInt8]) -> (written: Int, errno: Int32)? {
        if writeDescriptor < 0 || writeSize >= segmentLimit {
            sealWriteSegment()
            let number = nextSegment
            let descriptor = open(path(number), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else { return (0, errno) }
            nextSegment += 1
            segments.append(Segment(number: number, records: 0))
            writeDescriptor = descriptor
            writeSize = 0
        }
        var written = 0
        while written < bytes.count {
            let result = bytes[written...].withUnsafeBytes { Glibc.write(writeDescriptor, $0.baseAddress, $0.count) }
            if result < 0 {
                if errno == EINTR { continue }
                return (written, errno)
            }
            written += result
        }
        return nil
    }

    /// After a failed write: the segment ends at `size` again, so no frame is left half written.
    /// - Returns: false when it could not be cut back.
    func cutBack(to size: Int) -> Bool {
        guard writeDescriptor >= 0 else { return true }
        guard ftruncate(writeDescriptor, off_t(size)) != 0 else { return true }
        // The half frame stays: nothing more goes after it (readers read past it as damage).
        logger.error("adtelemetry spool: cannot cut a failed write back", metadata: ["adtelemetry_error": "\(String(cString: strerror(errno)))"])
        sealWriteSegment()
        return false
    }

    /// Records are appended to a new segment from now on.
    /// - Parameter sync: false for a segment about to be removed (all of it sent).
    func sealWriteSegment(sync: Bool = true) {
        guard writeDescriptor >= 0 else { return }
        if sync { fsync(writeDescriptor) }
        Glibc.close(writeDescriptor)
        writeDescriptor = -1
    }

    var isWritingOldest: Bool { writeDescriptor >= 0 && segments.count == 1 }

    /// fsync of what was written: the segment being written, the progress file and the directory.
    func sync() {
        guard dirty else { return }
        dirty = false
        if writeDescriptor >= 0 { fsync(writeDescriptor) }
        for name in ["progress", "."] {
            let descriptor = open(path(name), O_RDONLY | O_CLOEXEC)
            if descriptor >= 0 {
                fsync(descriptor)
                Glibc.close(descriptor)
            }
        }
    }

    /// Syncs and stops the spool's thread (the end of ``withRecordSpool(directory:maximumBytes:segmentLimit:logger:_:)``).
    private func finish() {
        sync()
        sealWriteSegment()
        Glibc.close(lockDescriptor)
        executor.shutdown()
    }
}

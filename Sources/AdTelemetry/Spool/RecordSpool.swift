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
/// An actor on a thread of its own: file I/O never blocks Swift's cooperative pool.
actor RecordSpool {
    private static let readChunk = 4 << 20

    let directory: String
    let maximumBytes: Int
    /// A new segment is begun past this size, so that the sent part of the spool is freed.
    let segmentLimit: Int
    private let logger: Logger
    private let executor: ThreadExecutor
    /// Held (flock) while the spool is open.
    private let lockDescriptor: Int32
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    private struct Segment {
        var number: UInt64
        /// Whole records in it not yet sent (committed).
        var records: Int
    }

    /// Segments on disk, oldest first. Records are appended to the last one while
    /// ``writeDescriptor`` is open on it; segments of an earlier run are only read.
    private var segments: [Segment] = []
    private var nextSegment: UInt64
    private var writeDescriptor: Int32 = -1
    private var writeSize = 0
    /// Where reading continues in `segments[0]`.
    private var readOffset = 0
    /// The batch handed out and not yet committed: where it ends, and when it was handed out.
    private var inFlight: (end: Int, sinceMilliseconds: UInt64)?
    /// After a restart: the part of the oldest segment that was in flight when the last run stopped.
    private var recoveredInFlight: (end: Int, sinceMilliseconds: UInt64)?
    /// Records that could not be read back (damage) and were not yet reported.
    private var unreadable = 0
    private(set) var byteCount = 0
    private var dirty = false

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

    /// Opens `directory` (made if missing) and counts what an earlier run left there.
    init(directory: String, maximumBytes: Int, segmentLimit: Int = 8 << 20, logger: Logger) throws(OpenError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            // Foundation keeps the errno it met as the underlying error: report that, not a guess.
            let posix = (error as? CocoaError)?.underlying as? POSIXError
            throw .unusable("cannot create \(directory)", errno: posix?.code.rawValue ?? EIO)
        }
        guard access(directory, W_OK) == 0 else { throw .unusable("cannot write to \(directory)", errno: errno) }
        // One producer process per directory: a second would interleave its frames with ours.
        let lock = open(directory + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0 else { throw .unusable("cannot open \(directory)/lock", errno: errno) }
        guard flock(lock, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            Glibc.close(lock)
            throw .unusable("\(directory) is in use by another producer process (give each its own spool directory)", errno: code)
        }
        Self.restoreRenamedSegments(in: directory, logger: logger)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let numbers = names.compactMap { name -> UInt64? in
            guard name.hasPrefix("segment-"), name.hasSuffix(".spool") else { return nil }
            return UInt64(name.dropFirst("segment-".count).dropLast(".spool".count))
        }.sorted()
        var readOffset = 0
        var recoveredInFlight: (end: Int, sinceMilliseconds: UInt64)?
        if let progress = try? String(contentsOfFile: directory + "/progress", encoding: .utf8) {
            let fields = progress.split(separator: " ").compactMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if fields.count == 4, fields[0] == numbers.first {
                readOffset = Int(fields[1])
                if fields[2] > fields[1] { recoveredInFlight = (Int(fields[2]), fields[3]) }
            }
        }
        var segments: [Segment] = []
        var byteCount = 0
        var unreadable = 0
        for number in numbers {
            let file = Self.path(of: number, in: directory)
            let bytes = FileManager.default.contents(atPath: file).map { [UInt8]($0) } ?? []
            let start = segments.isEmpty ? min(readOffset, bytes.count) : 0
            if segments.isEmpty { readOffset = start }
            let scan = SpoolScan(bytes, from: start)
            if let torn = scan.tornTail {
                logger.warning(
                    "adtelemetry spool: a segment ends in a record cut short (a crash while writing it); that record is lost",
                    metadata: ["adtelemetry_spool_segment": "\(file)", "adtelemetry_spool_bytes_lost": "\(bytes.count - torn)"]
                )
                truncate(file, off_t(torn))
            }
            if !scan.damaged.isEmpty {
                logger.error(
                    "adtelemetry spool: damaged bytes in a segment are read past; the records in them are lost",
                    metadata: [
                        "adtelemetry_spool_segment": "\(file)", "adtelemetry_spool_offset": "\(scan.damaged[0].lowerBound)",
                        "adtelemetry_spool_bytes_lost": "\(scan.damaged.reduce(0) { $0 + $1.count })",
                        "adtelemetry_records": "about \(scan.damagedRecordsEstimate)",
                    ]
                )
                unreadable += scan.damagedRecordsEstimate
            }
            segments.append(Segment(number: number, records: scan.frames.count))
            byteCount += (scan.tornTail ?? bytes.count) - start
        }
        self.directory = directory
        self.maximumBytes = maximumBytes
        self.segmentLimit = segmentLimit
        self.logger = logger
        self.executor = ThreadExecutor(name: "telemetry spool")
        self.lockDescriptor = lock
        self.segments = segments
        self.nextSegment = (numbers.last ?? 0) + 1
        self.readOffset = readOffset
        self.recoveredInFlight = recoveredInFlight
        self.byteCount = byteCount
        self.unreadable = unreadable
    }

    /// Earlier versions renamed a segment with a damaged record to `.damaged` and stopped
    /// reading it, while still writing to it: read it again, past its damage. Its number may have
    /// been given again to a live segment since: then it gets a new one, after all others, and
    /// never replaces a file (`link` refuses an existing name, where `rename` would overwrite).
    private static func restoreRenamedSegments(in directory: String, logger: Logger) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var highest = names.compactMap { name -> UInt64? in
            guard name.hasPrefix("segment-") else { return nil }
            return UInt64(name.dropFirst("segment-".count).prefix { $0.isNumber })
        }.max() ?? 0
        for name in names.sorted() where name.hasPrefix("segment-") && name.hasSuffix(".spool.damaged") {
            let original = directory + "/" + name
            var restored = directory + "/" + name.dropLast(".damaged".count)
            if link(original, restored) != 0 {
                guard errno == EEXIST else { continue }
                highest += 1
                restored = path(of: highest, in: directory)
                guard link(original, restored) == 0 else { continue }
            }
            unlink(original)
            logger.notice("adtelemetry spool: a segment set aside as damaged is read again, past its damage", metadata: ["adtelemetry_spool_segment": "\(restored)"])
        }
    }

    private static func path(of segment: UInt64, in directory: String) -> String {
        directory + "/segment-" + String(segment).leftPadded(to: 16) + ".spool"
    }

    private nonisolated func path(_ name: String) -> String { directory + "/" + name }
    private nonisolated func path(_ segment: UInt64) -> String { Self.path(of: segment, in: directory) }

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
    private func write(_ bytes: [UInt8]) -> (written: Int, errno: Int32)? {
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
    private func cutBack(to size: Int) -> Bool {
        guard writeDescriptor >= 0 else { return true }
        guard ftruncate(writeDescriptor, off_t(size)) != 0 else { return true }
        // The half frame stays: nothing more goes after it (readers read past it as damage).
        logger.error("adtelemetry spool: cannot cut a failed write back", metadata: ["adtelemetry_error": "\(String(cString: strerror(errno)))"])
        sealWriteSegment()
        return false
    }

    /// Records are appended to a new segment from now on.
    /// - Parameter sync: false for a segment about to be removed (all of it sent).
    private func sealWriteSegment(sync: Bool = true) {
        guard writeDescriptor >= 0 else { return }
        if sync { fsync(writeDescriptor) }
        Glibc.close(writeDescriptor)
        writeDescriptor = -1
    }

    private var isWritingOldest: Bool { writeDescriptor >= 0 && segments.count == 1 }

    /// The next records, up to `maximum`, marked in flight until ``commit(records:)`` or ``release()``.
    /// Empty while a batch is in flight, when nothing is spooled or everything written is handed
    /// out, or when the segment cannot be opened now (it is tried again next time).
    func takeBatch(maximum: Int, nowMilliseconds: UInt64) -> [SpooledRecord] {
        guard inFlight == nil, byteCount > 0 || recordCount > 0 else { return [] }
        while !segments.isEmpty {
            guard let (records, end) = read(maximum: maximum) else { return [] }
            if !records.isEmpty {
                inFlight = (end, nowMilliseconds)
                saveProgress()
                return records
            }
            // Damage read past to the end of what is written: nothing of it is sent.
            if end > readOffset {
                byteCount -= end - readOffset
                readOffset = end
                saveProgress()
            }
            if isWritingOldest {
                guard segments[0].records == 0, readOffset >= writeSize else { return [] }
                sealWriteSegment(sync: false)
            }
            removeOldestSegment()
        }
        return []
    }

    /// Reads `segments[0]` from ``readOffset``. - Returns: the records, and where reading stopped;
    /// nil when the file cannot be opened (too many open files, an I/O error): not read, not lost.
    private func read(maximum: Int) -> (records: [SpooledRecord], end: Int)? {
        let descriptor = open(path(segments[0].number), O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            logger.error("adtelemetry spool: cannot open a segment to read it; trying again later", metadata: ["adtelemetry_spool_segment": "\(path(segments[0].number))", "adtelemetry_error": "\(String(cString: strerror(errno)))"])
            return nil
        }
        defer { Glibc.close(descriptor) }
        var records: [SpooledRecord] = []
        var position = readOffset
        var chunkSize = Self.readChunk
        while records.count < maximum {
            var chunk = [UInt8](repeating: 0, count: chunkSize)
            let count = chunk.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, chunkSize, off_t(position)) }
            guard count > 0 else { break }
            chunk.removeLast(chunkSize - count)
            var consumed = 0
            var damaged = false
            decoding: while records.count < maximum {
                switch SpoolFrame.decode(chunk[consumed...]) {
                case .record(var record, let size):
                    if let recovered = recoveredInFlight, position + consumed < recovered.end, record.lookFrom == nil {
                        // The last run may have stored it before it stopped: look before sending.
                        // (A start it already has is older: it came from an attempt before that one.)
                        record.lookFrom = .sentAt(hostMilliseconds: recovered.sinceMilliseconds)
                    }
                    records.append(record)
                    consumed += size
                case .incomplete:
                    // A frame going on past this chunk; or, at the end of the file, bytes that
                    // are no whole frame (only whole frames are ever left written): damage.
                    damaged = count < chunkSize && consumed < count
                    break decoding
                case .damaged:
                    damaged = true
                    break decoding
                }
            }
            if damaged {
                position = readPast(damageAt: position + consumed, in: descriptor, recordsBefore: records.count)
                continue
            }
            if consumed == 0 {
                // A frame larger than the chunk: read it whole.
                guard count == chunkSize else { break }
                chunkSize *= 2
                continue
            }
            position += consumed
        }
        return (records, position)
    }

    /// Finds the next whole frame after damage at `offset` in `segments[0]`, and counts the records
    /// lost: those the segment held, less the ones read before the damage and the whole ones after it.
    /// - Returns: Where reading goes on.
    private func readPast(damageAt offset: Int, in descriptor: Int32, recordsBefore: Int) -> Int {
        var rest: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: Self.readChunk)
        while true {
            let count = chunk.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, Self.readChunk, off_t(offset + rest.count)) }
            guard count > 0 else { break }
            rest.append(contentsOf: chunk.prefix(count))
        }
        let scan = SpoolScan(rest)
        let next = offset + (scan.damaged.first?.upperBound ?? rest.count)
        let lost = max(0, segments[0].records - recordsBefore - scan.frames.count)
        segments[0].records -= lost
        unreadable += lost
        // Damage found when the spool was opened was logged and counted then.
        if lost > 0 { logger.error(
            "adtelemetry spool: damaged bytes in a segment are read past; the records in them are lost",
            metadata: [
                "adtelemetry_spool_segment": "\(path(segments[0].number))", "adtelemetry_spool_offset": "\(offset)",
                "adtelemetry_spool_bytes_lost": "\(next - offset)", "adtelemetry_records": "\(lost)",
            ]
        ) }
        // Nothing more is written after damage: a damaged disk block may take more with it.
        if isWritingOldest { sealWriteSegment() }
        return next
    }

    /// Records found unreadable (damage) since the last call: each is reported once.
    func takeUnreadable() -> Int {
        defer { unreadable = 0 }
        return unreadable
    }

    /// The batch in flight was settled (stored, or given up for good): it is not read again.
    func commit(records: Int) {
        guard let batch = inFlight else { return }
        byteCount -= batch.end - readOffset
        segments[0].records = max(0, segments[0].records - records)
        readOffset = batch.end
        inFlight = nil
        if let recovered = recoveredInFlight, readOffset >= recovered.end { recoveredInFlight = nil }
        if readOffset >= fileSize(path(segments[0].number)), segments.count > 1 || segments[0].records == 0 {
            // Sent to its end: its space comes back (the one being written too, once it is all sent).
            if isWritingOldest { sealWriteSegment(sync: false) }
            removeOldestSegment()
        } else {
            saveProgress()
        }
    }

    /// The batch in flight was not settled (the producer is stopping): it is read again, and
    /// looked up first, on the next start.
    func release() {
        inFlight.map { recoveredInFlight = (max($0.end, recoveredInFlight?.end ?? 0), min($0.sinceMilliseconds, recoveredInFlight?.sinceMilliseconds ?? .max)) }
        inFlight = nil
    }

    private func removeOldestSegment() {
        let oldest = segments.removeFirst()
        let size = fileSize(path(oldest.number))
        byteCount -= max(0, size - readOffset)
        if oldest.records > 0 {
            // Counted and never read: the file went away or shrank under the spool.
            unreadable += oldest.records
            logger.error("adtelemetry spool: records of a segment could not be read", metadata: ["adtelemetry_spool_segment": "\(path(oldest.number))", "adtelemetry_records": "\(oldest.records)"])
        }
        unlink(path(oldest.number))
        readOffset = 0
        recoveredInFlight = nil
        saveProgress()
    }

    private func fileSize(_ path: String) -> Int {
        var status = stat()
        return stat(path, &status) == 0 ? Int(status.st_size) : 0
    }

    /// `<oldest segment> <read offset> <in-flight end> <in flight since, ms>`, replaced atomically.
    private func saveProgress() {
        let end = inFlight?.end ?? recoveredInFlight?.end ?? readOffset
        let since = inFlight?.sinceMilliseconds ?? recoveredInFlight?.sinceMilliseconds ?? 0
        let text = "\(segments.first?.number ?? 0) \(readOffset) \(end) \(since)\n"
        let temporary = path("progress.tmp")
        guard FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8)) else { return }
        rename(temporary, path("progress"))
        dirty = true
    }

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

    /// Syncs and stops the spool's thread.
    func finish() {
        sync()
        sealWriteSegment()
        Glibc.close(lockDescriptor)
        executor.shutdown()
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

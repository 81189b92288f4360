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
/// 8 MiB), and `progress`, the read position in the oldest segment and the batch being sent from
/// it. Records are written with `write(2)` as they come, so a crash of the process loses none of
/// them; ``sync()`` (every second, and at close) fsyncs, so a crash of the machine loses at most
/// the last second. A batch read back is marked in flight before it is sent; after a restart its
/// records are looked up in Redis before they are sent again (they may have been stored).
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

    /// Segment numbers on disk, oldest first; the last is written to.
    private var segments: [UInt64] = []
    private var writeDescriptor: Int32 = -1
    private var writeSize = 0
    /// Where reading continues in `segments[0]`.
    private var readOffset = 0
    /// The batch handed out and not yet committed: where it ends, and when it was handed out.
    private var inFlight: (end: Int, sinceMilliseconds: UInt64)?
    /// After a restart: the part of the oldest segment that was in flight when the last run stopped.
    private var recoveredInFlight: (end: Int, sinceMilliseconds: UInt64)?
    private(set) var recordCount = 0
    private(set) var byteCount = 0
    private var dirty = false

    enum OpenError: Error, CustomStringConvertible {
        case unusable(String, errno: Int32)
        var description: String {
            switch self {
            case .unusable(let what, let code): "spool: \(what): \(String(cString: strerror(code)))"
            }
        }
    }

    /// Opens `directory` (made if missing) and counts what an earlier run left there.
    init(directory: String, maximumBytes: Int, segmentLimit: Int = 8 << 20, logger: Logger) throws(OpenError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .unusable("cannot create \(directory)", errno: EACCES)
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
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let segments = names.compactMap { name -> UInt64? in
            guard name.hasPrefix("segment-"), name.hasSuffix(".spool") else { return nil }
            return UInt64(name.dropFirst("segment-".count).dropLast(".spool".count))
        }.sorted()
        var readOffset = 0
        var recoveredInFlight: (end: Int, sinceMilliseconds: UInt64)?
        if let progress = try? String(contentsOfFile: directory + "/progress", encoding: .utf8) {
            let fields = progress.split(separator: " ").compactMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if fields.count == 4, fields[0] == segments.first {
                readOffset = Int(fields[1])
                if fields[2] > fields[1] { recoveredInFlight = (Int(fields[2]), fields[3]) }
            }
        }
        var recordCount = 0
        var byteCount = 0
        var writeSize = 0
        for (index, segment) in segments.enumerated() {
            let file = Self.path(of: segment, in: directory)
            let (frames, goodBytes, size) = Self.scan(file)
            if goodBytes < size {
                logger.warning(
                    "adtelemetry spool: a segment ends in a record cut short (a crash while writing it); that record is lost",
                    metadata: ["adtelemetry_spool_segment": "\(file)", "adtelemetry_spool_bytes_lost": "\(size - goodBytes)"]
                )
                truncate(file, off_t(goodBytes))
            }
            let start = index == 0 ? min(readOffset, goodBytes) : 0
            recordCount += frames.count { $0 >= start }
            byteCount += goodBytes - start
            if index == segments.count - 1 { writeSize = goodBytes }
        }
        self.directory = directory
        self.maximumBytes = maximumBytes
        self.segmentLimit = segmentLimit
        self.logger = logger
        self.executor = ThreadExecutor(name: "telemetry spool")
        self.lockDescriptor = lock
        self.segments = segments
        self.readOffset = readOffset
        self.recoveredInFlight = recoveredInFlight
        self.recordCount = recordCount
        self.byteCount = byteCount
        self.writeSize = writeSize
    }

    private static func path(of segment: UInt64, in directory: String) -> String {
        directory + "/segment-" + String(segment).leftPadded(to: 16) + ".spool"
    }

    /// Frame start offsets of a segment, the bytes up to the end of its last whole frame, and its size.
    private static func scan(_ path: String) -> (frames: [Int], goodBytes: Int, size: Int) {
        guard let data = FileManager.default.contents(atPath: path) else { return ([], 0, 0) }
        let bytes = [UInt8](data)
        var frames: [Int] = []
        var offset = 0
        while offset < bytes.count, case .record(_, let size) = SpoolFrame.decode(bytes[offset...]) {
            frames.append(offset)
            offset += size
        }
        return (frames, offset, bytes.count)
    }

    private nonisolated func path(_ name: String) -> String { directory + "/" + name }
    private nonisolated func path(_ segment: UInt64) -> String { Self.path(of: segment, in: directory) }

    /// Appends records, in order, as far as ``maximumBytes`` allows. - Returns: how many were refused.
    func append(_ records: [SpooledRecord]) -> Int {
        var refused = 0
        var buffer: [UInt8] = []
        var appended = 0
        for record in records {
            let before = buffer.count
            SpoolFrame.append(record, to: &buffer)
            if byteCount + buffer.count > maximumBytes {
                buffer.removeLast(buffer.count - before)
                refused += 1
                continue
            }
            appended += 1
        }
        guard !buffer.isEmpty else { return refused }
        do {
            try write(buffer)
            recordCount += appended
            byteCount += buffer.count
        } catch {
            logger.error("adtelemetry spool: cannot write", metadata: ["adtelemetry_error": "\(error)", "adtelemetry_records": "\(appended)"])
            refused += appended
        }
        return refused
    }

    private func write(_ bytes: [UInt8]) throws(OpenError) {
        if writeDescriptor < 0 || writeSize >= segmentLimit {
            if writeDescriptor >= 0 {
                fsync(writeDescriptor)
                Glibc.close(writeDescriptor)
                writeDescriptor = -1
            }
            if segments.isEmpty || writeSize >= segmentLimit {
                segments.append((segments.last ?? 0) + 1)
                writeSize = 0
            }
            writeDescriptor = open(path(segments.last!), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard writeDescriptor >= 0 else { throw .unusable("cannot open \(path(segments.last!))", errno: errno) }
        }
        var written = 0
        while written < bytes.count {
            let result = bytes[written...].withUnsafeBytes { Glibc.write(writeDescriptor, $0.baseAddress, $0.count) }
            if result < 0 {
                if errno == EINTR { continue }
                // A partial frame at the end is cut off when the spool is next opened.
                throw .unusable("cannot write to \(path(segments.last!))", errno: errno)
            }
            written += result
        }
        writeSize += bytes.count
        dirty = true
    }

    /// The next records, up to `maximum`, marked in flight until ``commit()`` or ``release()``.
    /// Empty while a batch is in flight or nothing is spooled.
    func takeBatch(maximum: Int, nowMilliseconds: UInt64) -> [SpooledRecord] {
        guard inFlight == nil, recordCount > 0 else { return [] }
        while let first = segments.first {
            let (records, end) = read(segment: first, from: readOffset, maximum: maximum)
            if !records.isEmpty {
                inFlight = (end, nowMilliseconds)
                saveProgress()
                return records
            }
            // Nothing more in this segment: the next one, unless this is where records are written.
            guard segments.count > 1 else { return [] }
            removeOldestSegment()
        }
        return []
    }

    private func read(segment: UInt64, from offset: Int, maximum: Int) -> ([SpooledRecord], Int) {
        let descriptor = open(path(segment), O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return ([], offset) }
        defer { Glibc.close(descriptor) }
        var records: [SpooledRecord] = []
        var position = offset
        var chunkSize = Self.readChunk
        while records.count < maximum {
            var chunk = [UInt8](repeating: 0, count: chunkSize)
            let count = chunk.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, chunkSize, off_t(position)) }
            guard count > 0 else { break }
            chunk.removeLast(chunkSize - count)
            var consumed = 0
            decoding: while records.count < maximum {
                switch SpoolFrame.decode(chunk[consumed...]) {
                case .record(var record, let size):
                    if let recovered = recoveredInFlight, position + consumed < recovered.end {
                        // The last run may have stored it before it stopped: look before sending.
                        let start = UnknownOutcomeLookup.start(lastConfirmed: nil, sentAtMilliseconds: recovered.sinceMilliseconds)
                        record.lookFrom = min(record.lookFrom ?? start, start)
                    }
                    records.append(record)
                    consumed += size
                case .incomplete:
                    break decoding
                case .damaged(let reason):
                    logger.error(
                        "adtelemetry spool: a damaged record; the rest of this segment cannot be read and stays on disk",
                        metadata: ["adtelemetry_spool_segment": "\(path(segment))", "adtelemetry_spool_offset": "\(position + consumed)", "adtelemetry_error": "\(reason)"]
                    )
                    rename(path(segment), path(segment) + ".damaged")
                    return (records, position + consumed)
                }
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

    /// The batch in flight was settled (stored, or given up for good): it is not read again.
    func commit(records: Int) {
        guard let batch = inFlight else { return }
        byteCount -= batch.end - readOffset
        recordCount -= records
        readOffset = batch.end
        inFlight = nil
        if let recovered = recoveredInFlight, readOffset >= recovered.end { recoveredInFlight = nil }
        if segments.count > 1, readOffset >= fileSize(path(segments[0])) { removeOldestSegment() }
        saveProgress()
    }

    /// The batch in flight was not settled (the producer is stopping): it is read again, and
    /// looked up first, on the next start.
    func release() {
        inFlight.map { recoveredInFlight = (max($0.end, recoveredInFlight?.end ?? 0), min($0.sinceMilliseconds, recoveredInFlight?.sinceMilliseconds ?? .max)) }
        inFlight = nil
    }

    private func removeOldestSegment() {
        let oldest = segments.removeFirst()
        unlink(path(oldest))
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
        let text = "\(segments.first ?? 0) \(readOffset) \(end) \(since)\n"
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
        if writeDescriptor >= 0 {
            Glibc.close(writeDescriptor)
            writeDescriptor = -1
        }
        Glibc.close(lockDescriptor)
        executor.shutdown()
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

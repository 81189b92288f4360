import AdTelemetryRecords
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

extension RecordSpool {
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
    func read(maximum: Int) -> (records: [SpooledRecord], end: Int)? {
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
    func readPast(damageAt offset: Int, in descriptor: Int32, recordsBefore: Int) -> Int {
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

    func removeOldestSegment() {
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

    func fileSize(_ path: String) -> Int {
        var status = stat()
        return stat(path, &status) == 0 ? Int(status.st_size) : 0
    }


    /// `<oldest segment> <read offset> <in-flight end> <in flight since, ms>`, replaced atomically.
    func saveProgress() {
        let end = inFlight?.end ?? recoveredInFlight?.end ?? readOffset
        let since = inFlight?.sinceMilliseconds ?? recoveredInFlight?.sinceMilliseconds ?? 0
        let text = "\(segments.first?.number ?? 0) \(readOffset) \(end) \(since)\n"
        let temporary = path("progress.tmp")
        guard FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8)) else { return }
        rename(temporary, path("progress"))
        dirty = true
    }

}

import AdTelemetryRecords
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

extension RecordSpool {
    /// What an earlier run left in the directory.
    struct Recovered {
        var segments: [Segment] = []
        var nextSegment: UInt64
        var readOffset = 0
        var recoveredInFlight: (end: Int, sinceMilliseconds: UInt64)?
        var byteCount = 0
        var unreadable = 0
    }

    /// Makes `directory` if missing and locks it: one producer process per directory, since a
    /// second would interleave its frames with ours. - Returns: The lock's descriptor.
    static func lock(_ directory: String) throws(OpenError) -> Int32 {
        if let code = makeDirectory(directory) { throw .unusable("cannot create \(directory)", errno: code) }
        guard access(directory, W_OK) == 0 else { throw .unusable("cannot write to \(directory)", errno: errno) }
        let lock = open(directory + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0 else { throw .unusable("cannot open \(directory)/lock", errno: errno) }
        guard flock(lock, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            Glibc.close(lock)
            throw .unusable("\(directory) is in use by another producer process (give each its own spool directory)", errno: code)
        }
        return lock
    }

    /// Makes `directory` and its missing parents (as `mkdir -p`). - Returns: nil, or why a step failed.
    private static func makeDirectory(_ directory: String) -> Int32? {
        var path = directory.hasPrefix("/") ? "" : "."
        for component in directory.split(separator: "/") {
            path += "/" + component
            if mkdir(path, 0o777) != 0, errno != EEXIST { return errno }
        }
        return nil
    }

    /// Counts the segments an earlier run left, from where its `progress` says reading goes on:
    /// a torn tail is cut off, damage is counted (``takeUnreadable()``) and read past later.
    static func recover(_ directory: String, logger: Logger) -> Recovered {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let numbers = names.compactMap { name -> UInt64? in
            guard name.hasPrefix("segment-"), name.hasSuffix(".spool") else { return nil }
            return UInt64(name.dropFirst("segment-".count).dropLast(".spool".count))
        }.sorted()
        var found = Recovered(nextSegment: (numbers.last ?? 0) + 1)
        if let progress = try? String(contentsOfFile: directory + "/progress", encoding: .utf8) {
            let fields = progress.split(separator: " ").compactMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if fields.count == 4, fields[0] == numbers.first {
                found.readOffset = Int(fields[1])
                if fields[2] > fields[1] { found.recoveredInFlight = (Int(fields[2]), fields[3]) }
            }
        }
        for number in numbers { scanSegment(number, in: directory, into: &found, logger: logger) }
        return found
    }

    private static func scanSegment(_ number: UInt64, in directory: String, into found: inout Recovered, logger: Logger) {
        let file = path(of: number, in: directory)
        let bytes = FileManager.default.contents(atPath: file).map { [UInt8]($0) } ?? []
        let start = found.segments.isEmpty ? min(found.readOffset, bytes.count) : 0
        if found.segments.isEmpty { found.readOffset = start }
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
            found.unreadable += scan.damagedRecordsEstimate
        }
        found.segments.append(Segment(number: number, records: scan.frames.count))
        found.byteCount += (scan.tornTail ?? bytes.count) - start
    }

    /// Earlier versions renamed a segment with a damaged record to `.damaged` and stopped
    /// reading it, while still writing to it: read it again, past its damage. Its number may have
    /// been given again to a live segment since: then it gets a new one, after all others, and
    /// never replaces a file (`link` refuses an existing name, where `rename` would overwrite).
    static func restoreRenamedSegments(in directory: String, logger: Logger) {
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

    static func path(of segment: UInt64, in directory: String) -> String {
        directory + "/segment-" + String(segment).leftPadded(to: 16) + ".spool"
    }

    nonisolated func path(_ name: String) -> String { directory + "/" + name }
    nonisolated func path(_ segment: UInt64) -> String { Self.path(of: segment, in: directory) }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

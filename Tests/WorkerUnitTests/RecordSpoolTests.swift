@testable import AdTelemetry
import AdTelemetryRecords
import AdWorkerRedis
import Foundation
import Logging
import Testing

@Suite("The producer's spool: frames, order, restarts, bounds")
struct RecordSpoolTests {
    static func record(_ number: UInt64, stream: String = "s:inference", lookFrom: LookupStart? = nil) -> SpooledRecord {
        var command = RedisCommand.streamAdd(to: stream)
        command.writeField("request_id", Array("r-\(number)".utf8))
        return SpooledRecord(stream: stream, command: command, origin: RecordOrigin(instance: 7, sequence: number), lookFrom: lookFrom)
    }

    static func withDirectory<Result>(_ body: (String) async throws -> Result) async throws -> Result {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("adworker-spool-test-\(UInt64.random(in: 0 ... .max))").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try await body(directory)
    }

    static let logger = Logger(label: "spool-test")

    @Test func crc32cMatchesTheStandardCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }

    @Test func framesRoundTripAndATornOrDamagedOneIsNotARecord() {
        var bytes: [UInt8] = []
        SpoolFrame.append(Self.record(1, lookFrom: .entry(StreamEntryID(milliseconds: 5, sequence: 6))), to: &bytes)
        guard case .record(let decoded, let size) = SpoolFrame.decode(bytes[...]) else {
            Issue.record("not decoded")
            return
        }
        #expect(size == bytes.count)
        #expect(decoded.stream == "s:inference" && decoded.origin == RecordOrigin(instance: 7, sequence: 1))
        #expect(decoded.lookFrom == .entry(StreamEntryID(milliseconds: 5, sequence: 6)))
        var hostClock: [UInt8] = []
        SpoolFrame.append(Self.record(2, lookFrom: .sentAt(hostMilliseconds: 1_700_000_000_123)), to: &hostClock)
        guard case .record(let decodedHostClock, _) = SpoolFrame.decode(hostClock[...]) else {
            Issue.record("not decoded")
            return
        }
        #expect(decodedHostClock.lookFrom == .sentAt(hostMilliseconds: 1_700_000_000_123))
        #expect(decoded.command.encoded.resp == Self.record(1).command.encoded.resp)
        #expect(decoded.command.encoded.argumentCount == 5)
        guard case .incomplete = SpoolFrame.decode(bytes.dropLast()) else {
            Issue.record("a torn frame decoded")
            return
        }
        var flipped = bytes
        flipped[bytes.count - 3] ^= 0x01
        guard case .damaged = SpoolFrame.decode(flipped[...]) else {
            Issue.record("a damaged frame decoded")
            return
        }
    }

    @Test func recordsComeBackInOrderOnceEachAcrossRestarts() async throws {
        try await Self.withDirectory { directory in
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger) { spool in
                #expect(await spool.append((1...10).map { Self.record($0) }).refused == 0)
                #expect(await spool.recordCount == 10)
                let first = await spool.takeBatch(maximum: 4, nowMilliseconds: 1_000_000)
                #expect(first.map(\.origin.sequence) == [1, 2, 3, 4])
                #expect(first.allSatisfy { $0.lookFrom == nil })
                // One batch at a time.
                #expect(await spool.takeBatch(maximum: 4, nowMilliseconds: 1_000_000).isEmpty)
                await spool.commit(records: first.count)
                let second = await spool.takeBatch(maximum: 4, nowMilliseconds: 2_000_000)
                #expect(second.map(\.origin.sequence) == [5, 6, 7, 8])
            }

            // The process stopped with the second batch in flight: it comes back, to be looked up first.
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger) { reopened in
                #expect(await reopened.recordCount == 6)
                let again = await reopened.takeBatch(maximum: 10, nowMilliseconds: 3_000_000)
                #expect(again.map(\.origin.sequence) == [5, 6, 7, 8, 9, 10])
                // By the host's clock when it was handed out: the producer turns it into Redis's clock.
                #expect(again.prefix(4).allSatisfy { $0.lookFrom == .sentAt(hostMilliseconds: 2_000_000) })
                #expect(again.suffix(2).allSatisfy { $0.lookFrom == nil })
                await reopened.commit(records: again.count)
                #expect(await reopened.recordCount == 0)
                #expect(await reopened.byteCount == 0)
            }
        }
    }

    @Test func theByteBoundRefusesAndATornTailIsCutOff() async throws {
        try await Self.withDirectory { directory in
            var one: [UInt8] = []
            SpoolFrame.append(Self.record(1), to: &one)
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: one.count * 3, logger: Self.logger) { spool in
                #expect(await spool.append((1...5).map { Self.record($0) }) == .init(appended: 3, refused: 2, refusal: .full(maximumBytes: one.count * 3)))
                #expect(await spool.recordCount == 3)
            }
            // A crash while writing a fourth record leaves half a frame.
            let segment = directory + "/segment-0000000000000001.spool"
            let handle = try #require(FileHandle(forWritingAtPath: segment))
            handle.seekToEndOfFile()
            handle.write(Data(one.prefix(one.count / 2)))
            handle.closeFile()
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: one.count * 3, logger: Self.logger) { reopened in
                #expect(await reopened.recordCount == 3)
                #expect(await reopened.takeBatch(maximum: 10, nowMilliseconds: 0).map(\.origin.sequence) == [1, 2, 3])
            }
        }
    }

    @Test func sentSegmentsAreRemoved() async throws {
        try await Self.withDirectory { directory in
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, segmentLimit: 200, logger: Self.logger) { spool in
                for number in 1...12 { #expect(await spool.append([Self.record(UInt64(number))]).refused == 0) }
                let segments = { (try? FileManager.default.contentsOfDirectory(atPath: directory))?.filter { $0.hasSuffix(".spool") }.count ?? 0 }
                #expect(segments() > 3)
                var read: [UInt64] = []
                while true {
                    let batch = await spool.takeBatch(maximum: 5, nowMilliseconds: 0)
                    if batch.isEmpty { break }
                    read += batch.map(\.origin.sequence)
                    await spool.commit(records: batch.count)
                }
                #expect(read == Array(1...12))
                // All sent: the last segment goes too, so a full disk gets its space back.
                #expect(segments() == 0)
                #expect(await spool.recordCount == 0)
            }
        }
    }

    @Test func aSecondProducerOnTheSameDirectoryIsRefused() async throws {
        try await Self.withDirectory { directory in
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger) { _ in
                _ = await #expect(throws: RecordSpool.OpenError.self) { try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger) { _ in } }
            }
        }
    }

    @Test func aDirectoryThatCannotBeMadeIsRefusedWithTheSystemsReason() async throws {
        try await Self.withDirectory { directory in
            // A file where a parent directory should be: ENOTDIR, not a permission problem.
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: directory + "/file", contents: Data())
            do {
                try await RecordSpool.withRecordSpool(directory: directory + "/file/spool", maximumBytes: 1 << 20, logger: Self.logger) { _ in }
                Issue.record("a spool under a file was opened")
            } catch let error as RecordSpool.OpenError {
                guard case .unusable(_, let code) = error else { return }
                #expect(code == ENOTDIR)
            }
        }
    }

    static let segmentName = "segment-0000000000000001.spool"

    /// Reads and commits batches until the spool hands out no more. - Returns: the sequences read.
    static func drain(_ spool: RecordSpool, batch: Int = 4) async -> [UInt64] {
        var read: [UInt64] = []
        while true {
            let records = await spool.takeBatch(maximum: batch, nowMilliseconds: 0)
            if records.isEmpty { return read }
            read += records.map(\.origin.sequence)
            await spool.commit(records: records.count)
        }
    }

    static func frameSize(_ number: UInt64) -> Int {
        var bytes: [UInt8] = []
        SpoolFrame.append(record(number), to: &bytes)
        return bytes.count
    }

    /// Flips `count` bytes of a file from `offset` on.
    static func flip(_ path: String, at offset: Int, count: Int = 1) throws {
        var bytes = [UInt8](try #require(FileManager.default.contents(atPath: path)))
        for index in offset..<(offset + count) { bytes[index] ^= 0x5A }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    @Test func aDamagedRecordInTheSegmentBeingWrittenIsReadPastCountedAndLaterRecordsStillArrive() async throws {
        try await Self.withDirectory { directory in
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger) { spool in
                #expect(await spool.append((1...10).map { Self.record($0) }).refused == 0)
                // One byte of the third record's payload flips while the segment is still being written.
                let size = Self.frameSize(1)
                try Self.flip(directory + "/" + Self.segmentName, at: 2 * size + 20)
                #expect(await spool.append((11...12).map { Self.record($0) }).refused == 0)
                #expect(await Self.drain(spool) == [1, 2] + Array(4...12))
                #expect(await spool.takeUnreadable() == 1)
                #expect(await spool.takeUnreadable() == 0)
                #expect(await spool.recordCount == 0)
                #expect(await spool.byteCount == 0)
                // Records spooled after the damage are read, from a new segment.
                #expect(await spool.append((13...14).map { Self.record($0) }).refused == 0)
                #expect(!FileManager.default.fileExists(atPath: directory + "/" + Self.segmentName))
                #expect(await Self.drain(spool) == [13, 14])
                #expect(await spool.recordCount == 0)
                #expect(await spool.byteCount == 0)
            }
        }
    }

    @Test func aDamagedLengthIsReadPastByFindingTheNextWholeRecord() async throws {
        try await Self.withDirectory { directory in
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger) { spool in
                #expect(await spool.append((1...10).map { Self.record($0) }).refused == 0)
                try Self.flip(directory + "/" + Self.segmentName, at: 4 * Self.frameSize(1) + 1, count: 2)
                #expect(await Self.drain(spool, batch: 100) == [1, 2, 3, 4] + Array(6...10))
                #expect(await spool.takeUnreadable() == 1)
                #expect(await spool.recordCount == 0)
                #expect(await spool.byteCount == 0)
            }
        }
    }

    @Test func damageFoundOnOpeningIsReadPastAndTheRestOfTheSegmentKept() async throws {
        try await Self.withDirectory { directory in
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger) { spool in
                #expect(await spool.append((1...300).map { Self.record($0) }).refused == 0)
            }
            // 16 bytes in the middle of record 150.
            try Self.flip(directory + "/" + Self.segmentName, at: (1..<150).reduce(0) { $0 + Self.frameSize($1) } + 12, count: 16)
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger) { reopened in
                #expect(await reopened.recordCount == 299)
                #expect(await reopened.takeUnreadable() == 1)
                #expect(await Self.drain(reopened, batch: 64) == Array(1...149) + Array(151...300))
                #expect(await reopened.recordCount == 0)
                #expect(await reopened.byteCount == 0)
            }
        }
    }

    @Test func onlyATailThatRunsPastTheEndOfTheFileIsCutOff() {
        var bytes: [UInt8] = []
        for number: UInt64 in 1...5 { SpoolFrame.append(Self.record(number), to: &bytes) }
        let size = Self.frameSize(1)
        #expect(SpoolScan(bytes) == SpoolScan(frames: (0..<5).map { $0 * size }))
        // A crash while writing a sixth record.
        var torn = bytes
        SpoolFrame.append(Self.record(6), to: &torn)
        torn.removeLast(3)
        #expect(SpoolScan(torn) == SpoolScan(frames: (0..<5).map { $0 * size }, tornTail: 5 * size))
        // The second record's length flipped to run past the end: records after it are no torn tail.
        var longLength = bytes
        longLength[size + 2] = 0x40
        let scan = SpoolScan(longLength)
        #expect(scan.frames == [0, 2 * size, 3 * size, 4 * size] && scan.tornTail == nil)
        #expect(scan.damaged == [size..<(2 * size)] && scan.damagedRecordsEstimate == 1)
        // A complete last record whose checksum fails is damage, not a torn write.
        var lastDamaged = bytes
        lastDamaged[bytes.count - 2] ^= 1
        #expect(SpoolScan(lastDamaged) == SpoolScan(frames: (0..<4).map { $0 * size }, damaged: [(4 * size)..<(5 * size)], damagedRecordsEstimate: 1))
    }

    @Test func aSegmentSetAsideByAnEarlierVersionIsReadAgain() async throws {
        try await Self.withDirectory { directory in
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger) { spool in
                #expect(await spool.append((1...6).map { Self.record($0) }).refused == 0)
            }
            try Self.flip(directory + "/" + Self.segmentName, at: 2 * Self.frameSize(1) + 30)
            try FileManager.default.moveItem(atPath: directory + "/" + Self.segmentName, toPath: directory + "/" + Self.segmentName + ".damaged")
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger) { reopened in
                #expect(await Self.drain(reopened) == [1, 2, 4, 5, 6])
            }
        }
    }

    @Test func aSetAsideSegmentWhoseNumberWasGivenAgainIsRestoredBesideItNotOverIt() async throws {
        try await Self.withDirectory { directory in
            // As an earlier version left it: segment 1 set aside, then a new segment 1 begun.
            for (suffix, numbers) in [(".damaged", 1...3), ("", 4...5)] as [(String, ClosedRange<UInt64>)] {
                let other = directory + "-" + (suffix.isEmpty ? "live" : "aside")
                defer { try? FileManager.default.removeItem(atPath: other) }
                try await RecordSpool.withRecordSpool(directory: other, maximumBytes: 1 << 20, logger: Self.logger) { spool in
                    #expect(await spool.append(numbers.map { Self.record($0) }).refused == 0)
                }
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                try FileManager.default.copyItem(atPath: other + "/" + Self.segmentName, toPath: directory + "/" + Self.segmentName + suffix)
            }
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger) { spool in
                #expect(await spool.recordCount == 5)
                #expect(await Self.drain(spool) == [4, 5, 1, 2, 3])
            }
        }
    }

    /// A spool on a 64 KiB tmpfs, a disk that fills up for real (mounting needs root, as CI has).
    static func withFullDisk(_ body: (String) async throws -> Void) async throws {
        try await withDirectory { directory in
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            func run(_ arguments: [String]) throws -> Int32 {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/bin/" + arguments[0])
                process.arguments = Array(arguments.dropFirst())
                try process.run()
                process.waitUntilExit()
                return process.terminationStatus
            }
            try #require(try run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", directory]) == 0, "mounting a tmpfs needs root")
            defer { _ = try? run(["umount", directory]) }
            try await body(directory + "/spool")
        }
    }

    @Test func aFullDiskRefusesWholeRequestsNamesTheCauseAndGivesItsSpaceBackOnceSent() async throws {
        try await Self.withFullDisk { directory in
            let many = try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 30, logger: Self.logger) { spool in
                func fill(from first: UInt64) async -> (accepted: [UInt64], refusal: RecordSpool.Refusal?) {
                    var accepted: [UInt64] = []
                    var number = first
                    while true {
                        // One API request: its two records together or not at all.
                        let outcome = await spool.append([Self.record(number), Self.record(number + 1)], allOrNothing: true)
                        guard outcome.refused == 0 else {
                            #expect(outcome.appended == 0 && outcome.refused == 2)
                            return (accepted, outcome.refusal)
                        }
                        accepted += [number, number + 1]
                        number += 2
                    }
                }
                let first = await fill(from: 1)
                #expect(first.refusal == .unwritable(errno: ENOSPC))
                #expect(first.accepted.count > 100)
                // Exactly the accepted records wait: no half-written one, counts never below zero.
                #expect(await spool.recordCount == first.accepted.count)
                #expect(await Self.drain(spool, batch: 50) == first.accepted)
                #expect(await spool.recordCount == 0)
                #expect(await spool.byteCount == 0)
                // Sent, the space is back: a second outage spools as much as the first.
                let second = await fill(from: 1_000_001)
                #expect(second.refusal == .unwritable(errno: ENOSPC))
                // (Less the progress file's page, written since.)
                #expect(second.accepted.count * 10 >= first.accepted.count * 9)
                // Records kept one by one (given up by the producer): as many as fit, none torn.
                #expect(await Self.drain(spool, batch: 50) == second.accepted)
                let many = await spool.append((2_000_001...2_002_000).map { Self.record($0) })
                #expect(many.appended > 0 && many.appended + many.refused == 2000 && many.refusal == .unwritable(errno: ENOSPC))
                return many
            }
            try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: 1 << 30, logger: Self.logger) { reopened in
                #expect(await reopened.recordCount == many.appended)
                #expect(await reopened.takeUnreadable() == 0)
                #expect(await Self.drain(reopened, batch: 100) == Array(2_000_001...(2_000_000 + UInt64(many.appended))))
            }
        }
    }
}

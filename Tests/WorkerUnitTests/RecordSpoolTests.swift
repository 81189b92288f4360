@testable import AdTelemetry
import AdTelemetryRecords
import AdWorkerRedis
import Foundation
import Logging
import Testing

@Suite("The producer's spool: frames, order, restarts, bounds")
struct RecordSpoolTests {
    static func record(_ number: UInt64, stream: String = "s:inference", lookFrom: StreamEntryID? = nil) -> SpooledRecord {
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
        SpoolFrame.append(Self.record(1, lookFrom: StreamEntryID(milliseconds: 5, sequence: 6)), to: &bytes)
        guard case .record(let decoded, let size) = SpoolFrame.decode(bytes[...]) else {
            Issue.record("not decoded")
            return
        }
        #expect(size == bytes.count)
        #expect(decoded.stream == "s:inference" && decoded.origin == RecordOrigin(instance: 7, sequence: 1))
        #expect(decoded.lookFrom == StreamEntryID(milliseconds: 5, sequence: 6))
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
            let spool = try RecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger)
            #expect(await spool.append((1...10).map { Self.record($0) }) == 0)
            #expect(await spool.recordCount == 10)
            let first = await spool.takeBatch(maximum: 4, nowMilliseconds: 1_000_000)
            #expect(first.map(\.origin.sequence) == [1, 2, 3, 4])
            #expect(first.allSatisfy { $0.lookFrom == nil })
            // One batch at a time.
            #expect(await spool.takeBatch(maximum: 4, nowMilliseconds: 1_000_000).isEmpty)
            await spool.commit(records: first.count)
            let second = await spool.takeBatch(maximum: 4, nowMilliseconds: 2_000_000)
            #expect(second.map(\.origin.sequence) == [5, 6, 7, 8])
            await spool.finish()

            // The process stopped with the second batch in flight: it comes back, to be looked up first.
            let reopened = try RecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger)
            #expect(await reopened.recordCount == 6)
            let again = await reopened.takeBatch(maximum: 10, nowMilliseconds: 3_000_000)
            #expect(again.map(\.origin.sequence) == [5, 6, 7, 8, 9, 10])
            #expect(again.prefix(4).allSatisfy { $0.lookFrom == StreamEntryID(milliseconds: 2_000_000 - 5000, sequence: 0) })
            #expect(again.suffix(2).allSatisfy { $0.lookFrom == nil })
            await reopened.commit(records: again.count)
            #expect(await reopened.recordCount == 0)
            #expect(await reopened.byteCount == 0)
            await reopened.finish()
        }
    }

    @Test func theByteBoundRefusesAndATornTailIsCutOff() async throws {
        try await Self.withDirectory { directory in
            var one: [UInt8] = []
            SpoolFrame.append(Self.record(1), to: &one)
            let spool = try RecordSpool(directory: directory, maximumBytes: one.count * 3, logger: Self.logger)
            #expect(await spool.append((1...5).map { Self.record($0) }) == 2)
            #expect(await spool.recordCount == 3)
            await spool.finish()
            // A crash while writing a fourth record leaves half a frame.
            let segment = directory + "/segment-0000000000000001.spool"
            let handle = try #require(FileHandle(forWritingAtPath: segment))
            handle.seekToEndOfFile()
            handle.write(Data(one.prefix(one.count / 2)))
            handle.closeFile()
            let reopened = try RecordSpool(directory: directory, maximumBytes: one.count * 3, logger: Self.logger)
            #expect(await reopened.recordCount == 3)
            #expect(await reopened.takeBatch(maximum: 10, nowMilliseconds: 0).map(\.origin.sequence) == [1, 2, 3])
            await reopened.finish()
        }
    }

    @Test func sentSegmentsAreRemoved() async throws {
        try await Self.withDirectory { directory in
            let spool = try RecordSpool(directory: directory, maximumBytes: 1 << 20, segmentLimit: 200, logger: Self.logger)
            for number in 1...12 { #expect(await spool.append([Self.record(UInt64(number))]) == 0) }
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
            #expect(segments() == 1)
            #expect(await spool.recordCount == 0)
            await spool.finish()
        }
    }

    @Test func aSecondProducerOnTheSameDirectoryIsRefused() async throws {
        try await Self.withDirectory { directory in
            let spool = try RecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger)
            #expect(throws: RecordSpool.OpenError.self) { try RecordSpool(directory: directory, maximumBytes: 1 << 20, logger: Self.logger) }
            await spool.finish()
        }
    }
}

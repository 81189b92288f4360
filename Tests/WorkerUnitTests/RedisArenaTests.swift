import CAdWorkerHiredis
import CAdWorkerRedisArena
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The arena reply path (XREADGROUP, XAUTOCLAIM) parses into one reused buffer through hiredis's
/// reader, a reply possibly over many reads. No server: the bytes are fed to the reader by hand,
/// so a reply cut at an exact point is reproducible.
@Suite("Replies parsed into the arena")
struct RedisArenaTests {
    /// A connection given up mid-reply (a timeout, a server gone) is freed with hiredis's reader
    /// holding the unfinished reply's root, and hiredis frees that root with its own functions: the
    /// root must never be the arena (it was: freed under the connection, then freed again by it,
    /// and glibc aborted the process).
    @Test func aReplyCutMidWayLeavesTheReaderNothingToFree() throws {
        let parsed = try Self.parse(["*2\r\n$3\r\nabc\r\n"])
        #expect(parsed.complete == [false])
        #expect(parsed.heldByReader == [false], "hiredis holds the arena as its unfinished reply")
    }

    /// The same reply fed in three parts comes out whole, as it does in one.
    @Test func aReplyOverSeveralReadsIsParsedWhole() throws {
        let parts = try Self.parse(["*2\r\n$3\r\nab", "c\r\n$2", "\r\nde\r\n"])
        #expect(parts.complete == [false, false, true])
        #expect(parts.heldByReader == [false, false, false])
        #expect(parts.tokens == [.init(REDIS_REPLY_ARRAY, 2), .init(REDIS_REPLY_STRING, "abc"), .init(REDIS_REPLY_STRING, "de")])
        let whole = try Self.parse(["*2\r\n$3\r\nabc\r\n$2\r\nde\r\n"])
        #expect(whole.tokens == parts.tokens)
    }

    struct Token: Equatable {
        var type: Int32
        var elements: Int32 = 0
        var text = ""
        init(_ type: Int32, _ elements: Int32) { (self.type, self.elements) = (type, elements) }
        init(_ type: Int32, _ text: String) { (self.type, self.text) = (type, text) }
    }

    /// Feeds `parts` one by one, parsing after each as the connection does, then frees the context
    /// and the arena as the connection does when it is given up.
    static func parse(_ parts: [String]) throws -> (complete: [Bool], heldByReader: [Bool], tokens: [Token]) {
        var pipeEnds: [Int32] = [0, 0]
        try #require(pipe(&pipeEnds) == 0)
        defer { close(pipeEnds[1]) }
        let context = try #require(redisConnectFd(pipeEnds[0]))
        let arena = UnsafeMutablePointer<adw_arena>.allocate(capacity: 1)
        arena.initialize(to: adw_arena())
        defer {
            // A reader still holding the arena would free it here and the process abort: detach
            // it, so that such a regression fails the expectation above instead of the whole run.
            context.pointee.reader.pointee.reply = nil
            redisFree(context)
            adw_arena_free(arena)
            arena.deallocate()
        }
        var complete: [Bool] = []
        var held: [Bool] = []
        for part in parts {
            _ = part.withCString { redisReaderFeed(context.pointee.reader, $0, strlen($0)) }
            var done: Int32 = 0
            try #require(adw_arena_reply_from_reader(context, arena, &done) == REDIS_OK)
            complete.append(done != 0)
            held.append(context.pointee.reader.pointee.reply != nil)
        }
        let tokens = UnsafeBufferPointer(start: arena.pointee.tokens, count: arena.pointee.count).map { token -> Token in
            guard token.type != REDIS_REPLY_ARRAY else { return Token(token.type, token.elements) }
            let bytes = UnsafeBufferPointer(start: arena.pointee.bytes.advanced(by: Int(token.offset)), count: Int(token.length))
            return Token(token.type, String(decoding: bytes, as: UTF8.self))
        }
        return (complete, held, tokens)
    }
}

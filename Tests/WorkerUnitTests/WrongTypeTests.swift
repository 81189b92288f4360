@testable import AdWorkerCore
import AdWorkerRedis
import Testing

/// A key that holds another type than a stream is a code, classified where the reply arrives,
/// and a permanent failure that says what to change.
@Suite struct WrongTypeTests {
    @Test func aWrongTypeReplyIsClassifiedAsItsOwnCode() {
        #expect(RedisError.fromReply("WRONGTYPE Operation against a key holding the wrong kind of value").code == .wrongType)
        #expect(RedisError.fromReply("WRONGTYPE Operation against a key holding the wrong kind of value script: 0ee5, on @user_script:1.").code == .wrongType)
        #expect(!RedisError.fromReply("WRONGTYPE x").isTransient)
    }

    @Test func aWrongTypeIsAPermanentFailureThatNamesTheKeyAndTheFix() throws {
        let failure = try #require(PermanentFailure(RedisError(.wrongType, "key adserving:training is not a stream (WRONGTYPE)")))
        #expect(failure.kind == .redisWrongType && failure.kind.rawValue == "wrongType")
        #expect(failure.fix.hasPrefix("key adserving:training is not a stream (WRONGTYPE): rename or delete that key"))
        #expect(failure.fix.contains("ADWORKER_STREAM_PREFIX"))
    }
}

import AdTelemetryRecords
import AdWorkerConnectionThread
@testable import AdWorkerCore
@testable import AdWorkerPostgres
import AdWorkerRedis
import Testing

@Suite("Backoff")
struct BackoffTests {
    struct Fixed: RandomNumberGenerator {
        var value: UInt64
        mutating func next() -> UInt64 { value }
    }

    @Test func doublesUpToTheMaximumWithJitterInTheUpperHalf() {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        var highest = Fixed(value: .max)
        let delays = (0..<6).map { _ in backoff.nextDelay(using: &highest) }
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)])
        var lowest = Fixed(value: 0)
        var fresh = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        #expect(fresh.nextDelay(using: &lowest) == .milliseconds(50))
    }
}

@Suite("Dead letters")
struct DeadLetterTests {
    @Test func replayRecoversTheOriginalFieldsByteForByte() {
        let original = StreamFields([("v", "1"), ("model", "m"), ("dead.note", "kept: it follows an original field")])
        let letter = DeadLetter(entry: StreamEntry(id: StreamEntryID(milliseconds: 7, sequence: 1), fields: original), reason: "invalid_json: input", code: .undecodable(.invalidJSON), sqlState: "22P02", deliveries: 2)
        let written = letter.fields(from: "s", at: Timestamp(millisecondsSinceEpoch: 9))
        #expect(written.value(of: DeadLetter.Field.deliveries).map { Array($0) } == Array("2".utf8))
        #expect(written.value(of: DeadLetter.Field.sqlState).map { Array($0) } == Array("22P02".utf8))
        func pairs(_ fields: StreamFields) -> [[UInt8]] { fields.flatMap { [Array($0.name), Array($0.value)] } }
        #expect(pairs(DeadLetter.originalFields(of: written)) == pairs(original))
    }
}

@Suite("Error labels")
struct ErrorLabelTests {
    /// Metric labels come from codes set at the C boundary, never from an error's text (which may
    /// hold a server's message): bounded, and the same whatever the message says.
    @Test func labelsAreCodesAndSQLStates() {
        let refused = PostgresError(.dataError, "the server refused a value (really)", sqlState: "22P02")
        #expect(StreamMetrics.errorLabels(refused).map { "\($0.0)=\($0.1)" } == ["kind=dataError", "sqlstate=22P02"])
        let lost = PostgresError(.connectionLost, "server closed the connection unexpectedly")
        #expect(StreamMetrics.errorLabels(lost).map { "\($0.0)=\($0.1)" } == ["kind=connectionLost", "sqlstate=none"])
        let full = RedisError.fromReply("OOM command not allowed when used memory > 'maxmemory'.")
        #expect(StreamMetrics.errorLabels(full).map { "\($0.0)=\($0.1)" } == ["kind=outOfMemory"])
        #expect(StreamMetrics.errorLabels(CancellationError()).map { "\($0.0)=\($0.1)" } == ["kind=other"])
    }
}

@Suite struct PermanentFailureTests {
    @Test func connectionSQLStateIsTheCodeFieldOfLibpqsVerboseMessage() {
        #expect(PostgresConnection.connectionSQLState(in: #"connection to server at "127.0.0.1", port 5432 failed: FATAL:  28P01: password authentication failed for user "a""#) == "28P01")
        #expect(PostgresConnection.connectionSQLState(in: "connection to server at \"h\", port 5432 failed: FATAL:  3D000: database \"x\" does not exist\nLOCATION:  InitPostgres, postinit.c:948") == "3D000")
        #expect(PostgresConnection.connectionSQLState(in: "connection to server at \"127.0.0.1\", port 1 failed: Connection refused") == nil)
        #expect(PostgresConnection.connectionSQLState(in: "failed: FATAL:  lowercase: no code") == nil)
    }

    @Test func onlyFailuresThatNeedAChangeArePermanent() {
        #expect(PermanentFailure(PostgresError(.serverError, "x", sqlState: "42P01"))?.fix.hasSuffix("run adworker migrate") == true)
        #expect(PermanentFailure(PostgresError(.connectionFailed, "x", sqlState: "28P01"))?.kind == .invalidPassword)
        #expect(PermanentFailure(PostgresError(.serverError, "x", sqlState: "42501"))?.fix.contains("worker-role.sql") == true)
        #expect(PermanentFailure(PostgresError(.connectionLost, "x", sqlState: "57P01")) == nil)
        #expect(PermanentFailure(PostgresError(.connectionFailed, "refused")) == nil)
        #expect(PermanentFailure(RedisError.fromReply("NOPERM User w has no permissions to run the 'xadd' command"))?.kind == .redisNoPermission)
        #expect(PermanentFailure(RedisError.fromReply("WRONGPASS invalid username-password pair"))?.refusesStartup == true)
        #expect(PermanentFailure(RedisError.fromReply("OOM command not allowed"))?.refusesStartup == false)
        #expect(PermanentFailure(RedisError.fromReply("LOADING Redis is loading")) == nil)
        #expect(PermanentFailure(RedisError(.connectionFailed, "refused")) == nil)
    }

    /// Under Sentinel, a demoted primary's READONLY passes (the connection asks the sentinels
    /// again), while a master name no sentinel knows needs a change.
    @Test func sentinelFailuresAreTransientOrPermanentAsTheyNeed() {
        let demoted = RedisError.fromReply("READONLY You can't write against a read only replica.")
        #expect(demoted.code == .readOnlyReplica && demoted.isTransient)
        #expect(PermanentFailure(demoted) == nil)
        let unknown = PermanentFailure(RedisError(.unknownMaster, "sentinel 10.0.0.1:26379 knows no master named x"))
        #expect(unknown?.kind == .redisUnknownMaster && unknown?.refusesStartup == true)
    }

    /// A TLS refusal is one whichever server made it, and is labelled alike in the metric.
    @Test func postgreSQLTLSRefusalsArePermanentAndLabelledAsRedisOnesAre() {
        let rejected = PermanentFailure(PostgresError(.tlsCertificateRejected, "set DATABASE_SSLROOTCERT"))
        #expect(rejected?.kind == .postgresTLSCertificateRejected && rejected?.refusesStartup == true)
        #expect(rejected?.kind.label == PermanentFailure.Kind.redisTLSCertificateRejected.label)
        #expect(PermanentFailure(PostgresError(.tlsNotOffered, "ssl = off"))?.kind.label == "tlsNotOffered")
        #expect(PermanentFailure(PostgresError(.tlsHandshakeFailed, "certificate expired"))?.fix == "PostgreSQL TLS: certificate expired")
    }
}

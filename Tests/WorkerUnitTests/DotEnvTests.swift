@testable import AdWorkerCore
import Testing

/// The `.env` file as the CLI reads it: settings the template and docker-compose style files write.
@Suite struct DotEnvTests {
    @Test func commentsBlankLinesExportAndQuotesAreHandledAsShellFilesWriteThem() throws {
        let text = """
            # Redis
            REDIS_HOST=redis.internal

            export REDIS_PORT = 6380
              DATABASE_PASSWORD="two words # not a comment"
            DATABASE_USER='adworker'
            ADWORKER_STREAM_PREFIX=
            """
        #expect(try DotEnv.parse(text) == [
            "REDIS_HOST": "redis.internal", "REDIS_PORT": "6380", "DATABASE_PASSWORD": "two words # not a comment",
            "DATABASE_USER": "adworker", "ADWORKER_STREAM_PREFIX": "",
        ])
    }

    @Test func aValueKeepsEveryEqualsSignAfterTheFirstAndQuotesThatDoNotPair() throws {
        let values = try DotEnv.parse("DATABASE_URL=postgresql://u:p@h/db?sslmode=require\nA=\"open\nB='\nC=\"mixed'")
        #expect(values == ["DATABASE_URL": "postgresql://u:p@h/db?sslmode=require", "A": "\"open", "B": "'", "C": "\"mixed'"])
    }

    @Test func aLaterLineWinsOverAnEarlierOne() throws {
        #expect(try DotEnv.parse("REDIS_PORT=1\nREDIS_PORT=2\n") == ["REDIS_PORT": "2"])
    }

    /// A file saved with Windows line endings: "\r\n" is one Character in Swift, not a "\n".
    @Test func linesEndedWithCarriageReturnAndLineFeedAreSeparateLines() throws {
        #expect(try DotEnv.parse("REDIS_HOST=redis\r\nREDIS_PORT=6380\r\n") == ["REDIS_HOST": "redis", "REDIS_PORT": "6380"])
    }

    @Test func aLineThatIsNotKeyValueIsRefusedByItsNumber() {
        #expect(throws: DotEnv.SyntaxError(line: 3)) { try DotEnv.parse("# settings\nA=1\nREDIS_HOST redis\nB=2") }
        #expect("\(DotEnv.SyntaxError(line: 3))" == ".env line 3 is not KEY=VALUE")
    }
}

import AdTelemetryRecords
import Testing

@testable import AdWorkerPostgres

/// A malformed DATABASE_URL is refused before connecting, with the part at fault named and none of
/// the text quoted: libpq's own reason quotes a password with a bare '%' whole, and a word of a
/// conninfo value with a space.
@Suite("Connection strings")
struct ConnectionStringTests {
    /// Every case hides this password (split after its fourth character where the case needs a
    /// separator), so a leak of any piece of four characters or more shows.
    static let secret = "Zq7Wv9Xk"

    static func pieces(of secret: String) -> [String] {
        let characters = Array(secret)
        return (0...(characters.count - 4)).map { String(characters[$0..<($0 + 4)]) }
    }

    @Test(arguments: [
        ("postgresql://u:Zq7W%v9Xk@h/db", "URL: the password has a '%' not followed by two hex digits (write a '%' itself as %25)"),
        ("postgres://u:Zq7Wv9Xk%@h/db", "URL: the password has a '%' not followed by two hex digits"),
        ("postgresql://u:Zq7Wv9Xk%4@h/db", "URL: the password has a '%' not followed by two hex digits"),
        ("postgresql://u:Zq7W%00v9Xk@h/db", "URL: the password has %00"),
        ("postgresql://Zq7W%zzv9Xk@h/db", "URL: the user name has a '%'"),
        ("postgresql://u@Zq7W%v9Xk/db", "URL: the host has a '%'"),
        ("postgresql://u@h:Zq7W%v9Xk/db", "URL: the port has a '%'"),
        ("postgresql://u@h/Zq7W%v9Xk", "URL: the database name has a '%'"),
        ("postgresql://u@h/db?password=Zq7W%v9Xk", "URL: the value of query parameter 'password' has a '%'"),
        ("postgresql://u@h/db?sslmode=require&password=Zq7W=v9Xk", "URL: the value of query parameter 'password' has an '=' (write it as %3D)"),
        ("postgresql://u@h/db?sslmode=require&Zq7Wv9Xk", "URL: query parameter 2 has no '='"),
        ("postgresql://u@h/db?Zq7Wv9Xk=1", "URL: query parameter 1 is not a libpq connection option"),
        ("postgresql://u@h/db?Zq7W%v9Xk=1", "URL: the name of query parameter 1 has a '%'"),
        ("postgresql://u:Zq7Wv9Xk@[::1/db", "URL: the host opens an IPv6 address with '[' and never closes it"),
        ("postgresql://u:Zq7Wv9Xk@[]/db", "URL: the host has an empty IPv6 address"),
        ("postgresql://u:Zq7Wv9Xk@[::1]x/db", "URL: an IPv6 address in '[...]' is followed by something other than"),
        ("postgresql://u:Zq7W@v9Xk@h/db", "URL: the host has an '@' (write an '@' in the user name or password as %40)"),
        ("postgresql://u:Zq7W/v9Xk@h/db", "URL: the port is not a number (write a '/' in the password as %2F)"),
        ("POSTGRES://u:Zq7Wv9Xk@h/db", "URL: it starts with neither postgresql:// nor postgres://"),
        ("POSTGRES://u:Zq7Wv9Xk@h/db?sslmode=disable", "URL: it starts with neither postgresql:// nor postgres://"),
        ("host=h password=Zq7W v9Xk", "conninfo string: a word after the value of 'password' has no '=' (put a value with a space in single quotes)"),
        ("host=h password=Zq7W v9Xk=x dbname=db", "conninfo string: a keyword after the value of 'password' is not a libpq connection option"),
        ("host=h password='Zq7Wv9Xk", "conninfo string: the value of 'password' opens a single quote and never closes it"),
        ("host=h password='Zq7Wv9Xk\\'", "conninfo string: the value of 'password' opens a single quote and never closes it"),
        ("Zq7Wv9Xk", "conninfo string: word 1 has no '='"),
        ("Zq7Wv9Xk=1", "conninfo string: keyword 1 is not a libpq connection option"),
        ("host=Zq7W@v9Xk", "conninfo string: the host has an '@'"),
        ("port=Zq7Wv9Xk", "conninfo string: the port is not a number"),
    ])
    func aMalformedURLIsRefusedNamingThePartWithoutQuotingAnyOfIt(url: String, reason: String) throws {
        let error = try #require(throws: PostgresError.self) { try PostgresConfiguration.inspect(url: url) }
        #expect(error.code == .invalidConfiguration)
        #expect(error.description.contains("DATABASE_URL is not a valid PostgreSQL \(reason)"), "\(error)")
        for piece in Self.pieces(of: Self.secret) {
            #expect(!error.description.contains(piece), "\(error) quotes '\(piece)'")
        }
    }

    @Test(arguments: [
        "postgresql://u:p%40ss%2Fw%25rd@h:5432,h2:5433/db?sslmode=disable&ssl=true&requiressl=0",
        "postgres://u:pa ss?#&=@h/db", "postgresql://", "postgresql://h?", "postgresql://h/db?application_name=a&",
        "postgresql://[::1]:5432/db", "postgresql:///db?host=/var/run/postgresql", "postgresql://u@%2Frun%2Fa@b/db",
        "host=h password='a b\\' c' requiressl=1", "host=/run/a@b port=' 5432 '", "host=@abstract", "dbname=a\\ b", "",
    ])
    func aWellFormedURLOrConninfoIsTaken(url: String) throws {
        _ = try PostgresConfiguration.inspect(url: url)
    }

    /// Strings of the characters libpq's parsers treat specially: whenever libpq refuses one, the
    /// reason is found (not "cannot parse it"), and whenever libpq takes one, no reason is found.
    @Test func theReasonIsFoundExactlyWhenLibpqRefuses() {
        var random = SplitMix64(seed: 12)
        let alphabet = "%:@/[]?=&,' \\aF0".map(String.init) + ["%4", "%00", "%2F", "host=", "password=", "port=", "sslmode="]
        let keywords = PostgresConfiguration.keywords
        var refused = 0
        for _ in 0..<20_000 {
            var text = ["postgresql://", "postgres://", "", "host=h "][Int(random.next() % 4)]
            for _ in 0..<(random.next() % 12) { text += String(alphabet[Int(random.next() % UInt64(alphabet.count))]) }
            let libpqTakesIt = PostgresConfiguration.libpqOptions(text) != nil
            let reason = ConnectionStringFault.refusal(of: text, keywords: keywords).reason
            if libpqTakesIt {
                #expect(reason == .unrecognized, "\(text): libpq takes it, the classifier says \(reason)")
            } else {
                refused += 1
                #expect(reason != .unrecognized, "\(text): libpq refuses it, the classifier finds no reason")
            }
        }
        #expect(refused > 1_000 && refused < 19_000)
    }
}

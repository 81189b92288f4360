import AdWorkerRedis
import Testing

/// REDIS_URL as managed Redis services print it: `redis://` or `rediss://` (TLS).
@Suite("Redis URLs")
struct RedisURLTests {
    @Test func aTLSURLWithUserPasswordAndPortIsReadPartByPart() throws {
        let configuration = try RedisConfiguration(url: "rediss://worker:p%40ss%3Aword@cache.example.com:6380/0")
        #expect(configuration.tls == RedisTLS())
        #expect(configuration.host == "cache.example.com" && configuration.port == 6380)
        #expect(configuration.username == "worker" && configuration.password == "p@ss:word")
        #expect(configuration.description == "rediss://worker@cache.example.com:6380 (password set)")
    }

    @Test func aPlainURLDefaultsThePortAndLeavesTLSOff() throws {
        let configuration = try RedisConfiguration(url: "redis://10.0.0.5")
        #expect(configuration.tls == nil && configuration.port == 6379 && configuration.password == nil)
    }

    @Test func aPasswordAloneOrAfterAnEmptyUserIsThePassword() throws {
        for url in ["redis://secret@h:1", "redis://:secret@h:1"] {
            let configuration = try RedisConfiguration(url: url)
            #expect(configuration.username == nil && configuration.password == "secret", "\(url)")
        }
    }

    @Test func anIPv6LiteralIsBracketed() throws {
        let configuration = try RedisConfiguration(url: "rediss://[::1]:6390")
        #expect(configuration.host == "::1" && configuration.port == 6390)
    }

    @Test(arguments: [
        ("http://h:1", "the scheme must be redis or rediss"),
        ("h:6379", "no scheme"),
        ("redis://h:1/3", "database 3 is not supported"),
        ("redis://h:99999", "the port must be a number"),
        ("redis://[::1:6379", "lacks its closing ]"),
        ("redis://u:p%4@h", "not followed by two hex digits"),
        ("redis://:p@", "no host"),
        ("redis://h:1?ssl=true", "query parameters are not supported"),
    ])
    func aMalformedURLIsRefusedNamingThePartAndQuotingNone(_ url: String, _ reason: String) {
        let error = #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains(reason) == true, "\(String(describing: error?.message))")
        #expect(error?.message.contains("p%4") == false)
    }
}

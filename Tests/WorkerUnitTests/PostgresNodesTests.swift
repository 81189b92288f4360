import AdWorkerPostgres
import Testing

@Suite struct PostgresNodesTests {
    typealias Node = PostgresNodes.Node

    @Test func hostsWithAndWithoutPortsIPv6LiteralsAndSpaces() throws {
        let nodes = try PostgresNodes.parse("db1, db2:5433,[::1]:6432,::1,10.0.0.7", defaultPort: 5432)
        #expect(
            nodes == [
                Node(host: "db1", port: 5432), Node(host: "db2", port: 5433), Node(host: "::1", port: 6432), Node(host: "::1", port: 5432),
                Node(host: "10.0.0.7", port: 5432),
            ]
        )
        #expect(nodes.map(\.description) == ["db1:5432", "db2:5433", "[::1]:6432", "[::1]:5432", "10.0.0.7:5432"])
    }

    @Test(arguments: ["", "db1,,db2", "db1:", "db1:0", "db1:70000", "db1:port", "[::1", "[::1]x", "[]:5432", "db 1"])
    func aMalformedListIsRefusedNamingTheElement(text: String) {
        let error = #expect(throws: PostgresError.self) { try PostgresNodes.parse(text, defaultPort: 5432) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.hasPrefix("DATABASE_HOSTS: '") == true)
    }

    @Test func aNodeOverridesTheHostAndPortOfAURL() {
        var base = PostgresConfiguration(url: "postgresql://adworker@coordinator:5432/adworker")
        base.urlOverrides = [.user]
        let node = base.through(Node(host: "worker-2", port: 6432))
        #expect(node.host == "worker-2" && node.port == 6432)
        #expect(node.urlOverrides == [.user, .host, .port])
        #expect(node.url == base.url)
    }
}

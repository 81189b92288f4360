/// `DATABASE_HOSTS`: the nodes a worker's sinks write through, `host[:port]` separated by commas
/// (`[::1]:5432` for an IPv6 literal with a port). On Citus every node routes a COPY to the shards
/// that hold its rows, so sinks spread over nodes take the parsing and routing off one
/// coordinator. Not libpq's multi-host `host=a,b`, which means "the first that answers" (a primary
/// and its standbys), where spreading writes would send some to a standby.
public enum PostgresNodes {
    public struct Node: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    /// The nodes `text` lists, each without a port on `defaultPort`; a refusal naming the element
    /// at fault for anything else.
    public static func parse(_ text: String, defaultPort: Int) throws(PostgresError) -> [Node] {
        var nodes: [Node] = []
        for element in text.split(separator: ",", omittingEmptySubsequences: false) {
            let item = String(element.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
            guard let node = node(item, defaultPort: defaultPort) else {
                throw PostgresError(
                    .invalidConfiguration,
                    "DATABASE_HOSTS: '\(item)' is not host, host:port or [ipv6]:port (a port from 1 to 65535); list the nodes separated by commas"
                )
            }
            nodes.append(node)
        }
        return nodes
    }

    private static func node(_ item: String, defaultPort: Int) -> Node? {
        var host = Substring(item)
        var port = defaultPort
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let rest = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let number = Int(rest.dropFirst()) else { return nil }
                port = number
            }
        } else if host.filter({ $0 == ":" }).count == 1, let colon = host.firstIndex(of: ":") {
            guard let number = Int(host[host.index(after: colon)...]) else { return nil }
            port = number
            host = host[..<colon]
        }
        guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "[" || $0 == "]" }), (1...65535).contains(port) else { return nil }
        return Node(host: String(host), port: port)
    }
}

extension PostgresConfiguration {
    /// The same settings through another node: its host and port override a `DATABASE_URL`'s.
    public func through(_ node: PostgresNodes.Node) -> PostgresConfiguration {
        var configuration = self
        configuration.host = node.host
        configuration.port = node.port
        configuration.urlOverrides.formUnion([.host, .port])
        return configuration
    }
}

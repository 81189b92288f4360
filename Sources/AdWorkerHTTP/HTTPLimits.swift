public import Hummingbird
public import HummingbirdCore
public import Logging
public import NIOCore

/// Bounds on the HTTP endpoints, so that slow or idle clients can never hold enough file
/// descriptors to starve the pipeline's own connections.
public enum HTTPLimits {
    /// A connection that has sent no complete request header (or nothing after its last response)
    /// for this long is closed; it covers clients that trickle a header or never send one.
    public static let idleTimeout: TimeAmount = .seconds(10)
    /// Connections served at once; beyond it the server stops accepting (the rest wait in the
    /// kernel's backlog, holding no descriptor of ours) until one closes. NIO may accept up to
    /// three more in the read that reaches the limit.
    public static let maximumConnections = 64

    /// HTTP/1 with the idle timeout: what both endpoints serve.
    static var server: HTTPServerBuilder { .http1(configuration: .init(idleTimeout: idleTimeout)) }

    /// Where an endpoint listens, with the connection limit.
    static func configuration(host: String, port: Int, logger: Logger) -> ApplicationConfiguration {
        .init(
            address: .hostname(host, port: port), serverName: "adworker",
            availableConnectionsDelegate: MaximumAvailableConnections(maximumConnections, logger: logger)
        )
    }
}

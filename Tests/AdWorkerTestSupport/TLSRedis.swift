public import AdWorkerRedis
public import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// TLS-only redis-servers of a test's own, with the certificates `scripts/tls-certs.sh` makes.
public enum TLSRedis {
    /// Which certificate the server presents.
    public enum ServerCertificate: String, Sendable {
        /// Signed by the test CA for localhost, 127.0.0.1 and ::1.
        case valid = "server"
        /// Signed by the test CA, expired in 2020.
        case expired
    }

    /// The directory `scripts/tls-certs.sh` fills (it keeps a complete set, so this is cheap):
    /// where the script puts them by default, so that the servers the scripts start
    /// (dev-services.sh, postgres-tls.sh, redis-cluster.sh) and the ones tests start trust one CA.
    public static func certificates() async throws -> String {
        let environment = ProcessInfo.processInfo.environment
        let directory = (environment["ADWORKER_DEV_DATA_DIR"] ?? "/var/tmp/adworker-dev") + "/tls"
        try await Scripts.run("tls-certs.sh", [directory])
        return directory
    }

    /// The client side for the test CA: verifying, with `serverName` when given.
    public static func clientTLS(_ directory: String, authority: String = "ca.crt", clientCertificate: Bool = false) -> RedisTLS {
        RedisTLS(
            certificateAuthorityFile: "\(directory)/\(authority)",
            certificateFile: clientCertificate ? "\(directory)/client.crt" : nil,
            keyFile: clientCertificate ? "\(directory)/client.key" : nil
        )
    }

    /// Runs `body` with a TLS-only redis-server (no plaintext port) on a free port of `host`, and a client
    /// configuration that trusts it (with a client certificate when `requiresClientCertificate`).
    public static func with<Result>(
        certificate: ServerCertificate = .valid, requiresClientCertificate: Bool = false, host: String = "127.0.0.1",
        _ body: (_ redis: RedisConfiguration, _ certificates: String) async throws -> Result
    ) async throws -> Result {
        let directory = try await certificates()
        let port = try TestPorts.free()
        let server = try TestServers.privateRedisServer(port: port, directoryPrefix: "adworker-tls-redis-")
        server.arguments = (server.arguments ?? []).map { $0 == "\(port)" ? "0" : $0 == "127.0.0.1" ? host : $0 } + [
            "--tls-port", "\(port)", "--tls-cert-file", "\(directory)/\(certificate.rawValue).crt",
            "--tls-key-file", "\(directory)/\(certificate.rawValue).key", "--tls-ca-cert-file", "\(directory)/ca.crt",
            "--tls-auth-clients", requiresClientCertificate ? "yes" : "no",
        ]
        try server.run()
        defer { kill(server.processIdentifier, SIGKILL) }
        var redis = RedisConfiguration(host: host, port: port, connectTimeout: .seconds(2))
        redis.tls = clientTLS(directory, clientCertificate: requiresClientCertificate)
        // Answering means the TLS port is up: a refused connection until then. The expired
        // certificate is checked without verification, which is what that server is for.
        var probe = redis
        probe.tls?.verifiesServer = certificate == .valid
        try await waitUntil("the TLS redis-server on \(port) answers") {
            (try? await RedisConnection.withConnection(probe, logger: TestServers.logger) { try await $0.ping() }) != nil
        }
        return try await body(redis, directory)
    }
}

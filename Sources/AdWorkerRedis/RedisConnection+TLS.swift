import AdTelemetryRecords
internal import CAdWorkerHiredis
internal import CAdWorkerRedisTransport
internal import CAdWorkerTLS
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// TLS (``RedisConfiguration/tls``): hiredis 0.14 has none, so it keeps formatting commands and
/// parsing replies while OpenSSL moves the bytes on the connection's own socket and thread
/// (`CAdWorkerRedisTransport`), with the same bounded, cancellable waits as plaintext. A handshake
/// that fails for a reason retrying cannot fix is a refusal that names it.
extension RedisConnection {
    /// Runs the handshake on a fresh `link`; on failure `link` is freed and the error says why.
    func startTLS(on link: OpaquePointer, node: RedisNodeAddress) throws(RedisError) {
        let tls = configuration.tls!
        let context: TLSClientContext
        do throws(RedisError) {
            context = try tlsClientContext()
        } catch {
            adw_link_free(link)
            throw error
        }
        let name = tls.serverName ?? node.host
        var outcome = adw_tls_outcome()
        if adw_link_start_tls(link, context.pointer, name, tls.verifiesServer ? 1 : 0, &outcome) == 1 { return }
        adw_link_free(link)
        let detail = withUnsafeBytes(of: outcome.detail) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch outcome.status {
        case ADW_TLS_CERTIFICATE_REJECTED:
            throw RedisError(.tlsCertificateRejected, "\(node): \(Self.certificateAdvice(outcome.problem, name: name)) (\(detail))")
        case ADW_TLS_NOT_TLS:
            throw Self.notOffered(node)
        case ADW_TLS_ALERT:
            throw RedisError(.tlsHandshakeFailed, "\(node) refused the TLS handshake: \(detail)\(Self.alertAdvice(outcome.alert))")
        case ADW_TLS_TRANSPORT:
            // A plaintext Redis may wait for the rest of a "command" that was our ClientHello and
            // time out, or close: ask it in plaintext before calling it a lost connection.
            if speaksPlaintextRedis(node) { throw Self.notOffered(node) }
            let code: RedisError.Code = outcome.os_error == EAGAIN ? .timeout : .connectionLost
            throw RedisError(code, "\(node): TLS handshake: \(detail)")
        default:
            throw RedisError(.tlsHandshakeFailed, "\(node): TLS handshake failed: \(detail)")
        }
    }

    private func tlsClientContext() throws(RedisError) -> TLSClientContext {
        if let tlsContext { return tlsContext }
        let made = try TLSClientContext(configuration.tls!)
        if !made.verifiesServer {
            logger.warning("redis TLS without verifying the server's certificate (REDIS_TLS_VERIFY=0): anyone on the path can read and change the traffic")
        }
        tlsContext = made
        return made
    }

    /// Whether `node` answers a plaintext PING with any Redis reply.
    private func speaksPlaintextRedis(_ node: RedisNodeAddress) -> Bool {
        guard let probe = try? connectSocket(node) else { return false }
        redisSetTimeout(Self.hiredisContext(probe), timeval(configuration.connectTimeout))
        // A transport failure frees the probe itself.
        guard (try? roundTrip([RedisCommand("PING")], on: probe)) != nil else { return false }
        adw_link_free(probe)
        return true
    }

    /// Why a TLS connection to `node` ended right after its handshake, asked again without writing:
    /// a server that refuses the client's certificate (TLS 1.3 says so only after the client's
    /// handshake ended) resets a connection that has sent a request meanwhile, and the alert is
    /// lost. Nil when a new connection shows no refusal.
    func refusalAfterHandshake(at node: RedisNodeAddress) -> RedisError? {
        guard let context = try? tlsClientContext(), let probe = try? connectSocket(node) else { return nil }
        defer { adw_link_free(probe) }
        redisSetTimeout(Self.hiredisContext(probe), timeval(configuration.connectTimeout))
        let tls = configuration.tls!
        var outcome = adw_tls_outcome()
        guard adw_link_start_tls(probe, context.pointer, tls.serverName ?? node.host, tls.verifiesServer ? 1 : 0, &outcome) == 1,
            adw_link_await_first_record(probe, Int32(configuration.connectTimeout.wholeMilliseconds), &outcome) == 0,
            outcome.status == ADW_TLS_ALERT
        else { return nil }
        let detail = withUnsafeBytes(of: outcome.detail) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return RedisError(.tlsHandshakeFailed, "\(node) refused the TLS session: \(detail)\(Self.alertAdvice(outcome.alert))")
    }

    /// Whether `node` completes (or gets as far as judging certificates in) a TLS handshake.
    func speaksTLS(_ node: RedisNodeAddress) -> Bool {
        guard let context = try? TLSClientContext(RedisTLS(verifiesServer: false)), let probe = try? connectSocket(node) else { return false }
        defer { adw_link_free(probe) }
        redisSetTimeout(Self.hiredisContext(probe), timeval(configuration.connectTimeout))
        var outcome = adw_tls_outcome()
        _ = adw_link_start_tls(probe, context.pointer, node.host, 0, &outcome)
        return outcome.status == ADW_TLS_ESTABLISHED || outcome.status == ADW_TLS_ALERT || outcome.status == ADW_TLS_CERTIFICATE_REJECTED
    }

    private static func notOffered(_ node: RedisNodeAddress) -> RedisError {
        RedisError(.tlsNotOffered, "\(node) answered in plaintext, not TLS: use redis:// (REDIS_TLS=0), or the server's TLS port")
    }

    private static func certificateAdvice(_ problem: adw_tls_certificate_problem, name: String) -> String {
        switch problem {
        case ADW_TLS_EXPIRED: "the server's certificate has expired: renew it on the server"
        case ADW_TLS_NOT_YET_VALID: "the server's certificate is not valid yet: check both clocks"
        case ADW_TLS_NAME_MISMATCH: "the server's certificate is not issued for \(name): connect by a name it holds, or set REDIS_TLS_SERVER_NAME to one"
        default: "the server's certificate is not signed by an authority this client trusts: set REDIS_TLS_CA_FILE to its CA's certificate"
        }
    }

    /// What to change for the alerts a server sends a client whose certificate it will not take.
    static func alertAdvice(_ alert: Int32) -> String {
        adw_tls_alert_refuses_client_certificate(alert) == 1
            ? ": it wants a client certificate it trusts: set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE" : ""
    }
}

/// An OpenSSL client context (`SSL_CTX`) made from ``RedisTLS``: the trusted authorities and the
/// client certificate, loaded once.
final class TLSClientContext {
    let pointer: UnsafeMutableRawPointer
    let verifiesServer: Bool

    init(_ tls: RedisTLS) throws(RedisError) {
        guard let pointer = adw_tls_context_new(tls.verifiesServer ? 1 : 0) else {
            throw RedisError(.tlsConfiguration, "OpenSSL could not make a TLS context")
        }
        self.pointer = pointer
        self.verifiesServer = tls.verifiesServer
        var detail = [CChar](repeating: 0, count: 200)
        if adw_tls_context_trust(pointer, tls.certificateAuthorityFile, &detail, detail.count) == 0 {
            let source = tls.certificateAuthorityFile.map { "REDIS_TLS_CA_FILE \($0)" } ?? "the system's certificate store"
            throw RedisError(.tlsConfiguration, "\(source): cannot be loaded as PEM certificates (\(Self.text(detail)))")
        }
        switch (tls.certificateFile, tls.keyFile) {
        case (nil, nil):
            break
        case (let certificate?, let key?):
            if adw_tls_context_identify(pointer, certificate, key, &detail, detail.count) == 0 {
                throw RedisError(
                    .tlsConfiguration,
                    "REDIS_TLS_CERT_FILE \(certificate) with REDIS_TLS_KEY_FILE \(key): cannot be loaded as a PEM certificate and its key (\(Self.text(detail)))")
            }
        default:
            throw RedisError(.tlsConfiguration, "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together: set both or neither")
        }
    }

    deinit { adw_tls_context_free(pointer) }

    private static func text(_ detail: [CChar]) -> String {
        String(decoding: detail.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

import AdTelemetryRecords
internal import CAdWorkerLibPQ
internal import CAdWorkerTLS
#if canImport(Glibc)
import Glibc
#endif

/// libpq says why a TLS connection failed only in words ("SSL error: certificate verify failed"),
/// and no SQLSTATE comes with a refusal that happens before the server reads the login. When TLS
/// was required, the same TLS handshake is made again with OpenSSL from the failed connection's
/// own settings, whose codes say which refusal it is, so that it is reported as one (exit 4 at
/// start-up, `adworker_permanent_errors`) instead of being retried as a server that is away.
extension PostgresConnection {
    /// The TLS refusal that made `failed` fail, or nil when TLS was not required or works.
    static func tlsRefusal(of failed: OpaquePointer, within timeout: Duration) -> PostgresError? {
        let settings = Self.settings(of: failed)
        guard let mode = settings["sslmode"], ["require", "verify-ca", "verify-full"].contains(mode),
            let host = PQhost(failed).map({ String(cString: $0) }), !host.isEmpty, !host.hasPrefix("/"),
            let port = PQport(failed).flatMap({ Int32(String(cString: $0)) })
        else { return nil }
        let verifies = mode != "require"
        guard let context = adw_tls_context_new(verifies ? 1 : 0) else { return nil }
        defer { adw_tls_context_free(context) }
        var detail = [CChar](repeating: 0, count: 200)
        // libpq's default root certificate file; a missing one is libpq's own clear refusal.
        let rootFile = settings["sslrootcert"] ?? "\(homeDirectory)/.postgresql/root.crt"
        if verifies && adw_tls_context_trust(context, rootFile, &detail, detail.count) == 0 { return nil }
        if let certificate = settings["sslcert"], let key = settings["sslkey"] {
            _ = adw_tls_context_identify(context, certificate, key, &detail, detail.count)
        }
        let address = settings["hostaddr"] ?? host
        var outcome = adw_tls_outcome()
        if adw_tls_probe_postgres(address, port, Int32(clamping: timeout.wholeMilliseconds), context, host, mode == "verify-full" ? 1 : 0, &outcome) == 1 { return nil }
        let said = withUnsafeBytes(of: outcome.detail) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let server = "\(host):\(port)"
        switch outcome.status {
        case ADW_TLS_CERTIFICATE_REJECTED:
            return PostgresError(.tlsCertificateRejected, "\(server): \(certificateAdvice(outcome.problem, host: host)) (\(said))")
        case ADW_TLS_NOT_TLS:
            return PostgresError(
                .tlsNotOffered, "\(server) does not offer TLS (ssl = off) and DATABASE_SSLMODE=\(mode) requires it: turn ssl on at the server, or lower DATABASE_SSLMODE")
        case ADW_TLS_ALERT:
            return PostgresError(.tlsHandshakeFailed, "\(server) refused the TLS session: \(said)\(alertAdvice(outcome.alert))")
        default:
            return nil
        }
    }

    /// The failed connection's settings that were set (a URL's, the keywords', libpq's defaults).
    private static func settings(of connection: OpaquePointer) -> [String: String] {
        guard let options = PQconninfo(connection) else { return [:] }
        defer { PQconninfoFree(options) }
        var settings: [String: String] = [:]
        var option = options
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val, value.pointee != 0 { settings[String(cString: keyword)] = String(cString: value) }
            option += 1
        }
        return settings
    }

    private static var homeDirectory: String {
        guard let home = getenv("HOME") else { return "" }
        return String(cString: home)
    }

    private static func certificateAdvice(_ problem: adw_tls_certificate_problem, host: String) -> String {
        switch problem {
        case ADW_TLS_EXPIRED: "the server's certificate has expired: renew it on the server"
        case ADW_TLS_NOT_YET_VALID: "the server's certificate is not valid yet: check both clocks"
        case ADW_TLS_NAME_MISMATCH:
            "the server's certificate is not issued for \(host) (DATABASE_SSLMODE=verify-full checks the name): connect by a name it holds"
        default: "the server's certificate is not signed by an authority this client trusts: set DATABASE_SSLROOTCERT to its CA's certificate"
        }
    }

    /// What to change for the alerts a server sends a client whose certificate it will not take.
    private static func alertAdvice(_ alert: Int32) -> String {
        adw_tls_alert_refuses_client_certificate(alert) == 1 ? ": it wants a client certificate it trusts: set DATABASE_SSLCERT and DATABASE_SSLKEY" : ""
    }
}

internal import CAdWorkerHiredis
internal import CAdWorkerRedisTransport
#if canImport(Glibc)
import Glibc
#endif

/// Opening a connection: TCP, TLS when configured, then AUTH or PING.
extension RedisConnection {
    /// A new connection to `node`: over TLS when configured, authenticated, and greeted (AUTH or
    /// PING), so that a server that speaks the other protocol is told at once, not at the first
    /// command. `credentials` replace the configuration's (a sentinel's own).
    func open(_ node: RedisNodeAddress, credentials: (username: String?, password: String?)? = nil) throws(RedisError) -> OpaquePointer {
        let link = try connectSocket(node)
        let context = Self.hiredisContext(link)
        // Keepalives notice an idle peer that vanished (no RST) in seconds instead of TCP's two hours.
        redisEnableKeepAlive(context)
        if configuration.tls != nil {
            // The handshake is part of connecting: bounded by the connect timeout.
            redisSetTimeout(context, timeval(configuration.connectTimeout))
            try startTLS(on: link, node: node)
        }
        // Every read and write is bounded by the command timeout.
        redisSetTimeout(context, timeval(configuration.commandTimeout))
        try greet(on: link, node: node, credentials: credentials ?? (configuration.username, configuration.password))
        return link
    }

    /// A TCP connection to `node`, plaintext so far. A name is resolved here, and each of its
    /// addresses tried in turn (hiredis 0.14 gives up after the first that fails, and tries IPv6
    /// only when the name has no IPv4 address at all).
    func connectSocket(_ node: RedisNodeAddress) throws(RedisError) -> OpaquePointer {
        let connectTimeout = timeval(configuration.connectTimeout)
        var failures: [String] = []
        for address in Self.addresses(of: node.host) {
            guard let newContext = redisConnectWithTimeout(address, Int32(node.port), connectTimeout) else {
                throw RedisError(.connectionFailed, "cannot allocate a hiredis context")
            }
            if newContext.pointee.err != 0 {
                failures.append(address == node.host ? Self.errorString(newContext) : "\(address): \(Self.errorString(newContext))")
                redisFree(newContext)
                continue
            }
            guard let link = adw_link_new(newContext) else {
                redisFree(newContext)
                throw RedisError(.connectionFailed, "cannot allocate a connection")
            }
            return link
        }
        throw RedisError(.connectionFailed, "\(node): \(failures.joined(separator: "; "))")
    }

    /// Every address `host` resolves to, in the resolver's order; `host` itself when it does not
    /// resolve (hiredis then says why).
    static func addresses(of host: String) -> [String] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &found) == 0, let first = found else { return [host] }
        defer { freeaddrinfo(first) }
        var addresses: [String] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST) == 0 {
                let address = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !addresses.contains(address) { addresses.append(address) }
            }
            cursor = info.pointee.ai_next
        }
        return addresses.isEmpty ? [host] : addresses
    }

    /// AUTH when a password is set, else PING. Any reply to PING will do (LOADING, NOAUTH: the
    /// commands that follow meet those as before); what matters is that the server answered in
    /// the protocol spoken. A transport failure frees `link` (see dropBrokenContext).
    private func greet(
        on link: OpaquePointer, node: RedisNodeAddress, credentials: (username: String?, password: String?)
    ) throws(RedisError) {
        var greeting = RedisCommand("PING")
        if let password = credentials.password {
            greeting = RedisCommand("AUTH")
            if let username = credentials.username { greeting.append(username) }
            greeting.append(password)
        }
        let reply: RedisValue
        do throws(RedisError) {
            reply = try roundTrip([greeting], on: link)[0]
        } catch where configuration.tls != nil && error.code == .connectionLost {
            throw refusalAfterHandshake(at: node) ?? error
        } catch where configuration.tls == nil && error.code == .connectionLost && speaksTLS(node) {
            throw RedisError(.tlsRequired, "\(node) speaks only TLS on this port (it closed the plaintext connection): use rediss:// in REDIS_URL or set REDIS_TLS=1")
        }
        if credentials.password != nil, case .error(let message) = reply {
            adw_link_free(link)
            // Only the reply's leading word: the rest is the server's prose, never needed here.
            throw RedisError(.authenticationFailed, "AUTH refused: \(message.prefix { $0 != " " })")
        }
    }
}

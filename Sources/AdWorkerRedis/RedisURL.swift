extension RedisConfiguration {
    /// Reads `redis://[[USER]:PASSWORD@]HOST[:PORT][/0]`, or `rediss://…` for TLS (verifying the
    /// server against the system's authorities until ``tls`` says otherwise). HOST may be a
    /// bracketed IPv6 literal; USER and PASSWORD may be percent-encoded. Errors never quote the
    /// URL, which may hold a password.
    public init(url text: String) throws(RedisError) {
        let scheme: Substring
        let rest: Substring
        if let separator = text.firstRange(of: "://") {
            scheme = text[..<separator.lowerBound]
            rest = text[separator.upperBound...]
        } else {
            throw Self.urlError("no scheme; expected redis://HOST:PORT or rediss://HOST:PORT")
        }
        self.init()
        switch scheme.lowercased() {
        case "redis": tls = nil
        case "rediss": tls = RedisTLS()
        default: throw Self.urlError("the scheme must be redis or rediss")
        }
        var authority = rest
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            let database = rest[rest.index(after: slash)...]
            guard database.isEmpty || database == "0" else {
                throw Self.urlError("database \(database) is not supported: streams live in database 0 (and a cluster has no other)")
            }
        }
        guard !authority.contains("?"), !authority.contains("#") else { throw Self.urlError("query parameters are not supported") }
        if let at = authority.lastIndex(of: "@") {
            let credentials = authority[..<at]
            authority = authority[authority.index(after: at)...]
            let user: Substring
            let password: Substring?
            if let colon = credentials.firstIndex(of: ":") {
                user = credentials[..<colon]
                password = credentials[credentials.index(after: colon)...]
            } else {
                // redis://secret@host: a bare word before @ is the password, as redis-cli reads it.
                (user, password) = ("", credentials)
            }
            username = user.isEmpty ? nil : try Self.percentDecoded(user)
            if let password, !password.isEmpty { self.password = try Self.percentDecoded(password) }
        }
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw Self.urlError("an IPv6 address lacks its closing ]") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            authority = authority[authority.index(after: close)...]
            guard authority.isEmpty || authority.hasPrefix(":") else { throw Self.urlError("expected :PORT after the IPv6 address") }
        } else {
            let end = authority.firstIndex(of: ":") ?? authority.endIndex
            host = String(authority[..<end])
            authority = authority[end...]
        }
        guard !host.isEmpty else { throw Self.urlError("no host") }
        if authority.hasPrefix(":") {
            guard let number = Int(authority.dropFirst()), (1...65535).contains(number) else {
                throw Self.urlError("the port must be a number in 1...65535")
            }
            port = number
        }
    }

    private static func urlError(_ reason: String) -> RedisError {
        RedisError(.invalidArgument, "REDIS_URL: \(reason)")
    }

    private static func percentDecoded(_ text: Substring) throws(RedisError) -> String {
        var bytes: [UInt8] = []
        var index = text.utf8.startIndex
        let utf8 = text.utf8
        while index < utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "%") {
                let high = utf8.index(after: index)
                guard high < utf8.endIndex, utf8.index(after: high) < utf8.endIndex,
                    let value = UInt8(String(decoding: [utf8[high], utf8[utf8.index(after: high)]], as: UTF8.self), radix: 16)
                else { throw urlError("a % in the user or password is not followed by two hex digits") }
                bytes.append(value)
                index = utf8.index(high, offsetBy: 2)
            } else {
                bytes.append(byte)
                index = utf8.index(after: index)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

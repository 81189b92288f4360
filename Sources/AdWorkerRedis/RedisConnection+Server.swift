/// Questions about the server itself rather than its keys.
extension RedisConnection {
    /// PING. Returns only when the server answers PONG; an error reply (`NOAUTH` from a server that
    /// wants credentials this connection lacks, `LOADING`) is thrown with its code.
    public func ping() throws(RedisError) {
        switch try send(RedisCommand("PING")) {
        case .status("PONG"): return
        case .error(let message): throw RedisError.fromReply(message)
        default: throw RedisError(.unexpectedReply, "PING")
        }
    }

    /// TIME: the server's clock, in milliseconds since the epoch. Stream entry ids come from this
    /// clock, so a client that looks for entries by time asks for it rather than trust its own.
    public func serverTimeMilliseconds() throws(RedisError) -> Int64 {
        let reply = try send(RedisCommand("TIME"))
        if case .error(let message) = reply { throw RedisError.fromReply(message) }
        guard let parts = reply.array, parts.count == 2, let seconds = parts[0].string.flatMap({ Int64($0) }),
            let microseconds = parts[1].string.flatMap({ Int64($0) })
        else { throw RedisError(.unexpectedReply, "TIME") }
        return seconds * 1000 + microseconds / 1000
    }

    /// CONFIG GET `name`: the server's value of one setting (`appendonly`: `yes`), nil when it has
    /// no setting of that name.
    public func serverSetting(_ name: String) throws(RedisError) -> String? {
        let reply = try send(RedisCommand("CONFIG", "GET", name))
        if case .error(let message) = reply { throw RedisError.fromReply(message) }
        guard let pairs = reply.array else { throw RedisError(.unexpectedReply, "CONFIG GET") }
        return pairs.count == 2 ? pairs[1].string : nil
    }
}

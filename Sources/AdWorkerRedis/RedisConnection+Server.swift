extension RedisConnection {
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
}

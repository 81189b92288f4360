public import AdTelemetryRecords
public import AdWorkerRedis

extension DeadLetter {
    /// Sends each dead letter's original fields back to its stream (`dead.stream`, else the
    /// dead-letter stream's name without `:dead`) and removes it from `deadStream`: what
    /// `adworker dlq replay` does. - Returns: how many letters this call replayed.
    public static func replay(_ letters: [StreamEntry], from deadStream: String, on redis: RedisConnection) async throws -> Int {
        let originalStream = String(deadStream.dropLast(":dead".count))
        var replayed = 0
        for letter in letters {
            let target = letter.fields.value(of: Field.stream).map { String(decoding: $0, as: UTF8.self) } ?? originalStream
            _ = try await redis.transaction([
                .streamAdd(to: target, fields: originalFields(of: letter.fields)),
                RedisCommand("XDEL", deadStream, letter.id.description),
            ])
            replayed += 1
        }
        return replayed
    }
}

public import AdTelemetryRecords
public import AdWorkerRedis

extension DeadLetter {
    /// Sends each dead letter's original fields back to its stream (`dead.stream`, else the
    /// dead-letter stream's name without `:dead`) and removes it from `deadStream`: what
    /// `adworker dlq replay` does.
    ///
    /// - Important: Each letter is re-added only if this call removed it, in one script
    ///   (``RedisConnection/moveEntry(_:from:to:fields:)``): two replays at once, or a replay and
    ///   a purge, never re-add a letter twice, and an interrupted replay neither loses nor doubles one.
    /// - Returns: How many letters this call replayed; the others were gone already (another
    ///   replay or a purge took them first).
    public static func replay(_ letters: [StreamEntry], from deadStream: String, on redis: RedisConnection) async throws -> Int {
        let originalStream = String(deadStream.dropLast(":dead".count))
        var replayed = 0
        for letter in letters {
            let target = letter.fields.value(of: Field.stream).map { String(decoding: $0, as: UTF8.self) } ?? originalStream
            if try await redis.moveEntry(letter.id, from: deadStream, to: target, fields: originalFields(of: letter.fields)) != nil {
                replayed += 1
            }
        }
        return replayed
    }
}

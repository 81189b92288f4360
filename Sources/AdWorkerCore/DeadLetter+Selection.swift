public import AdTelemetryRecords
public import AdWorkerRedis

extension DeadLetter {
    /// A stored letter's code: its `dead.code` field, or for a letter written before that field
    /// existed, the code its `dead.reason` begins with (those reasons were always `<code>` or
    /// `<code>: <field or sqlstate>`). Nil for a code this version does not know.
    public static func code(of letter: StreamFields) -> DeadLetterCode? {
        if let code = letter.value(of: Field.code) {
            return DeadLetterCode(rawValue: String(decoding: code, as: UTF8.self))
        }
        guard let reason = letter.value(of: Field.reason) else { return nil }
        return DeadLetterCode(rawValue: String(decoding: reason.prefix { $0 != UInt8(ascii: ":") }, as: UTF8.self))
    }

    /// The letters in `deadStream`, oldest first, read in pages of 1,000: those with `code` (nil:
    /// any) and an id in `ids` (nil: any). What `adworker dlq list|replay|purge` select.
    public static func letters(
        in deadStream: String, on redis: RedisConnection, code: DeadLetterCode? = nil, ids: Set<StreamEntryID>? = nil
    ) async throws -> [StreamEntry] {
        var selected: [StreamEntry] = []
        var start = StreamEntryID(milliseconds: 0, sequence: 0)
        while true {
            let page = try await redis.range(deadStream, from: start, count: 1000)
            for letter in page where ids?.contains(letter.id) ?? true {
                if let code, Self.code(of: letter.fields) != code { continue }
                selected.append(letter)
            }
            guard page.count == 1000, let next = page.last?.id.successor else { return selected }
            start = next
        }
    }
}

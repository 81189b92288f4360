import AdTelemetryRecords
import AdWorkerCore
import AdWorkerRedis
import ArgumentParser
import Foundation
import Logging

/// `adworker dlq list|replay|purge`: the dead-letter streams, for people.
struct DeadLetterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "Inspects, replays and purges dead letters (<stream>:dead).",
        subcommands: [List.self, Replay.self, Purge.self]
    )

    /// Which dead letters a command works on.
    struct Selection: ParsableArguments {
        @Option(help: "training, inference, or a full stream name.")
        var stream: String

        @Option(help: "Stream name prefix for training and inference (env ADWORKER_STREAM_PREFIX; default 'adserving:').")
        var streamPrefix: String?

        @Option(help: "With --stream training or inference on sharded streams: only this shard (0-based); default every shard.")
        var shard: Int?

        @Option(
            help: """
                Only dead letters with this code (dead.code; for letters written before that field, the code their reason \
                begins with): \(DeadLetterCode.allCases.map(\.rawValue).joined(separator: ", ")).
                """,
            transform: { text in
                guard let code = DeadLetterCode(rawValue: text) else {
                    throw ValidationError("'\(text)' is not a dead-letter code: \(DeadLetterCode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                return code
            }
        )
        var reason: DeadLetterCode?

        @Option(help: "Only these dead letters, by their id in the dead-letter stream (comma-separated).")
        var ids: String?

        /// The dead-letter streams selected: a kind's, one per shard (or only `--shard`'s), or the
        /// one stream named.
        func deadLetterStreams(_ settings: Settings, connection: ConnectionOptions) throws -> [String] {
            guard let kind = RecordKind(rawValue: stream) else {
                guard shard == nil else { throw ValidationError("--shard goes with --stream training or inference, not a stream name") }
                return [stream.hasSuffix(":dead") ? stream : DeadLetter.stream(for: stream)]
            }
            let prefix = streamPrefix ?? settings.string("ADWORKER_STREAM_PREFIX") ?? "adserving:"
            let layout = try connection.layout(settings, prefix: prefix, redis: try connection.redis(settings))
            let streams = layout.streams(kind: kind.rawValue)
            if let shard {
                guard streams.indices.contains(shard) else {
                    throw ValidationError("--shard \(shard) does not exist: there are \(streams.count) shards (0...\(streams.count - 1))")
                }
                return [DeadLetter.stream(for: streams[shard])]
            }
            return streams.map { DeadLetter.stream(for: $0) }
        }

        func validate() throws {
            if let ids {
                for id in ids.split(separator: ",") where StreamEntryID(String(id)) == nil {
                    throw ValidationError("'\(id)' is not a stream entry id (like 1700000000000-0)")
                }
            }
        }

        /// Every selected dead letter, oldest first.
        func letters(in stream: String, _ redis: RedisConnection) async throws -> [StreamEntry] {
            let wanted = ids.map { Set($0.split(separator: ",").compactMap { StreamEntryID(String($0)) }) }
            return try await DeadLetter.letters(in: stream, on: redis, code: reason, ids: wanted)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Lists dead letters: id, original entry, reason, deliveries, time.")

        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var selection: Selection

        @Option(help: "Show at most this many (the total is always printed).")
        var limit = 50

        @Flag(help: "Print JSON lines (one object per dead letter, every field as text).")
        var json = false

        func run() async throws {
            let settings = try connection.settings()
            let logger = try connection.bootstrap(settings, label: "adworker.dlq")
            let redisConfiguration = try connection.redis(settings)
            for stream in try selection.deadLetterStreams(settings, connection: connection) {
                try await list(stream, redisConfiguration.routed(by: stream), logger: logger)
            }
        }

        private func list(_ stream: String, _ configuration: RedisConfiguration, logger: Logger) async throws {
            try await RedisConnection.withConnection(configuration, logger: logger) { redis in
                let letters = try await selection.letters(in: stream, redis)
                if json {
                    for letter in letters.prefix(limit) {
                        var object: [String: String] = ["id": letter.id.description]
                        for field in letter.fields { object[field.nameString] = String(decoding: field.value, as: UTF8.self) }
                        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                        print(String(decoding: data, as: UTF8.self))
                    }
                    return
                }
                print("\(stream): \(letters.count) dead letter\(letters.count == 1 ? "" : "s")")
                guard !letters.isEmpty else { return }
                print(pad("DEAD-LETTER ID", 22) + pad("ENTRY ID", 22) + pad("DELIVERIES", 11) + pad("AT (UTC)", 21) + "REASON")
                for letter in letters.prefix(limit) {
                    func text(_ name: String) -> String { letter.fields.value(of: name).map { String(decoding: $0, as: UTF8.self) } ?? "-" }
                    let at = Int64(text(DeadLetter.Field.deadAt)).map { Self.format(Timestamp(millisecondsSinceEpoch: $0)) } ?? "-"
                    print(
                        pad(letter.id.description, 22) + pad(text(DeadLetter.Field.entryID), 22) + pad(text(DeadLetter.Field.deliveries), 11)
                            + pad(at, 21) + text(DeadLetter.Field.reason)
                    )
                }
                if letters.count > limit { print("… \(letters.count - limit) more (--limit)") }
            }
        }

        private func pad(_ text: String, _ width: Int) -> String {
            text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
        }

        static func format(_ timestamp: Timestamp) -> String {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withFullDate, .withTime, .withColonSeparatorInTime, .withSpaceBetweenDateAndTime]
            return formatter.string(from: Date(timeIntervalSince1970: Double(timestamp.millisecondsSinceEpoch) / 1000))
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sends dead letters' original fields back to their stream (after a fix) and removes them from the dead-letter stream.",
            discussion: """
                Each dead letter is re-added only if this replay removed it, in one Lua script (EVAL), so an interrupted replay \
                neither loses nor doubles one, and two replays at once re-add each letter once: each prints how many it replayed.
                """
        )

        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var selection: Selection

        @Flag(name: .shortAndLong, help: "Do not ask for confirmation.")
        var yes = false

        func run() async throws {
            try await withConfirmedLetters(connection: connection, selection: selection, yes: yes) { deadStream in
                "Replay {} from \(deadStream) into \(deadStream.dropLast(":dead".count))?"
            } change: { redis, deadStream, letters in
                let replayed = try await DeadLetter.replay(letters, from: deadStream, on: redis)
                let gone = letters.count - replayed
                return "replayed \(replayed) of {} into \(deadStream.dropLast(":dead".count))"
                    + (gone == 0 ? "" : " (\(gone) were gone already: another replay or a purge took them)")
            }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Deletes dead letters for good.")

        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var selection: Selection

        @Flag(name: .shortAndLong, help: "Do not ask for confirmation.")
        var yes = false

        func run() async throws {
            try await withConfirmedLetters(connection: connection, selection: selection, yes: yes) { deadStream in
                "Delete {} from \(deadStream) for good?"
            } change: { redis, deadStream, letters in
                for start in stride(from: 0, to: letters.count, by: 1000) {
                    try await redis.deleteEntries(letters[start..<min(start + 1000, letters.count)].map(\.id), from: deadStream)
                }
                return "purged {} from \(deadStream)"
            }
        }
    }
}

/// Selects dead letters, asks before changing anything, applies `change` and reports. In the
/// question and the report, `{}` stands for "N dead letter(s)".
private func withConfirmedLetters(
    connection: ConnectionOptions, selection: DeadLetterCommand.Selection, yes: Bool, question: (String) -> String,
    change: (RedisConnection, String, [StreamEntry]) async throws -> String
) async throws {
    let settings = try connection.settings()
    let logger = try connection.bootstrap(settings, label: "adworker.dlq")
    let redisConfiguration = try connection.redis(settings)
    // One connection per dead-letter stream: each shard's lives on its own slot's node.
    for deadStream in try selection.deadLetterStreams(settings, connection: connection) {
        try await RedisConnection.withConnection(redisConfiguration.routed(by: deadStream), logger: logger) { redis in
            let letters = try await selection.letters(in: deadStream, redis)
            guard !letters.isEmpty else {
                print("no dead letters selected in \(deadStream)")
                return
            }
            let counted = "\(letters.count) dead letter\(letters.count == 1 ? "" : "s")"
            try confirm(question(deadStream).replacingOccurrences(of: "{}", with: counted), yes: yes)
            print(try await change(redis, deadStream, letters).replacingOccurrences(of: "{}", with: counted))
        }
    }
}

/// Asks on the terminal; refuses without one unless `--yes` was given.
private func confirm(_ question: String, yes: Bool) throws {
    if yes { return }
    guard isatty(STDIN_FILENO) == 1 else {
        FileHandle.standardError.write(Data("\(question)\nrefused: no terminal to ask on; pass --yes\n".utf8))
        throw ExitCode.failure
    }
    print("\(question) [y/N] ", terminator: "")
    guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
        throw CleanExit.message("nothing changed")
    }
}

internal import CAdWorkerHiredis
internal import CAdWorkerRedisArena

/// A reply read into the connection's arena: its nodes in parse order, read front to back.
struct ArenaReply {
    struct Node {
        var type: Int32
        var elements: Int
        var text: UnsafeRawBufferPointer
        var integer: Int64

        var isString: Bool { type == REDIS_REPLY_STRING || type == REDIS_REPLY_STATUS || type == REDIS_REPLY_ERROR }
    }

    private let tokens: UnsafeBufferPointer<adw_token>
    private let bytes: UnsafeRawBufferPointer
    private var position = 0

    init(_ arena: adw_arena) {
        tokens = UnsafeBufferPointer(start: arena.tokens, count: arena.count)
        bytes = UnsafeRawBufferPointer(start: arena.bytes, count: arena.length)
    }

    /// The next node; nil past the end.
    mutating func next() -> Node? {
        guard position < tokens.count else { return nil }
        let token = tokens[position]
        position += 1
        let isString = token.type == REDIS_REPLY_STRING || token.type == REDIS_REPLY_STATUS || token.type == REDIS_REPLY_ERROR
        return Node(
            type: token.type, elements: Int(token.elements),
            text: isString ? UnsafeRawBufferPointer(rebasing: bytes[Int(token.offset)..<Int(token.offset + token.length)]) : UnsafeRawBufferPointer(start: nil, count: 0),
            integer: isString ? 0 : token.offset
        )
    }

    /// The total length of the next `count` nodes' text, without moving on (to size a buffer once).
    func textLength(ofNext count: Int) -> Int {
        var total = 0
        for index in position..<min(position + count, tokens.count) { total += Int(tokens[index].length) }
        return total
    }
}

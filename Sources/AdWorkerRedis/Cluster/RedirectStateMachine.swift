/// How one exchange with a Redis Cluster follows redirects: which commands go (again), where, and
/// when it ends. Both of ``RedisConnection``'s loops run it (pipelines, and the arena read behind
/// XREADGROUP); only their I/O stays in them.
///
/// - `MOVED`: the slot lives elsewhere now: move the connection there and resend what was
///   redirected (all of it when the commands are one MULTI…EXEC: Redis discarded the transaction);
/// - `ASK` (a slot being migrated, this key already moved): resend once to the importing node,
///   after `ASKING`, and stay where we are;
/// - anything else, `TRYAGAIN` and `CLUSTERDOWN` included, is the answer: those two are transient
///   errors for the caller's backoff (``RedisError/isTransient``), so the connection's thread never
///   sleeps here;
/// - still redirected after ``maximumRedirects`` redirects: give up, answering with the redirect
///   replies where they decode, else ``RedisError/Code/redirected``.
///
/// A redirected command was not run, so resending it never doubles it.
struct RedirectStateMachine<Reply> {
    /// One command's reply as the connection read it.
    enum Routed {
        case reply(Reply)
        /// A redirect, with the reply decoded as best it can be (for the caller once redirects run out).
        case redirect(ClusterRedirect, Reply?)
    }

    /// Where the next round goes.
    enum Target: Equatable {
        /// The connection's own node: the primary serving its slot.
        case slotOwner
        /// Once to this node, each command after `ASKING`.
        case asking(RedisNodeAddress)
    }

    enum Action {
        /// Every command has its answer, in order.
        case finished([Reply])
        case failed(RedisError)
        /// Move the connection to the node now serving the slot, then send ``outstanding`` there.
        case move(to: RedisNodeAddress)
        /// Send ``outstanding`` to ``target``.
        case send
    }

    /// More redirects than a slot migration plus a failover can cause.
    static var maximumRedirects: Int { 5 }

    /// The indices of the commands the next round sends.
    private(set) var outstanding: [Int]
    private(set) var target = Target.slotOwner
    private let asUnit: Bool
    private var results: [Reply?]
    private var lastRedirects: [Int: Reply?] = [:]
    private var rounds = 0

    /// - Parameter asUnit: The commands are one MULTI…EXEC: a redirect of any resends them all.
    init(commandCount: Int, asUnit: Bool) {
        self.asUnit = asUnit
        outstanding = Array(0..<commandCount)
        results = Array(repeating: nil, count: commandCount)
    }

    /// The replies to the last round, one per ``outstanding`` command, in order.
    mutating func received(_ replies: [Routed]) -> Action {
        precondition(replies.count == outstanding.count, "one reply per command sent")
        rounds += 1
        var redirect: ClusterRedirect?
        var redirected: [Int] = []
        lastRedirects = [:]
        for (index, reply) in zip(outstanding, replies) {
            switch reply {
            case .reply(let answer): results[index] = answer
            case .redirect(let next, let decoded):
                redirect = redirect ?? next
                redirected.append(index)
                lastRedirects[index] = decoded
            }
        }
        guard let redirect else { return .finished(results.map { $0! }) }
        guard rounds <= Self.maximumRedirects else { return giveUp() }
        outstanding = asUnit ? Array(results.indices) : redirected
        switch redirect.kind {
        case .moved:
            target = .slotOwner
            return .move(to: redirect.node)
        case .ask:
            target = .asking(redirect.node)
            return .send
        }
    }

    /// What a round's transport failure means to the caller: after a redirect, earlier rounds ran
    /// part of the commands, so even a refused connection leaves the whole outcome unknown.
    func transportFailed(_ error: RedisError) -> RedisError {
        rounds > 0 ? RedisError(.connectionLost, "after a redirect: \(error.message)") : error
    }

    /// Still redirected: the redirect replies as the caller would have seen them.
    private func giveUp() -> Action {
        var final = results
        for (index, decoded) in lastRedirects {
            guard let decoded else { return .failed(Self.stillRedirected) }
            final[index] = decoded
        }
        var answers: [Reply] = []
        for answer in final {
            guard let answer else { return .failed(Self.stillRedirected) }
            answers.append(answer)
        }
        return .finished(answers)
    }

    private static var stillRedirected: RedisError {
        RedisError(.redirected, "still redirected after \(maximumRedirects) redirects")
    }
}

@testable import AdWorkerRedis
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The cluster's redirects decided without a cluster: replies in, actions out.
@Suite("Redis Cluster redirects: the decision both connection loops run")
struct RedirectStateMachineTests {
    typealias Machine = RedirectStateMachine<String>

    let nodeB = RedisNodeAddress(host: "10.0.0.2", port: 7001)
    let nodeC = RedisNodeAddress(host: "10.0.0.3", port: 7002)

    func moved(to node: RedisNodeAddress) -> ClusterRedirect { ClusterRedirect(kind: .moved, slot: HashSlot(forKey: "k"), node: node) }
    func ask(to node: RedisNodeAddress) -> ClusterRedirect { ClusterRedirect(kind: .ask, slot: HashSlot(forKey: "k"), node: node) }

    func answers(_ action: Machine.Action) -> [String]? {
        if case .finished(let answers) = action { answers } else { nil }
    }

    @Test func repliesWithoutARedirectAreTheAnswerInOrder() {
        var machine = Machine(commandCount: 2, asUnit: false)
        #expect(machine.outstanding == [0, 1] && machine.target == .slotOwner)
        #expect(answers(machine.received([.reply("a"), .reply("b")])) == ["a", "b"])
    }

    @Test func movedSendsTheConnectionToTheNewPrimaryAndResendsOnlyWhatWasRedirected() {
        var machine = Machine(commandCount: 3, asUnit: false)
        guard case .move(let node) = machine.received([.reply("a"), .redirect(moved(to: nodeB), "MOVED"), .reply("c")]) else {
            Issue.record("a MOVED moves the connection")
            return
        }
        #expect(node == nodeB && machine.target == .slotOwner && machine.outstanding == [1])
        #expect(answers(machine.received([.reply("b")])) == ["a", "b", "c"])
    }

    @Test func aRedirectedTransactionIsResentWhole() {
        var machine = Machine(commandCount: 3, asUnit: true)
        guard case .move = machine.received([.reply("OK"), .redirect(moved(to: nodeB), nil), .reply("EXECABORT")]) else {
            Issue.record("a MOVED moves the connection")
            return
        }
        #expect(machine.outstanding == [0, 1, 2])
        #expect(answers(machine.received([.reply("OK"), .reply("QUEUED"), .reply("[1]")])) == ["OK", "QUEUED", "[1]"])
    }

    @Test func askSendsOnceToTheImportingNodeAndTheConnectionStays() {
        var machine = Machine(commandCount: 2, asUnit: false)
        guard case .send = machine.received([.redirect(ask(to: nodeC), nil), .reply("b")]) else {
            Issue.record("an ASK sends to the importing node without moving")
            return
        }
        #expect(machine.target == .asking(nodeC) && machine.outstanding == [0])
        #expect(answers(machine.received([.reply("a")])) == ["a", "b"])
    }

    @Test func aMovedAfterAnAskReturnsToTheSlotsPrimary() {
        var machine = Machine(commandCount: 1, asUnit: false)
        _ = machine.received([.redirect(ask(to: nodeC), nil)])
        guard case .move(let node) = machine.received([.redirect(moved(to: nodeB), nil)]) else {
            Issue.record("a MOVED moves the connection")
            return
        }
        #expect(node == nodeB && machine.target == .slotOwner)
    }

    @Test func afterFiveRedirectsTheRedirectRepliesAreTheAnswer() {
        var machine = Machine(commandCount: 2, asUnit: false)
        for _ in 0..<Machine.maximumRedirects {
            guard case .move = machine.received(machine.outstanding.map { _ in .redirect(moved(to: nodeB), "MOVED") }) else {
                Issue.record("redirects are followed up to the most allowed")
                return
            }
        }
        #expect(answers(machine.received([.reply("a"), .redirect(moved(to: nodeC), "MOVED 1 c")])) == ["a", "MOVED 1 c"])
    }

    @Test func aRedirectThatDoesNotDecodeFailsOnceRedirectsRunOut() {
        var machine = Machine(commandCount: 1, asUnit: false)
        for _ in 0..<Machine.maximumRedirects { _ = machine.received([.redirect(moved(to: nodeB), nil)]) }
        guard case .failed(let error) = machine.received([.redirect(moved(to: nodeB), nil)]) else {
            Issue.record("gives up")
            return
        }
        #expect(error.code == .redirected)
    }

    @Test func aTransportFailureAfterARedirectLeavesTheOutcomeUnknown() {
        var machine = Machine(commandCount: 2, asUnit: false)
        let refused = RedisError(.connectionFailed, "refused")
        #expect(machine.transportFailed(refused).code == .connectionFailed, "nothing ran yet")
        _ = machine.received([.reply("a"), .redirect(moved(to: nodeB), nil)])
        #expect(machine.transportFailed(refused).code == .connectionLost, "the first command ran")
    }

    /// TRYAGAIN and CLUSTERDOWN are no redirects: they are the answer, a transient error for the
    /// caller's backoff.
    @Test func tryAgainAndClusterDownAreAnswersForTheCallersBackoff() {
        for reply in ["TRYAGAIN Multiple keys request during rehashing of slot", "CLUSTERDOWN The cluster is down"] {
            #expect(ClusterRedirect(errorReply: reply, currentHost: "h") == nil)
            #expect(RedisError.fromReply(reply).isTransient)
        }
    }

    /// hiredis's context error and errno decide, never errstr's text.
    @Test func aSocketTimeoutIsKnownByItsErrno() {
        #expect(RedisConnection.transportErrorCode(hiredisError: 1, osError: EAGAIN) == .timeout)
        #expect(RedisConnection.transportErrorCode(hiredisError: 1, osError: EWOULDBLOCK) == .timeout)
        #expect(RedisConnection.transportErrorCode(hiredisError: 1, osError: ECONNRESET) == .connectionLost)
        #expect(RedisConnection.transportErrorCode(hiredisError: 3, osError: EAGAIN) == .connectionLost, "EOF")
        #expect(RedisConnection.transportErrorCode(hiredisError: 4, osError: 0) == .unexpectedReply, "protocol")
    }
}

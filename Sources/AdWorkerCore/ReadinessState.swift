import AdTelemetryRecords

/// What decides `/readyz` and `/healthz`: the consumers and their open circuits, conditions raised
/// by what noticed them (a lease not taken, a group not created, a permanent refusal), what the
/// readiness probe last found, and each stream's progress. A pure value: every event says when it
/// happened, so tests move time by hand.
struct ReadinessState<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration, Instant: Sendable {
    /// Consumer names repeat across streams (`<host>-<slot>` on each), so they are keyed by both.
    struct ConsumerKey: Hashable, Comparable, Sendable {
        var stream: String
        var name: String

        static func < (lhs: ConsumerKey, rhs: ConsumerKey) -> Bool { (lhs.stream, lhs.name) < (rhs.stream, rhs.name) }
    }

    /// A circuit of one of a consumer's tasks (`role`: reader, sink 1).
    struct OpenCircuit: Hashable, Comparable, Sendable {
        var target: String
        var role: String

        var description: String { "\(target) (\(role))" }

        static func < (lhs: OpenCircuit, rhs: OpenCircuit) -> Bool { (lhs.target, lhs.role) < (rhs.target, rhs.role) }
    }

    struct Consumer: Sendable {
        var state: ConsumerState
        var openCircuits: Set<OpenCircuit> = []
    }

    /// What the readiness probe last saw of one server.
    struct Probe: Sendable {
        var failure: String?
        var at: Instant
    }

    /// A stream's side of liveness: entries waiting, and when it last made progress.
    struct Progress: Sendable {
        var waiting = 0
        var lastProgress: Instant?
    }

    /// From when a stream that never progressed counts as stalled.
    let started: Instant
    private(set) var consumers: [ConsumerKey: Consumer] = [:]
    /// Conditions that make the worker not ready, by what raised them (e.g. group creation).
    private(set) var problems: [String: String] = [:]
    private var probes: [String: Probe] = [:]
    /// Permanent failures by what raised them: their target and kind, for the gauge.
    private var permanent: [String: (target: String, kind: PermanentFailure.Kind)] = [:]
    private var progress: [String: Progress] = [:]
    /// The lease is taken and every stream's consumers are launched.
    var hasStarted = false

    init(started: Instant) {
        self.started = started
    }

    // MARK: Events

    /// - Returns: How many of the stream's consumers are not stopped.
    mutating func consumer(_ key: ConsumerKey, state: ConsumerState) -> Int {
        consumers[key, default: Consumer(state: state)].state = state
        return consumers.count { $0.key.stream == key.stream && $0.value.state != .stopped }
    }

    /// - Returns: Whether any consumer of the stream has a circuit to `target` open.
    mutating func circuit(_ circuit: OpenCircuit, of key: ConsumerKey, isOpen: Bool) -> Bool {
        if isOpen {
            consumers[key, default: Consumer(state: .running)].openCircuits.insert(circuit)
        } else {
            consumers[key, default: Consumer(state: .running)].openCircuits.remove(circuit)
        }
        return consumers.contains { $0.key.stream == key.stream && $0.value.openCircuits.contains { $0.target == circuit.target } }
    }

    /// The targets some consumer of `stream` has a circuit open to.
    func openTargets(of stream: String) -> Set<String> {
        Set(consumers.filter { $0.key.stream == stream }.flatMap(\.value.openCircuits).map(\.target))
    }

    /// Raises (a reason that names the fix) or clears (nil) the condition `key` raised.
    mutating func problem(_ key: String, _ reason: String?) {
        problems[key] = reason
    }

    /// Raises or clears (nil) a permanent failure as the problem `key`.
    /// - Returns: For each kind the change touched, whether any of `target`'s failures still has it.
    mutating func permanentFailure(_ key: String, target: String, _ failure: PermanentFailure?) -> [(kind: PermanentFailure.Kind, raised: Bool)] {
        let previous = permanent[key]
        problems[key] = failure?.fix
        permanent[key] = failure.map { (target, $0.kind) }
        let kinds = Set([previous?.kind, failure?.kind].compactMap { $0 })
        return kinds.map { kind in (kind, permanent.values.contains { $0.target == target && $0.kind == kind }) }
    }

    mutating func probe(_ target: String, failure: String?, at instant: Instant) {
        probes[target] = Probe(failure: failure, at: instant)
    }

    /// A consumer of `stream` committed a batch, or read and found nothing new (it keeps up).
    mutating func progressed(_ stream: String, at instant: Instant) {
        progress[stream, default: Progress()].lastProgress = instant
    }

    /// The stream's queue as sampled: entries not yet read plus those pending.
    /// - Returns: How long since the stream last made progress (since the start if never).
    mutating func waiting(_ stream: String, entries: Int, at instant: Instant) -> Duration {
        progress[stream, default: Progress()].waiting = entries
        return (progress[stream]?.lastProgress ?? started).duration(to: instant)
    }

    // MARK: Decisions

    /// Consumers with a circuit open, `stream/consumer`, sorted.
    var openCircuits: [(consumer: String, target: String)] {
        consumers.sorted { $0.key < $1.key }.flatMap { key, consumer in
            consumer.openCircuits.sorted().map { ("\(key.stream)/\(key.name)", $0.description) }
        }
    }

    /// Why the worker is not ready: open circuits, raised problems and the probe's last findings
    /// (stale after `probeMaximumAge`).
    func notReadyReasons(probing targets: [String], probeMaximumAge: Duration, now: Instant) -> [String] {
        let circuits = openCircuits.map { "\($0.target) circuit open on consumer \($0.consumer)" }
        // Several consumers meeting one refusal raise one reason each: say it once.
        var reasons: [String] = []
        for reason in circuits + problems.keys.sorted().compactMap({ problems[$0] }) where !reasons.contains(reason) {
            reasons.append(reason)
        }
        for target in targets {
            guard let probe = probes[target] else {
                reasons.append("\(target) not probed yet")
                continue
            }
            if let failure = probe.failure {
                reasons.append("\(target) unreachable: \(failure)")
            } else if probe.at.duration(to: now) > probeMaximumAge {
                reasons.append("\(target) not probed for \(probe.at.duration(to: now))")
            }
        }
        return reasons
    }

    /// Streams that have neither committed a batch nor caught up for longer than `timeout` while
    /// entries wait, with nothing that explains it: no circuit open on the stream and no problem
    /// raised (those already say why, and a restart would not help). One line per stuck stream.
    func stalledStreams(after timeout: Duration, now: Instant) -> [String] {
        guard problems.isEmpty else { return [] }
        return progress.keys.sorted().compactMap { name -> String? in
            let stream = progress[name]!
            let since = (stream.lastProgress ?? started).duration(to: now)
            let explained = consumers.contains { $0.key.stream == name && !$0.value.openCircuits.isEmpty }
            guard stream.waiting > 0, since > timeout, !explained else { return nil }
            return "\(name): no batch committed for \(Int(since.inSeconds)) s while \(stream.waiting) entries wait, and no circuit is open"
        }
    }
}

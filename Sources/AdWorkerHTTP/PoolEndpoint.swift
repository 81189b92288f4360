import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import AdTelemetryRecords
public import AdWorkerCore
public import Hummingbird
public import Logging

/// The endpoint of `adworker run --processes N`: the same paths as one worker's, aggregated over
/// the worker processes, which each serve theirs on loopback. A process that is down makes
/// `/readyz` answer 503 and shows in `/status` and as `adworker_process_up{process} 0`. `/healthz`
/// answers from memory what ``PoolProbe`` last found (a process not answering, or stuck by its own
/// account), so a frozen process never makes the pool's answer slow.
public enum PoolEndpoint {
    public struct Process: Sendable {
        public var index: Int
        public var state: WorkerProcessState
        public var port: Int?

        public init(index: Int, state: WorkerProcessState, port: Int?) {
            self.index = index
            self.state = state
            self.port = port
        }
    }

    /// - Parameters:
    ///   - health: Why the pool is not healthy (``PoolMonitor/unhealthyReasons()``); empty when it is.
    ///   - probeTimeout: The longest `/readyz` waits for any process's own `/readyz`.
    public static func application(
        host: String, port: Int, version: String, processes: @escaping @Sendable () -> [Process], health: @escaping @Sendable () -> [String],
        probeTimeout: Duration, logger: Logger
    ) -> some ApplicationProtocol {
        let started = ContinuousClock.now
        let router = Router()
        router.get("/healthz") { _, _ in
            let reasons = health()
            return json(reasons.isEmpty ? .ok : .serviceUnavailable, reasons.isEmpty ? ["status": "alive"] : ["status": "stuck", "reasons": reasons])
        }
        router.get("/readyz") { _, _ in
            let reasons = await notReadyReasons(processes(), probeTimeout: probeTimeout)
            return json(reasons.isEmpty ? .ok : .serviceUnavailable, reasons.isEmpty ? ["status": "ready"] : ["status": "not ready", "reasons": reasons])
        }
        router.get("/metrics") { _, _ in
            let body = await metrics(processes())
            return text(.ok, body, type: "text/plain; version=0.0.4; charset=utf-8")
        }
        router.get("/status") { _, _ in
            let merged = await status(processes(), version: version, uptimeSeconds: (ContinuousClock.now - started).inSeconds)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return text(.ok, String(decoding: (try? encoder.encode(merged)) ?? Data(), as: UTF8.self), type: "application/json")
        }
        router.get("/") { _, _ in
            text(.ok, StatusPage.html, type: "text/html; charset=utf-8")
        }
        return Application(
            router: router, server: HTTPLimits.server, configuration: HTTPLimits.configuration(host: host, port: port, logger: logger),
            logger: logger
        )
    }

    /// Every process's own `/readyz` reasons, by process, each prefixed with the process; a
    /// process not running is a reason of its own. All at once, each bounded: a frozen process
    /// costs one probe timeout, well within a probe's own.
    private static func notReadyReasons(_ processes: [Process], probeTimeout: Duration) async -> [String] {
        let answers = await withTaskGroup(of: (Int, [String]).self) { group in
            for process in processes {
                group.addTask {
                    guard process.state == .running, let port = process.port else {
                        return (process.index, ["worker process \(process.index) is \(process.state.rawValue)"])
                    }
                    let (status, body) = await fetch(port: port, path: "/readyz", timeout: probeTimeout)
                    guard status != 200 else { return (process.index, []) }
                    let childReasons = (try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["reasons"] as? [String]
                    return (process.index, (childReasons ?? ["no answer"]).map { "worker process \(process.index): \($0)" })
                }
            }
            var answers: [Int: [String]] = [:]
            for await (index, reasons) in group { answers[index] = reasons }
            return answers
        }
        return answers.keys.sorted().flatMap { answers[$0]! }
    }

    /// `adworker_process_up` for each process, then every running process's metrics with a
    /// `process` label. All at once: one hung process costs the scrape one timeout, not one per process.
    private static func metrics(_ processes: [Process]) async -> String {
        var texts: [(process: Int, text: String)] = []
        var up = "# HELP adworker_process_up \(MetricHelp.texts["adworker_process_up"]!)\n# TYPE adworker_process_up gauge\n"
        let answers = await withTaskGroup(of: (Int, String?).self) { group in
            for process in processes {
                group.addTask {
                    guard process.state == .running, let port = process.port else { return (process.index, nil) }
                    let (status, body) = await fetch(port: port, path: "/metrics")
                    return (process.index, status == 200 ? String(decoding: body, as: UTF8.self) : nil)
                }
            }
            var answers: [Int: String?] = [:]
            for await (index, text) in group { answers[index] = text }
            return answers
        }
        for index in answers.keys.sorted() {
            if let text = answers[index] ?? nil { texts.append((index, text)) }
            up += "adworker_process_up{process=\"\(index)\"} \((answers[index] ?? nil) == nil ? 0 : 1)\n"
        }
        return up + PoolAggregation.mergeMetrics(texts)
    }

    /// Every running process's `/status`, merged; one that does not answer shows as unreachable.
    private static func status(_ processes: [Process], version: String, uptimeSeconds: Double) async -> WorkerStatus.Snapshot {
        var reports: [(process: Int, state: WorkerProcessState, snapshot: WorkerStatus.Snapshot?)] = []
        for process in processes {
            var snapshot: WorkerStatus.Snapshot?
            if process.state == .running, let port = process.port {
                let (status, body) = await fetch(port: port, path: "/status")
                if status == 200 { snapshot = try? JSONDecoder().decode(WorkerStatus.Snapshot.self, from: body) }
            }
            reports.append((process.index, snapshot == nil && process.state == .running ? .unreachable : process.state, snapshot))
        }
        return PoolAggregation.mergeStatus(version: version, uptimeSeconds: uptimeSeconds, processes: reports)
    }

    private static func json(_ status: HTTPResponse.Status, _ object: [String: Any]) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return text(status, String(decoding: data, as: UTF8.self), type: "application/json")
    }

    private static func text(_ status: HTTPResponse.Status, _ body: String, type: String) -> Response {
        Response(status: status, headers: [.contentType: type], body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    /// GET from a worker process's loopback endpoint; status 0 when it does not answer within `timeout`.
    static func fetch(port: Int, path: String, timeout: Duration = .seconds(3)) async -> (Int, Data) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        // FoundationNetworking on Linux fails a request whose interval is under a second at once
        // (seen with 0.5: every probe failed in milliseconds), so its own timeout is whole seconds
        // and the race below keeps the bound.
        request.timeoutInterval = max(1, timeout.inSeconds.rounded(.up))
        let bounded = request
        return await withTaskGroup(of: (Int, Data)?.self) { group in
            group.addTask {
                guard let (data, response) = try? await URLSession.shared.data(for: bounded) else { return (0, Data()) }
                return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            // Cancels the request (or the timer) that lost.
            group.cancelAll()
            return first ?? (0, Data())
        }
    }
}

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import AdTelemetryRecords
import AdWorkerCore
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
        public var state: String
        public var port: Int?

        public init(index: Int, state: String, port: Int?) {
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
            let object: [String: Any] = reasons.isEmpty ? ["status": "alive"] : ["status": "stuck", "reasons": reasons]
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            return text(reasons.isEmpty ? .ok : .serviceUnavailable, String(decoding: data, as: UTF8.self), type: "application/json")
        }
        router.get("/readyz") { _, _ in
            // All at once, each bounded: a frozen process costs one probe timeout, well within a probe's own.
            let answers = await withTaskGroup(of: (Int, [String]).self) { group in
                for process in processes() {
                    group.addTask {
                        guard process.state == "running", let port = process.port else {
                            return (process.index, ["worker process \(process.index) is \(process.state)"])
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
            let reasons = answers.keys.sorted().flatMap { answers[$0]! }
            let object: [String: Any] = reasons.isEmpty ? ["status": "ready"] : ["status": "not ready", "reasons": reasons]
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            return text(reasons.isEmpty ? .ok : .serviceUnavailable, String(decoding: data, as: UTF8.self), type: "application/json")
        }
        router.get("/metrics") { _, _ in
            var texts: [(process: Int, text: String)] = []
            var up = "# HELP adworker_process_up \(MetricHelp.texts["adworker_process_up"]!)\n# TYPE adworker_process_up gauge\n"
            // All at once: one hung process costs the scrape one timeout, not one per process.
            let answers = await withTaskGroup(of: (Int, String?).self) { group in
                for process in processes() {
                    group.addTask {
                        guard process.state == "running", let port = process.port else { return (process.index, nil) }
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
            return text(.ok, up + PoolAggregation.mergeMetrics(texts), type: "text/plain; version=0.0.4; charset=utf-8")
        }
        router.get("/status") { _, _ in
            var reports: [(process: Int, state: String, snapshot: WorkerStatus.Snapshot?)] = []
            for process in processes() {
                var snapshot: WorkerStatus.Snapshot?
                if process.state == "running", let port = process.port {
                    let (status, body) = await fetch(port: port, path: "/status")
                    if status == 200 { snapshot = try? JSONDecoder().decode(WorkerStatus.Snapshot.self, from: body) }
                }
                reports.append((process.index, snapshot == nil && process.state == "running" ? "unreachable" : process.state, snapshot))
            }
            let merged = PoolAggregation.mergeStatus(version: version, uptimeSeconds: (ContinuousClock.now - started).inSeconds, processes: reports)
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

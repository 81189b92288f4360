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
/// `/readyz` answer 503 and shows in `/status` and as `adworker_process_up{process} 0`.
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

    public static func application(
        host: String, port: Int, version: String, processes: @escaping @Sendable () -> [Process], logger: Logger
    ) -> some ApplicationProtocol {
        let started = ContinuousClock.now
        let router = Router()
        router.get("/healthz") { _, _ in
            let reasons = await stuckReasons(processes())
            let object: [String: Any] = reasons.isEmpty ? ["status": "alive"] : ["status": "stuck", "reasons": reasons]
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            return text(reasons.isEmpty ? .ok : .serviceUnavailable, String(decoding: data, as: UTF8.self), type: "application/json")
        }
        router.get("/readyz") { _, _ in
            var reasons: [String] = []
            for process in processes() {
                guard process.state == "running", let port = process.port else {
                    reasons.append("worker process \(process.index) is \(process.state)")
                    continue
                }
                let (status, body) = await fetch(port: port, path: "/readyz")
                if status != 200 {
                    let childReasons = (try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["reasons"] as? [String]
                    reasons += (childReasons ?? ["no answer"]).map { "worker process \(process.index): \($0)" }
                }
            }
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

    /// Why running worker processes say they are stuck (their `/healthz`). A process that is down
    /// is the supervisor's to restart, not a reason to restart the pool.
    public static func stuckReasons(_ processes: [Process]) async -> [String] {
        var reasons: [String] = []
        for process in processes where process.state == "running" {
            guard let port = process.port else { continue }
            let (status, body) = await fetch(port: port, path: "/healthz")
            guard status == 503 else { continue }
            let childReasons = (try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["reasons"] as? [String]
            reasons += (childReasons ?? ["stuck"]).map { "worker process \(process.index): \($0)" }
        }
        return reasons
    }

    private static func text(_ status: HTTPResponse.Status, _ body: String, type: String) -> Response {
        Response(status: status, headers: [.contentType: type], body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    /// GET from a worker process's loopback endpoint; status 0 when it does not answer.
    static func fetch(port: Int, path: String) async -> (Int, Data) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.timeoutInterval = 3
        guard let (data, response) = try? await URLSession.shared.data(for: request) else { return (0, Data()) }
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }
}

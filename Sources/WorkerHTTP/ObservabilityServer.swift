import Foundation
public import Hummingbird
public import Logging
public import Prometheus
public import Worker

/// The worker's HTTP face: `/healthz` (alive), `/readyz` (the last probe found Redis and
/// PostgreSQL answering, no circuit open, nothing failing), `/metrics` (Prometheus text), `/status` (JSON) and `/` (a page rendering
/// `/status`). Nothing it serves carries a secret: configuration never appears, only figures.
public enum ObservabilityServer {
    /// Why the worker is not ready; empty when it is. Answered from memory (``Readiness``).
    public typealias ReadinessCheck = @Sendable () async -> [String]
    /// Why the worker is stuck (``WorkerStatus/stalledStreams(after:now:)``); empty while it makes progress.
    public typealias LivenessCheck = @Sendable () -> [String]

    public static func application(
        host: String, port: Int, status: WorkerStatus, registry: PrometheusCollectorRegistry, readiness: @escaping ReadinessCheck,
        liveness: @escaping LivenessCheck = { [] }, logger: Logger
    ) -> some ApplicationProtocol {
        let router = Router()
        router.get("/healthz") { _, _ in
            let reasons = liveness()
            if reasons.isEmpty { return json(.ok, ["status": "alive"]) }
            return json(.serviceUnavailable, ["status": "stuck", "reasons": reasons])
        }
        router.get("/readyz") { _, _ in
            let reasons = await readiness()
            if reasons.isEmpty { return json(.ok, ["status": "ready"]) }
            return json(.serviceUnavailable, ["status": "not ready", "reasons": reasons])
        }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: MetricHelp.annotate(String(decoding: registry.emitToBuffer(), as: UTF8.self))))
            )
        }
        router.get("/status") { _, _ in
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let body = (try? encoder.encode(status.snapshot())) ?? Data("{}".utf8)
            return Response(
                status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: body))
            )
        }
        router.get("/") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: statusPage))
            )
        }
        return Application(
            router: router, server: HTTPLimits.server, configuration: HTTPLimits.configuration(host: host, port: port, logger: logger),
            logger: logger
        )
    }

    private static func json(_ status: HTTPResponse.Status, _ object: [String: any Sendable]) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// A self-contained page that polls `/status` and `/readyz` every two seconds.
    static let statusPage = """
        <!doctype html>
        <html><head><meta charset="utf-8"><title>adworker</title>
        <style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}
        td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}th:first-child,td:first-child{text-align:left}
        .bad{color:#b00}.good{color:#070}</style></head>
        <body><h1>adworker <span id="ready"></span></h1><p id="meta"></p>
        <table id="streams"><thead><tr><th>stream</th><th>rows/s</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th>
        <th>queue</th><th>lag</th><th>pending</th><th>error rate</th><th>failed attempts</th></tr></thead><tbody></tbody></table>
        <h2>consumers</h2><table id="consumers"><thead><tr><th>consumer</th><th>stream</th><th>state</th><th>open circuits</th></tr></thead><tbody></tbody></table>
        <script>
        const cell = v => `<td>${v ?? "–"}</td>`;
        async function refresh() {
          const ready = await fetch("/readyz").then(r => r.json().then(b => [r.ok, b])).catch(() => [false, {reasons: ["unreachable"]}]);
          document.getElementById("ready").innerHTML = ready[0] ? '<span class="good">ready</span>' : `<span class="bad">not ready: ${(ready[1].reasons || []).join("; ")}</span>`;
          const s = await fetch("/status").then(r => r.json());
          document.getElementById("meta").textContent = `version ${s.version}, up ${Math.round(s.uptimeSeconds)} s`;
          document.querySelector("#streams tbody").innerHTML = s.streams.map(t => "<tr>" + [t.stream, t.rowsPerSecond.toFixed(1),
            t.latencyP50Milliseconds, t.latencyP95Milliseconds, t.latencyP99Milliseconds, t.queueLength, t.lag, t.pending,
            (t.errorRate * 100).toFixed(2) + " %", t.failedAttempts].map(cell).join("") + "</tr>").join("");
          document.querySelector("#consumers tbody").innerHTML = s.consumers.map(c => "<tr>" + [c.consumer, c.stream, c.state,
            c.openCircuits.join(", ")].map(cell).join("") + "</tr>").join("");
        }
        refresh(); setInterval(refresh, 2000);
        </script></body></html>
        """
}

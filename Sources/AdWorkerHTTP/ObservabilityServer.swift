public import AdWorkerCore
import Foundation
public import Hummingbird
public import Logging
public import Prometheus

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
                body: ResponseBody(byteBuffer: ByteBuffer(string: StatusPage.html))
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
}

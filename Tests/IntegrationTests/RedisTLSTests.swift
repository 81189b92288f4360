import AdTelemetry
import AdTelemetryRecords
import AdWorkerCore
import AdWorkerRedis
import AdWorkerTestSupport
import Logging
import Testing

/// TLS to Redis on real, TLS-only redis-servers with the certificates `scripts/tls-certs.sh` makes:
/// the whole pipeline over TLS, and every refusal with the code that says which.
@Suite("Redis over TLS", .timeLimit(.minutes(2)))
struct RedisTLSTests {
    @Test func aProducerAndAWorkerOverTLSStoreEveryRecordOnce() async throws {
        try await TLSRedis.with { redis, _ in
            try await TestServers.withTestSchema { postgres in
                let prefix = TestServers.uniqueName("tls") + ":"
                var telemetry = SyntheticTelemetry(seed: 22)
                let records = (0..<1500).flatMap { number -> [TelemetryRecord] in
                    let (training, inference) = telemetry.request(number: number)
                    return [.training(training), .inference(inference)]
                }
                let producer = TelemetryProducer(
                    configuration: TelemetryProducerConfiguration(redis: redis, streamPrefix: prefix), logger: TestServers.logger)
                let sent = try await withRunningService(producer) { try await producer.send(records).map { try $0.get() } }
                #expect(sent.count == 3000)

                var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres)
                configuration.redis = redis
                try await WorkerService(configuration: configuration, logger: TestServers.logger).run()

                #expect(try await TestServers.count(postgres, "training_data") == 1500)
                #expect(try await TestServers.count(postgres, "inference_results") == 1500)
                let pending = try await RedisConnection.withConnection(redis, logger: TestServers.logger) { connection in
                    var pending = 0
                    for kind in RecordKind.allCases {
                        pending += try await connection.pendingCount(configuration.streams(for: kind)[0], group: "adworker")
                    }
                    return pending
                }
                #expect(pending == 0)
            }
        }
    }

    @Test func anIPv6LiteralInARedissURLIsReachedAndVerifiedByItsAddress() async throws {
        try await TLSRedis.with(host: "::1") { redis, certificates in
            var configuration = try RedisConfiguration(url: "rediss://[::1]:\(redis.port)")
            configuration.tls?.certificateAuthorityFile = "\(certificates)/ca.crt"
            try await RedisConnection.withConnection(configuration, logger: TestServers.logger) { try await $0.ping() }
            #expect(configuration.description == "rediss://[::1]:\(redis.port)")
        }
    }

    /// How a connection to a TLS-only server configured as `change` ends.
    static func refusal(
        certificate: TLSRedis.ServerCertificate = .valid, requiresClientCertificate: Bool = false,
        _ change: (inout RedisConfiguration, String) -> Void
    ) async throws -> RedisError? {
        try await TLSRedis.with(certificate: certificate, requiresClientCertificate: requiresClientCertificate) { redis, certificates in
            var configuration = redis
            change(&configuration, certificates)
            do {
                try await RedisConnection.withConnection(configuration, logger: TestServers.logger) { try await $0.ping() }
                return nil
            } catch let error as RedisError {
                return error
            }
        }
    }

    @Test func aServerCertificateFromAnotherAuthorityIsRefusedAsUntrusted() async throws {
        let error = try await Self.refusal { redis, certificates in redis.tls = TLSRedis.clientTLS(certificates, authority: "other-ca.crt") }
        #expect(error?.code == .tlsCertificateRejected)
        #expect(error?.message.contains("REDIS_TLS_CA_FILE") == true, "\(String(describing: error))")
    }

    @Test func aServerCertificateForAnotherNameIsRefusedNamingTheName() async throws {
        let error = try await Self.refusal { redis, _ in redis.tls?.serverName = "redis.example.com" }
        #expect(error?.code == .tlsCertificateRejected)
        #expect(error?.message.contains("not issued for redis.example.com") == true, "\(String(describing: error))")
    }

    @Test func anExpiredServerCertificateIsRefusedAsExpired() async throws {
        let error = try await Self.refusal(certificate: .expired) { _, _ in }
        #expect(error?.code == .tlsCertificateRejected)
        #expect(error?.message.contains("has expired") == true, "\(String(describing: error))")
    }

    @Test func anUnverifiedConnectionToAnExpiredCertificateIsWhatTurningVerificationOffMeans() async throws {
        let error = try await Self.refusal(certificate: .expired) { redis, _ in redis.tls?.verifiesServer = false }
        #expect(error == nil)
    }

    @Test func aPlaintextClientOnATLSPortIsToldToUseTLS() async throws {
        let error = try await Self.refusal { redis, _ in redis.tls = nil }
        #expect(error?.code == .tlsRequired, "\(String(describing: error))")
    }

    @Test func aTLSClientOnAPlaintextPortIsToldTheServerDoesNotSpeakIt() async throws {
        var redis = TestServers.redis
        redis.tls = TLSRedis.clientTLS(try await TLSRedis.certificates())
        redis.connectTimeout = .seconds(2)
        let error = await #expect(throws: RedisError.self) {
            try await RedisConnection.withConnection(redis, logger: TestServers.logger) { try await $0.ping() }
        }
        #expect(error?.code == .tlsNotOffered, "\(String(describing: error))")
    }

    @Test func aServerThatWantsAClientCertificateRefusesOneWithoutAndTakesOneWith() async throws {
        let without = try await Self.refusal(requiresClientCertificate: true) { redis, _ in
            redis.tls?.certificateFile = nil
            redis.tls?.keyFile = nil
        }
        #expect(without?.code == .tlsHandshakeFailed, "\(String(describing: without))")
        #expect(without?.message.contains("REDIS_TLS_CERT_FILE") == true, "\(String(describing: without))")
        let with = try await Self.refusal(requiresClientCertificate: true) { _, _ in }
        #expect(with == nil)
    }

    @Test func aCAFileThatCannotBeReadIsRefusedNamingIt() async throws {
        let error = try await Self.refusal { redis, _ in redis.tls?.certificateAuthorityFile = "/nonexistent/ca.crt" }
        #expect(error?.code == .tlsConfiguration)
        #expect(error?.message.contains("/nonexistent/ca.crt") == true)
    }

    @Test func aProducerPointedAtAnUntrustedServerIsToldItIsMisconfiguredAtOnce() async throws {
        try await TLSRedis.with { redis, certificates in
            var configuration = redis
            configuration.tls = TLSRedis.clientTLS(certificates, authority: "other-ca.crt")
            let producer = TelemetryProducer(
                configuration: TelemetryProducerConfiguration(redis: configuration, streamPrefix: TestServers.uniqueName("tls") + ":"),
                logger: TestServers.logger)
            var telemetry = SyntheticTelemetry(seed: 1)
            let (training, _) = telemetry.request(number: 0)
            let error = try await withRunningService(producer) {
                await #expect(throws: TelemetryProducerError.self) { _ = try await producer.send(training) }
            }
            #expect(error?.code == .misconfigured, "\(String(describing: error))")
        }
    }
}

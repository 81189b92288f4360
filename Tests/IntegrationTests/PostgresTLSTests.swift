import AdTelemetry
import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres
import AdWorkerRedis
import AdWorkerTestSupport
import Foundation
import Testing

/// PostgreSQL over TLS on the cluster `scripts/postgres-tls.sh` starts (TLS only, port 5433, the
/// certificates of `scripts/tls-certs.sh`): verify-full with the test CA, a client certificate as
/// the login, a URL, and the whole pipeline with Redis over TLS too.
@Suite("PostgreSQL over TLS", .timeLimit(.minutes(2)))
struct PostgresTLSTests {
    static var port: Int { Int(ProcessInfo.processInfo.environment["ADWORKER_POSTGRES_TLS_PORT"] ?? "") ?? 5433 }

    static func verifyingConfiguration(_ certificates: String, database: String = "adworker_tls") -> PostgresConfiguration {
        var configuration = PostgresConfiguration(
            host: "localhost", port: port, database: database, user: "adworker", password: TestServers.postgres.password, sslMode: "verify-full")
        configuration.sslRootCertificate = "\(certificates)/ca.crt"
        return configuration
    }

    /// Whether this session is encrypted, and the client certificate's subject, as the server sees them.
    static func session(_ configuration: PostgresConfiguration) async throws -> [String?] {
        try await TestServers.query(configuration, "SELECT ssl::text, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()")[0]
    }

    @Test func verifyFullWithTheTestCAConnectsEncrypted() async throws {
        let configuration = Self.verifyingConfiguration(try await TLSRedis.certificates())
        #expect(try await Self.session(configuration) == ["true", nil])
    }

    @Test func aClientCertificateIsTheLoginWhereTheServerSaysSo() async throws {
        let certificates = try await TLSRedis.certificates()
        var configuration = Self.verifyingConfiguration(certificates, database: "adworker_mtls")
        configuration.password = nil
        configuration.sslCertificate = "\(certificates)/client.crt"
        configuration.sslKey = "\(certificates)/client.key"
        #expect(try await Self.session(configuration) == ["true", "/CN=adworker"])
    }

    @Test func aURLCarriesTheTLSSettings() async throws {
        let certificates = try await TLSRedis.certificates()
        var configuration = PostgresConfiguration()
        configuration.url = "postgresql://adworker@localhost:\(Self.port)/adworker_tls?sslmode=verify-full&sslrootcert=\(certificates)/ca.crt"
        configuration.password = TestServers.postgres.password
        #expect(try await Self.session(configuration) == ["true", nil])
    }

    /// Each TLS refusal libpq states only in words is told apart by OpenSSL's codes, and its
    /// message says what to change.
    @Test func aServerCertificateFromAnotherAuthorityIsRefusedNamingTheSetting() async throws {
        var configuration = Self.verifyingConfiguration(try await TLSRedis.certificates())
        configuration.sslRootCertificate = "\(try await TLSRedis.certificates())/other-ca.crt"
        let error = await #expect(throws: PostgresError.self) { _ = try await Self.session(configuration) }
        #expect(error?.code == .tlsCertificateRejected)
        #expect(error?.message.contains("set DATABASE_SSLROOTCERT to its CA's certificate") == true, "\(String(describing: error))")
    }

    @Test func aNameTheServerCertificateDoesNotHoldIsRefusedUnderVerifyFull() async throws {
        let certificates = try await TLSRedis.certificates()
        var configuration = PostgresConfiguration()
        // The address is the server's; the name verify-full checks is one its certificate lacks.
        configuration.url = "postgresql://adworker@db.invalid:\(Self.port)/adworker_tls?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert=\(certificates)/ca.crt"
        configuration.password = TestServers.postgres.password
        let error = await #expect(throws: PostgresError.self) { _ = try await Self.session(configuration) }
        #expect(error?.code == .tlsCertificateRejected)
        #expect(error?.message.contains("not issued for db.invalid") == true, "\(String(describing: error))")
        configuration.url = configuration.url!.replacingOccurrences(of: "verify-full", with: "verify-ca")
        #expect(try await Self.session(configuration) == ["true", nil], "verify-ca checks the authority only")
    }

    @Test func aClientCertificateTheServerRefusesIsNamed() async throws {
        let certificates = try await TLSRedis.certificates()
        var configuration = Self.verifyingConfiguration(certificates, database: "adworker_mtls")
        configuration.password = nil
        configuration.sslCertificate = "\(certificates)/expired.crt"
        configuration.sslKey = "\(certificates)/expired.key"
        let error = await #expect(throws: PostgresError.self) { _ = try await Self.session(configuration) }
        #expect(error?.code == .tlsHandshakeFailed)
        #expect(error?.message.contains("set DATABASE_SSLCERT and DATABASE_SSLKEY") == true, "\(String(describing: error))")
    }

    /// The test PostgreSQL of `scripts/dev-services.sh` has ssl = off.
    @Test func aServerWithoutTLSIsRefusedWhenTLSIsRequired() async throws {
        var configuration = TestServers.postgres
        #expect(try await TestServers.query(configuration, "SHOW ssl") == [["off"]], "this test needs a server without TLS")
        configuration.sslMode = "require"
        let error = await #expect(throws: PostgresError.self) { _ = try await Self.session(configuration) }
        #expect(error?.code == .tlsNotOffered)
        configuration.sslMode = "prefer"
        #expect(try await Self.session(configuration) == ["false", nil], "prefer falls back to plaintext")
    }

    @Test func aPlaintextSessionIsRefusedByTheServer() async throws {
        var configuration = Self.verifyingConfiguration(try await TLSRedis.certificates())
        configuration.sslMode = "disable"
        let error = await #expect(throws: PostgresError.self) { _ = try await Self.session(configuration) }
        #expect(error?.sqlState == "28000", "pg_hba.conf has no line for a plaintext session")
    }

    @Test func theWholePipelineOverTLSStoresEveryRecordOnce() async throws {
        try await TLSRedis.with { redis, certificates in
            var postgres = Self.verifyingConfiguration(certificates)
            postgres.searchPath = TestServers.uniqueName("tls")
            let migrations = try Migration.load(from: TestServers.schemaDirectory)
            try await PostgresConnection.withConnection(postgres, logger: TestServers.logger) { connection in
                try await connection.execute("CREATE SCHEMA \(postgres.searchPath!)")
                _ = try await connection.migrate(migrations)
            }
            let prefix = TestServers.uniqueName("tls") + ":"
            var telemetry = SyntheticTelemetry(seed: 5)
            let records = (0..<1000).flatMap { number -> [TelemetryRecord] in
                let (training, inference) = telemetry.request(number: number)
                return [.training(training), .inference(inference)]
            }
            let producer = TelemetryProducer(configuration: TelemetryProducerConfiguration(redis: redis, streamPrefix: prefix), logger: TestServers.logger)
            _ = try await withRunningService(producer) { try await producer.send(records).map { try $0.get() } }
            var configuration = TestServers.workerConfiguration(prefix: prefix, postgres: postgres)
            configuration.redis = redis
            try await WorkerService(configuration: configuration, logger: TestServers.logger).run()
            #expect(try await TestServers.count(postgres, "training_data") == 1000)
            #expect(try await TestServers.count(postgres, "inference_results") == 1000)
            try await PostgresConnection.withConnection(postgres, logger: TestServers.logger) { connection in
                try await connection.execute("DROP SCHEMA \(postgres.searchPath!) CASCADE")
            }
        }
    }
}

import AdWorkerPostgres
import AdWorkerRedis

/// Failures that retrying cannot fix: the configuration or the servers' set-up must change. The
/// worker still retries them (nothing is acknowledged, the entries wait in Redis, and the fix
/// takes effect without a restart), but says so unmistakably: `/readyz` 503 with ``fix``, an
/// error log line at a bounded rate, `adworker_permanent_errors{target,kind}` 1.
struct PermanentFailure: Equatable, Sendable {
    /// The refusals retrying cannot fix. The raw value is the label in
    /// `adworker_permanent_errors{kind}`, as in `adworker_errors_total{kind}`: a SQLSTATE or a Redis code name.
    enum Kind: String, CaseIterable, Sendable {
        case invalidPassword = "28P01"
        case loginRefused = "28000"
        case missingDatabase = "3D000"
        case missingTable = "42P01"
        case missingColumn = "42703"
        case permissionDenied = "42501"
        case redisAuthenticationFailed = "authenticationFailed"
        case redisNoPermission = "noPermission"
        case redisOutOfMemory = "outOfMemory"
        case redisWrongType = "wrongType"
        case redisTLSCertificateRejected = "tlsCertificateRejected"
        case redisTLSRequired = "tlsRequired"
        case redisTLSNotOffered = "tlsNotOffered"
        case redisTLSHandshakeFailed = "tlsHandshakeFailed"
        case redisTLSConfiguration = "tlsConfiguration"
        case redisUnknownMaster = "unknownMaster"
        case postgresTLSCertificateRejected = "postgres.tlsCertificateRejected"
        case postgresTLSNotOffered = "postgres.tlsNotOffered"
        case postgresTLSHandshakeFailed = "postgres.tlsHandshakeFailed"

        /// The label in `adworker_permanent_errors{target,kind}`: a TLS refusal is named the same
        /// for both targets.
        var label: String {
            switch self {
            case .postgresTLSCertificateRejected: Self.redisTLSCertificateRejected.rawValue
            case .postgresTLSNotOffered: Self.redisTLSNotOffered.rawValue
            case .postgresTLSHandshakeFailed: Self.redisTLSHandshakeFailed.rawValue
            default: rawValue
            }
        }

        /// What an operator changes, for a PostgreSQL refusal (a Redis one names the key or user from
        /// its message). Class 28 and 3D000 arrive at login, the others on a statement.
        var postgresFix: String? {
            switch self {
            case .invalidPassword: "wrong password: set DATABASE_PASSWORD (or DATABASE_PASSWORD_FILE) to the role's password"
            case .loginRefused: "the login is not allowed: check DATABASE_USER and pg_hba.conf for this host"
            case .missingDatabase: "the database does not exist: create it, or set DATABASE_NAME"
            case .missingTable: "a table is missing: run adworker migrate"
            case .missingColumn: "a column is missing: run adworker migrate"
            case .permissionDenied: "permission denied: grant the worker's role what deploy/postgres/worker-role.sql grants"
            default: nil
            }
        }
    }

    var kind: Kind
    /// What is wrong and what to change.
    var fix: String

    init?(_ error: any Error) {
        switch error {
        case let error as PostgresError:
            if let kind = Self.tlsKind(error.code) {
                self.kind = kind
                // The message names what is wrong and what to change.
                self.fix = "PostgreSQL TLS: \(error.message)"
                return
            }
            guard let sqlState = error.sqlState, let kind = Kind(rawValue: sqlState), let fix = kind.postgresFix else { return nil }
            self.kind = kind
            self.fix = "PostgreSQL refuses (sqlstate \(sqlState)): \(fix)"
        case let error as RedisError:
            switch error.code {
            case .authenticationFailed:
                self.kind = .redisAuthenticationFailed
                self.fix = "Redis refuses the credentials (\(error.message)): set REDIS_USERNAME and REDIS_PASSWORD (or REDIS_PASSWORD_FILE) to an ACL user's"
            case .noPermission:
                self.kind = .redisNoPermission
                self.fix = "Redis's ACL denies a command (\(error.message)): give the worker's user the commands and keys in deploy/redis/users.acl"
            case .outOfMemory:
                self.kind = .redisOutOfMemory
                self.fix = "Redis is out of memory (maxmemory with noeviction): free memory (trim or delete old streams and dead letters) or raise maxmemory"
            case .wrongType:
                self.kind = .redisWrongType
                self.fix = "\(error.message): rename or delete that key (redis-cli TYPE, RENAME, DEL), or set ADWORKER_STREAM_PREFIX to a prefix of your own; its consumers start once it is a stream or gone"
            case .unknownMaster:
                self.kind = .redisUnknownMaster
                self.fix = "Redis Sentinel: \(error.message)"
            case .tlsCertificateRejected, .tlsRequired, .tlsNotOffered, .tlsHandshakeFailed, .tlsConfiguration:
                self.kind =
                    switch error.code {
                    case .tlsCertificateRejected: .redisTLSCertificateRejected
                    case .tlsRequired: .redisTLSRequired
                    case .tlsNotOffered: .redisTLSNotOffered
                    case .tlsHandshakeFailed: .redisTLSHandshakeFailed
                    default: .redisTLSConfiguration
                    }
                // The message names what is wrong and what to change.
                self.fix = "Redis TLS: \(error.message)"
            default:
                return nil
            }
        default:
            return nil
        }
    }

    private static func tlsKind(_ code: PostgresError.Code) -> Kind? {
        switch code {
        case .tlsCertificateRejected: .postgresTLSCertificateRejected
        case .tlsNotOffered: .postgresTLSNotOffered
        case .tlsHandshakeFailed: .postgresTLSHandshakeFailed
        default: nil
        }
    }

    /// Refusals at start-up that mean the worker cannot work as configured: it exits with
    /// ``StartupRefused`` instead of retrying (Redis out of memory is not one: it passes).
    var refusesStartup: Bool { kind != .redisOutOfMemory }
}

/// `adworker run` cannot work as configured (a wrong password, a missing table, an ACL without
/// the commands it needs); the message says what to change. The process exits 4.
public struct StartupRefused: Error, CustomStringConvertible {
    public var description: String
}

import AdWorkerPostgres
import AdWorkerRedis

/// Failures that retrying cannot fix: the configuration or the servers' set-up must change. The
/// worker still retries them (nothing is acknowledged, the entries wait in Redis, and the fix
/// takes effect without a restart), but says so unmistakably: `/readyz` 503 with ``fix``, an
/// error log line at a bounded rate, `adworker_permanent_errors{target,kind}` 1.
struct PermanentFailure: Equatable, Sendable {
    /// The error's code, as in `adworker_errors_total{kind}`: a SQLSTATE or a Redis code name.
    var kind: String
    /// What is wrong and what to change.
    var fix: String

    init?(_ error: any Error) {
        switch error {
        case let error as PostgresError:
            guard let sqlState = error.sqlState, let fix = Self.postgresFixes[sqlState] else { return nil }
            self.kind = sqlState
            self.fix = "PostgreSQL refuses (sqlstate \(sqlState)): \(fix)"
        case let error as RedisError:
            switch error.code {
            case .authenticationFailed:
                self.fix = "Redis refuses the credentials (\(error.message)): set REDIS_USERNAME and REDIS_PASSWORD (or REDIS_PASSWORD_FILE) to an ACL user's"
            case .noPermission:
                self.fix = "Redis's ACL denies a command (\(error.message)): give the worker's user the commands and keys in deploy/redis/users.acl"
            case .outOfMemory:
                self.fix = "Redis is out of memory (maxmemory with noeviction): free memory (trim or delete old streams and dead letters) or raise maxmemory"
            case .wrongType:
                self.fix = "\(error.message): rename or delete that key (redis-cli TYPE, RENAME, DEL), or set ADWORKER_STREAM_PREFIX to a prefix of your own; its consumers start once it is a stream or gone"
            default:
                return nil
            }
            self.kind = "\(error.code)"
        default:
            return nil
        }
    }

    /// By SQLSTATE: what an operator changes. Class 28 and 3D000 arrive at login, the others on a statement.
    static let postgresFixes: [String: String] = [
        "28P01": "wrong password: set DATABASE_PASSWORD (or DATABASE_PASSWORD_FILE) to the role's password",
        "28000": "the login is not allowed: check DATABASE_USER and pg_hba.conf for this host",
        "3D000": "the database does not exist: create it, or set DATABASE_NAME",
        "42P01": "a table is missing: run adworker migrate",
        "42703": "a column is missing: run adworker migrate",
        "42501": "permission denied: grant the worker's role what deploy/postgres/worker-role.sql grants",
    ]

    /// Refusals at start-up that mean the worker cannot work as configured: it exits with
    /// ``StartupRefused`` instead of retrying (Redis out of memory is not one: it passes).
    var refusesStartup: Bool { kind != "outOfMemory" }
}

/// `adworker run` cannot work as configured (a wrong password, a missing table, an ACL without
/// the commands it needs); the message says what to change. The process exits 4.
public struct StartupRefused: Error, CustomStringConvertible {
    public var description: String
}

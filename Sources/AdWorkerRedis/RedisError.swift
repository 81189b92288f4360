/// An error from the Redis module, classified once at the C boundary so callers switch on
/// ``code`` (retry, create the group, give up) and never on message text.
public struct RedisError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// Could not connect (refused, unreachable, DNS).
        case connectionFailed
        /// The connection broke mid-command (EOF, reset, broken pipe); the next call reconnects.
        case connectionLost
        /// A read or write took longer than the command timeout.
        case timeout
        /// AUTH was refused (`WRONGPASS`), or a command needs it (`NOAUTH`).
        case authenticationFailed
        /// The ACL user may not run the command or touch the key (`NOPERM`).
        case noPermission
        /// The consumer group or stream does not exist (`NOGROUP`).
        case noGroup
        /// The consumer group exists already (`BUSYGROUP`).
        case groupExists
        /// Redis is loading its data set or busy with a script (`LOADING`, `BUSY`): retry later.
        case serverBusy
        /// Redis is at `maxmemory` with `noeviction` (`OOM`): commands that add data are refused,
        /// reading and acknowledging still work.
        case outOfMemory
        /// The key holds another type than the command works on (`WRONGTYPE`: a string where a
        /// stream should be): nothing changes until someone renames or deletes the key.
        case wrongType
        /// A cluster slot kept moving: still redirected (MOVED/ASK) after the most redirects followed.
        case redirected
        /// The cluster cannot serve the slot now (`CLUSTERDOWN`: a primary failed and its replica
        /// has not yet taken over, or no node serves the slot).
        case clusterDown
        /// READONLY: the node is a replica now (a primary demoted by a failover, or one restarted as
        /// a replica); a Sentinel connection asks the sentinels for the primary again.
        case readOnlyReplica
        /// A sentinel knows no master of the configured name.
        case unknownMaster
        /// Fewer replicas than ``RedisReplicaWait/replicas`` acknowledged a write within its
        /// timeout (WAIT fell short): the primary holds it, and a failover may still lose it.
        case replicationShortfall
        /// The server's TLS certificate did not verify: not signed by a trusted authority, expired or
        /// not yet valid, or issued for another name.
        case tlsCertificateRejected
        /// The server speaks only TLS on this port, and the client spoke plaintext.
        case tlsRequired
        /// The client spoke TLS, and the server answered in plaintext: not a TLS port.
        case tlsNotOffered
        /// The TLS handshake failed otherwise: the server ended it with an alert (it wants a client
        /// certificate it trusts), or the two share no protocol version or cipher.
        case tlsHandshakeFailed
        /// A CA, certificate or key file for TLS could not be loaded.
        case tlsConfiguration
        /// Any other error reply.
        case serverError
        /// A reply of a shape this client does not expect.
        case unexpectedReply
        /// A local misuse, e.g. a BLOCK not shorter than the command timeout.
        case invalidArgument
        /// The task was cancelled while waiting for a reply; the connection was given up.
        case cancelled
    }

    public var code: Code
    /// Short and free of secrets: hiredis's errstr or the server's error reply.
    public var message: String
    public var file: String
    public var line: Int

    public init(_ code: Code, _ message: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
    }

    /// Whether retrying after a pause can help.
    public var isTransient: Bool {
        switch code {
        case .connectionFailed, .connectionLost, .timeout, .serverBusy, .redirected, .clusterDown, .readOnlyReplica, .replicationShortfall: true
        default: false
        }
    }

    /// Whether Redis may have run the command that failed: the connection broke after it was
    /// sent, or its reply did not come in time; or it ran and too few replicas have it yet, so
    /// whether it survives a failover is unknown.
    public var outcomeIsUnknown: Bool {
        switch code {
        case .connectionLost, .timeout, .replicationShortfall: true
        default: false
        }
    }

    public var description: String { "RedisError(\(code)): \(message)" }

    /// Classifies an error reply by its leading word, as Redis documents it.
    public static func fromReply(_ message: String, file: String = #fileID, line: Int = #line) -> RedisError {
        let prefix = message.prefix { $0 != " " }
        let code: Code =
            switch prefix {
            case "NOGROUP": .noGroup
            case "BUSYGROUP": .groupExists
            case "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN": .serverBusy
            case "WRONGPASS", "NOAUTH": .authenticationFailed
            case "NOPERM": .noPermission
            case "OOM": .outOfMemory
            case "WRONGTYPE": .wrongType
            case "MOVED", "ASK": .redirected
            case "CLUSTERDOWN": .clusterDown
            case "READONLY": .readOnlyReplica
            default: .serverError
            }
        return RedisError(code, message, file: file, line: line)
    }
}

/// Why a send failed. The code is an opaque struct so new cases do not break callers' switches.
public struct TelemetryProducerError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case bufferFull = "buffer_full"
            case shutDown = "shut_down"
            case redisUnavailable = "redis_unavailable"
            case rejected
            case invalidRequest = "invalid_request"
            case spoolUnwritable = "spool_unwritable"
            case misconfigured
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// More records are waiting than the configured maximum: dropped at once, never blocked.
        public static let bufferFull = Code(.bufferFull)
        /// The producer has stopped (its service was shut down).
        public static let shutDown = Code(.shutDown)
        /// Redis could not be reached or the connection broke; the record may not have been stored.
        public static let redisUnavailable = Code(.redisUnavailable)
        /// Redis answered the XADD with an error (e.g. OOM under `noeviction`, NOPERM).
        public static let rejected = Code(.rejected)
        /// The call was wrong, e.g. a request's training and inference records carry different request ids.
        public static let invalidRequest = Code(.invalidRequest)
        /// The record was to wait in the spool, and the disk refused it (full, an I/O error): not kept.
        public static let spoolUnwritable = Code(.spoolUnwritable)

        /// This client cannot talk to Redis as configured: the TLS handshake was refused (a
        /// certificate that does not verify, TLS on one side only, a client certificate the server
        /// wants) or a TLS file cannot be loaded. The message says what to change; nothing is retried.
        public static let misconfigured = Code(.misconfigured)

        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String
    public var underlying: (any Error)?
    public var file: String
    public var line: Int

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.underlying = underlying
        self.file = file
        self.line = line
    }

    public var description: String { "TelemetryProducerError(\(code)): \(message)" }
}

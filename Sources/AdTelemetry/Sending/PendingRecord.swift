import AdTelemetryRecords
import AdWorkerRedis

/// One record the producer holds until Redis settles it.
struct PendingRecord: Sendable {
    var command: RedisCommand
    /// Its stream, as an index into the producer's streams: which connection sends it.
    var route: Int
    /// Its identity, as its `origin` field carries it.
    var origin: RecordOrigin
    /// Non-nil while its outcome is unknown (its pipeline was cut, or an earlier run may have
    /// stored it): look for it in its stream from here before sending it again.
    var lookFrom: LookupStart? = nil
    /// Its outcome; nil while it waits to be sent (again).
    var result: Result<StreamEntryID, TelemetryProducerError>? = nil
}

/// The records of one `send` or `submit` call, or one batch read back from the spool: settled,
/// and told to whoever waits, together.
struct PendingSend<Instant: InstantProtocol, Waiter: Sendable>: Sendable {
    var records: [PendingRecord]
    /// Who waits for the outcome; nil for ``TelemetryProducer/submit(_:)`` and spool batches.
    var waiter: Waiter?
    /// Read back from the spool: that batch's record count, committed there once all are settled.
    var spoolBatch: Int?
    var enqueuedAt: Instant
    /// When a record of it was first held back for a retry.
    var firstRetryAt: Instant?

    var outstanding: Int { records.count { $0.result == nil } }

    /// Whether its records go to the spool (when there is one) as soon as Redis does not take
    /// them: ``TelemetryProducer/submit(_:)``'s, whose callers do not wait. `send` callers are
    /// told the outcome, and a spool batch is on disk already.
    var writesThrough: Bool { waiter == nil && spoolBatch == nil }
}

/// How a failed XADD is treated, from its error's code (classified once, in `AdWorkerRedis`).
enum SendFailure {
    /// Whether a failed XADD certainly did not run, so sending it again cannot store it twice:
    /// no connection (nothing was written), or an error reply (LOADING, BUSY, TRYAGAIN,
    /// CLUSTERDOWN, OOM, a slot still moving, READONLY from a demoted primary).
    static func isSafeToResend(_ error: RedisError) -> Bool {
        switch error.code {
        case .connectionFailed, .serverBusy, .outOfMemory, .clusterDown, .redirected, .readOnlyReplica: true
        default: false
        }
    }

    /// Whether Redis may or may not have run a failed XADD: its connection broke or its reply did
    /// not come in time; or it ran and too few replicas acknowledged it (a failover may undo it).
    /// Such a record is looked for in its stream before it is sent again.
    static func hasUnknownOutcome(_ error: RedisError) -> Bool { error.outcomeIsUnknown }

    /// What the caller is told: `misconfigured` when this client cannot talk to that server as
    /// configured (TLS refused), `redisUnavailable` when Redis may take it later, else `rejected`.
    static func producerError(_ error: RedisError) -> TelemetryProducerError {
        let code: TelemetryProducerError.Code =
            switch error.code {
            case .tlsCertificateRejected, .tlsRequired, .tlsNotOffered, .tlsHandshakeFailed, .tlsConfiguration, .unknownMaster: .misconfigured
            default: error.isTransient ? .redisUnavailable : .rejected
            }
        return TelemetryProducerError(code, error.message, underlying: error)
    }
}

import AdTelemetryRecords
import AdWorkerConnectionThread
import AdWorkerRedis

extension ProducerStateMachine {
    /// What the flusher tells the machine.
    enum FlushEvent: Sendable {
        /// Records were queued, or shutdown began: a flush begins.
        case wakeup
        /// The pause before a retry is over.
        case slept
        /// The spool's next batch (empty: nothing to send), and records it found unreadable.
        case loaded([SpooledRecord], unreadable: Int)
        /// A round was sent and its outcomes are in.
        case sent(Round)
    }

    /// What the flusher does: settle what the last round finished, then ``next``.
    struct FlushStep: Sendable {
        enum Next: Sendable {
            /// Send ``FlushStep/round``.
            case round
            /// Read the spool's next batch, up to this many records.
            case loadFromSpool(maximum: Int)
            /// Pause before retrying what is held back.
            case sleep(Duration)
            /// Nothing to do until the next wakeup.
            case idle
        }

        /// Whether Redis stopped or started taking records.
        enum Availability: Sendable {
            case lost(RedisError?)
            case restored(after: Duration)
        }

        /// A send whose records are all settled: its latency is recorded and its waiter told.
        struct Completed: Sendable {
            var waiter: Waiter?
            /// Nil when nobody waits.
            var results: Results?
            var waited: Duration
        }

        enum SpoolAction: Equatable, Sendable {
            /// The batch in flight is settled: it leaves the spool.
            case commit(records: Int)
            /// The batch in flight stays on disk, looked up first when read again.
            case release
        }

        var completed: [Completed] = []
        var sent = 0
        /// Records given up, spilled ones not counted (a spill the disk refuses counts then).
        var failed = 0
        var retried = 0
        var lastError: RedisError?
        var availability: Availability?
        var spool: SpoolAction?
        /// Records of ``TelemetryProducer/submit(_:)`` Redis did not take: written to the spool,
        /// then ``spilled(refused:unwritable:)``.
        var spill: [SpooledRecord] = []
        /// The spool holds records for this stream, which this configuration does not write.
        var blockedStream: String?
        var bufferedRecords = 0
        var next: Next = .idle
        /// The round to send, when ``next`` says so.
        var round: Round?

        /// Moves the round out, so that the flusher holds its only copy: its records are then
        /// changed in place, not copied.
        mutating func takeRound() -> Round? {
            defer { round = nil }
            return round
        }
    }

    /// - Parameter event: Consumed: a round it carries is settled, and what is requeued from it
    ///   is not shared with the caller's copy.
    mutating func next(_ event: consuming FlushEvent) -> FlushStep {
        // Set on the result, not in a defer: a defer runs after the returned copy was made.
        var step = decide(event)
        step.bufferedRecords = bufferedRecords
        return step
    }

    private mutating func decide(_ event: consuming FlushEvent) -> FlushStep {
        var step = FlushStep()
        switch event {
        case .wakeup:
            backoff = Self.retryBackoff
            spoolBatchReleased = false
        case .slept:
            break
        case .loaded(let records, let unreadable):
            spooledRecords -= unreadable
            guard !records.isEmpty, queueSpoolBatch(records, &step) else { return step }
        case .sent(let round):
            if !settle(round, &step) {
                step.next = .sleep(backoff.nextDelay())
                return step
            }
            backoff = Self.retryBackoff
        }
        (step.next, step.round) = takeRound()
        return step
    }

    /// Takes up to one pipeline's worth of sends (whole sends only); while Redis is away with a
    /// spool, also the queued sends of ``TelemetryProducer/submit(_:)``, to go there: on disk a
    /// crash of the process does not lose them (README, "The spool"). With nothing queued, the
    /// spool's next batch, if memory has room.
    private mutating func takeRound() -> (FlushStep.Next, Round?) {
        var taken = 0
        var count = 0
        for send in pending {
            let outstanding = send.outstanding
            if count > 0 && count + outstanding > configuration.maximumPipelineLength { break }
            count += outstanding
            taken += 1
        }
        guard taken > 0 else {
            let room = configuration.maximumBufferedRecords - bufferedRecords
            guard spoolOpen, !isClosed, !spoolBlocked, !spoolBatchReleased, room > 0 else { return (.idle, nil) }
            return (.loadFromSpool(maximum: min(room, configuration.maximumPipelineLength)), nil)
        }
        var sends = Array(pending.prefix(taken))
        pending.removeFirst(taken)
        let writesThrough = spoolOpen && spoolTakesRecords
        if writesThrough, unavailableSince != nil {
            for var send in pending where send.writesThrough {
                for index in send.records.indices where send.records[index].result == nil {
                    send.records[index].result = .failure(TelemetryProducerError(.redisUnavailable, "redis is not taking records"))
                }
                sends.append(send)
            }
            pending.removeAll { $0.writesThrough }
        }
        let round = Round(
            sends: sends, closedAt: closedAt, writesThrough: writesThrough, lastConfirmed: lastConfirmed,
            maximumRetryDuration: configuration.maximumRetryDuration, shutdownRetryDuration: configuration.shutdownRetryDuration, clock: clock
        )
        return (.round, round)
    }

    /// Queues a batch read back from the spool, unless it holds a stream this configuration does
    /// not write: then it stays on disk and the spool is not read again.
    private mutating func queueSpoolBatch(_ spooled: [SpooledRecord], _ step: inout FlushStep) -> Bool {
        var records: [PendingRecord] = []
        records.reserveCapacity(spooled.count)
        for record in spooled {
            guard let route = configuration.streams.firstIndex(of: record.stream) else {
                spoolBlocked = true
                step.spool = .release
                step.blockedStream = record.stream
                return false
            }
            records.append(PendingRecord(command: record.command, route: route, origin: record.origin, lookFrom: record.lookFrom))
        }
        bufferedRecords += records.count
        spoolBatchInFlight = records.count
        pending.append(Send(records: records, waiter: nil, spoolBatch: records.count, enqueuedAt: clock.now))
        return true
    }

    /// Settles the sends of `round` whose records are all settled and puts the others back at the
    /// front, in their order. - Returns: Whether all were settled.
    private mutating func settle(_ round: Round, _ step: inout FlushStep) -> Bool {
        lastConfirmed = round.lastConfirmed
        step.retried = round.heldBack
        step.lastError = round.lastError
        let waiting = round.heldBack + round.stillUnknown + round.spilled
        step.availability = noteAvailability(waiting: waiting, confirmed: round.confirmed, error: round.lastError)
        let now = clock.now
        var unsettled: [Send] = []
        var settledRecords = 0
        for send in round.sends {
            guard send.outstanding == 0 else {
                unsettled.append(send)
                continue
            }
            // Given up while Redis was away or could not be talked to as configured (not refused by
            // it): kept by the spool, if any.
            let givenUp = send.records.count { Self.isGivenUp($0) }
            if let batch = send.spoolBatch {
                spoolBatchInFlight = 0
                settledRecords += send.records.count
                guard givenUp == 0 else {
                    step.spool = .release
                    spoolBatchReleased = true
                    continue
                }
                spooledRecords -= batch
                step.spool = .commit(records: batch)
            }
            var spilled = 0
            if spoolOpen, send.writesThrough, givenUp > 0 {
                for record in send.records where Self.isGivenUp(record) {
                    step.spill.append(
                        SpooledRecord(stream: configuration.streams[record.route], command: record.command, origin: record.origin, lookFrom: record.lookFrom)
                    )
                }
                spilled = givenUp
                spooledRecords += givenUp
            }
            let successes = send.records.count { if case .success = $0.result { true } else { false } }
            step.sent += successes
            step.failed += send.records.count - successes - spilled
            let results = send.waiter == nil ? nil : send.records.map { $0.result! }
            step.completed.append(FlushStep.Completed(waiter: send.waiter, results: results, waited: send.enqueuedAt.duration(to: now)))
            if send.spoolBatch == nil { settledRecords += send.records.count }
        }
        bufferedRecords -= settledRecords
        pending.insert(contentsOf: unsettled, at: 0)
        return unsettled.isEmpty
    }

    private static func isGivenUp(_ record: PendingRecord) -> Bool {
        if case .failure(let error) = record.result { error.code == .redisUnavailable || error.code == .misconfigured } else { false }
    }

    /// Redis stops taking records when any wait for it; it takes them again when none wait and it
    /// stored one (records given up are no sign it is back).
    private mutating func noteAvailability(waiting: Int, confirmed: Bool, error: RedisError?) -> FlushStep.Availability? {
        if waiting > 0, unavailableSince == nil {
            unavailableSince = clock.now
            return .lost(error)
        } else if waiting == 0, confirmed, let since = unavailableSince {
            unavailableSince = nil
            return .restored(after: since.duration(to: clock.now))
        }
        return nil
    }
}

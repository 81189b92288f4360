import AdTelemetryRecords
import AdWorkerRedis

extension ProducerStateMachine {
    /// One flush round, out of the machine while the flusher does its I/O: first the lookups of
    /// records whose outcome is unknown (``lookups()``, then ``found(_:route:)`` or
    /// ``lookupFailed(_:route:cancelled:)``), then one pipeline of what is still to send
    /// (``commandsToSend()``, then ``sent(_:sentAtMilliseconds:cancelled:)``). It decides what is
    /// held back, looked for, spilled and given up; it goes back to the machine in ``FlushEvent/sent(_:)``.
    struct Round: Sendable {
        private(set) var sends: [Send]
        /// When shutdown began, if it did: held records get the shutdown grace from then.
        let closedAt: Instant?
        /// There is a spool taking records: ``PendingSend/writesThrough`` records Redis does not
        /// take go there at once.
        let writesThrough: Bool
        private(set) var lastConfirmed: [StreamEntryID?]
        let maximumRetryDuration: Duration
        let shutdownRetryDuration: Duration
        let clock: Clock
        /// What the pipeline sends: (send, record) positions, in its order.
        private var sending: [(send: Int, record: Int)] = []
        /// Records held back for a retry.
        private(set) var heldBack = 0
        /// Records whose lookup could not be made: they wait, like those held back.
        private(set) var stillUnknown = 0
        /// Records given up to the spool this round.
        private(set) var spilled = 0
        /// Whether Redis stored any record this round (sent now, or found by a lookup).
        private(set) var confirmed = false
        private(set) var lastError: RedisError?

        init(
            sends: [Send], closedAt: Instant?, writesThrough: Bool, lastConfirmed: [StreamEntryID?],
            maximumRetryDuration: Duration, shutdownRetryDuration: Duration, clock: Clock
        ) {
            self.sends = sends
            self.closedAt = closedAt
            self.writesThrough = writesThrough
            self.lastConfirmed = lastConfirmed
            self.maximumRetryDuration = maximumRetryDuration
            self.shutdownRetryDuration = shutdownRetryDuration
            self.clock = clock
        }

        /// The records of one stream to look for, and from where.
        struct Lookup: Sendable {
            var route: Int
            var starts: [LookupStart]
            var wanted: Set<RecordOrigin>

            /// Whether a start is by this host's clock: Redis's `TIME` is needed to turn it into an id.
            var needsRedisClock: Bool { starts.contains { if case .sentAt = $0 { true } else { false } } }

            /// The id to read from. - Parameter redisAhead: Redis's clock less this host's, in ms.
            func start(redisAhead: Int64) -> StreamEntryID {
                starts.map { UnknownOutcomeLookup.entryID(for: $0, redisAhead: redisAhead) }.min()!
            }
        }

        /// Every stream's records whose outcome is unknown, by stream.
        func lookups() -> [Lookup] {
            var byRoute: [Int: Lookup] = [:]
            for send in sends {
                for record in send.records where record.result == nil {
                    guard let start = record.lookFrom else { continue }
                    byRoute[record.route, default: Lookup(route: record.route, starts: [], wanted: [])].starts.append(start)
                    byRoute[record.route]!.wanted.insert(record.origin)
                }
            }
            return byRoute.values.sorted { $0.route < $1.route }
        }

        /// A lookup read the stream: the records it holds are settled with their ids, the rest are
        /// cleared to be sent again. - Returns: How many were stored, and how many will be resent.
        mutating func found(_ stored: [RecordOrigin: StreamEntryID], route: Int) -> (stored: Int, resent: Int) {
            let places = unknownPlaces(on: route)
            for place in places {
                sends[place.send].records[place.record].lookFrom = nil
                if let id = stored[sends[place.send].records[place.record].origin] { sends[place.send].records[place.record].result = .success(id) }
            }
            if !stored.isEmpty { confirmed = true }
            return (stored.count, places.count - stored.count)
        }

        /// A lookup failed: its records stay unknown (to be looked for again) until their deadline,
        /// or, Redis being away with a spool, go there at once, keeping where to look from.
        mutating func lookupFailed(_ error: RedisError, route: Int, cancelled: Bool) {
            lastError = error
            let failure = SendFailure.producerError(error)
            let toSpool = writesThrough && failure.code == .redisUnavailable
            let now = clock.now
            for place in unknownPlaces(on: route) {
                if toSpool && sends[place.send].writesThrough {
                    spilled += 1
                } else if now < deadline(for: sends[place.send]), !cancelled {
                    continue
                }
                sends[place.send].records[place.record].result = .failure(failure)
            }
        }

        /// Where the records of `route` whose outcome is unknown are.
        private func unknownPlaces(on route: Int) -> [(send: Int, record: Int)] {
            var places: [(send: Int, record: Int)] = []
            for (sendIndex, send) in sends.enumerated() {
                for (index, record) in send.records.enumerated() where record.route == route && record.result == nil && record.lookFrom != nil {
                    places.append((sendIndex, index))
                }
            }
            return places
        }

        /// What the pipeline sends: only what is not settled yet and not waiting to be looked for (a
        /// retried send keeps its earlier successes). - Returns: The commands and their routes.
        mutating func commandsToSend() -> (commands: [RedisCommand], routes: [Int]) {
            var commands: [RedisCommand] = []
            var routes: [Int] = []
            sending = []
            for (sendIndex, send) in sends.enumerated() {
                for (index, record) in send.records.enumerated() where record.result == nil {
                    if record.lookFrom != nil {
                        stillUnknown += 1
                        continue
                    }
                    sending.append((sendIndex, index))
                    commands.append(record.command)
                    routes.append(record.route)
                }
            }
            return (commands, routes)
        }

        /// The pipeline's results, in ``commandsToSend()``'s order: each record is settled, held
        /// back (to look for first, if its outcome is unknown), spilled or given up.
        /// - Parameter sentAtMilliseconds: When it was sent by this host's clock.
        mutating func sent(_ results: [Result<StreamEntryID, RedisError>], sentAtMilliseconds: UInt64, cancelled: Bool) {
            for (position, place) in sending.enumerated() {
                let route = sends[place.send].records[place.record].route
                if case .success(let id) = results[position], lastConfirmed[route].map({ $0 < id }) ?? true { lastConfirmed[route] = id }
            }
            let now = clock.now
            for (position, place) in sending.enumerated() {
                switch results[position] {
                case .success(let id):
                    sends[place.send].records[place.record].result = .success(id)
                    confirmed = true
                case .failure(let error):
                    failed(place, error, now: now, sentAtMilliseconds: sentAtMilliseconds, cancelled: cancelled)
                }
            }
        }

        private mutating func failed(_ place: (send: Int, record: Int), _ error: RedisError, now: Instant, sentAtMilliseconds: UInt64, cancelled: Bool) {
            lastError = error
            let unknown = SendFailure.hasUnknownOutcome(error)
            if unknown {
                // Looked for before it is sent again, here or (given up) from the spool.
                let route = sends[place.send].records[place.record].route
                sends[place.send].records[place.record].lookFrom = UnknownOutcomeLookup.start(
                    lastConfirmed: lastConfirmed[route], sentAtMilliseconds: sentAtMilliseconds)
            }
            let failure = SendFailure.producerError(error)
            // A misconfiguration is told to a caller at once, but a record already kept on disk
            // (submitted with a spool, or read back from it) stays there for the corrected run.
            let misconfigured = failure.code == .misconfigured
            if writesThrough, sends[place.send].writesThrough, failure.code == .redisUnavailable || misconfigured {
                // Given up at once, to the spool: there it survives a crash; here it would not.
                sends[place.send].records[place.record].result = .failure(failure)
                spilled += 1
            } else if now < deadline(for: sends[place.send]), !cancelled,
                unknown || SendFailure.isSafeToResend(error) || (misconfigured && sends[place.send].spoolBatch != nil)
            {
                sends[place.send].firstRetryAt = sends[place.send].firstRetryAt ?? now
                heldBack += 1
            } else {
                sends[place.send].records[place.record].result = .failure(failure)
            }
        }

        /// How long a held-back record may keep waiting; after shutdown, at most the shutdown grace.
        /// Records read back from the spool have none until shutdown, and none after it: they are
        /// on disk anyway, so a stop does not wait for Redis to take them.
        func deadline(for send: Send) -> Instant {
            let patience = send.spoolBatch == nil ? maximumRetryDuration : .seconds(365 * 86400)
            let deadline = (send.firstRetryAt ?? clock.now).advanced(by: patience)
            guard let closedAt else { return deadline }
            return min(deadline, closedAt.advanced(by: send.spoolBatch == nil ? shutdownRetryDuration : .zero))
        }
    }
}

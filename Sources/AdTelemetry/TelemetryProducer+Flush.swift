import AdTelemetryRecords
import AdWorkerRedis
import Logging
import Metrics
import ServiceLifecycle

extension TelemetryProducer {
    /// Sends queued records until graceful shutdown, then sends what was queued before it and returns.
    /// - Throws: When the spool directory cannot be used (the error says why), before anything is sent.
    public nonisolated func run() async throws {
        guard let directory = configuration.spoolDirectory else { return try await sendUntilShutdown(spool: nil) }
        try await RecordSpool.withRecordSpool(directory: directory, maximumBytes: configuration.maximumSpoolBytes, logger: logger) { spool in
            await attach(spool)
            do {
                try await sendUntilShutdown(spool: spool)
            } catch {
                await detach(spool)
                throw error
            }
            await detach(spool)
        }
    }

    private nonisolated func sendUntilShutdown(spool: RecordSpool?) async throws {
        let routed = connectionPerStream ? streams.map { configuration.redis.routed(by: $0) } : [configuration.redis]
        try await RedisConnection.withConnections(routed, logger: logger, connectImmediately: false) { connections in
            await withTaskGroup(of: Void.self) { background in
                if let spool {
                    // The spool's fsync policy: once a second (and at the end).
                    background.addTask {
                        while (try? await Task.sleep(for: .seconds(1))) != nil { await spool.sync() }
                    }
                }
                await withGracefulShutdownHandler {
                    for await _ in wakeups { await flushPending(connections, spool: spool) }
                    await close()
                    await flushPending(connections, spool: spool)
                } onGracefulShutdown: {
                    self.wakeupContinuation.finish()
                    // At once, not after the flush under way: it may be retrying while Redis is away.
                    Task { await self.close() }
                }
                background.cancelAll()
            }
        }
    }

    private func attach(_ spool: RecordSpool) async {
        let records = await spool.recordCount
        self.spool = spool
        machine.spoolOpened(records: records)
        // Damage found on opening: those records were never counted here.
        dropped("spool_damaged", count: await spool.takeUnreadable())
        await reportSpool(spool)
        if records > 0 {
            logger.notice("adtelemetry: records spooled by an earlier run are sent first", metadata: ["adtelemetry_spooled": "\(records)"])
            wakeupContinuation.yield()
        }
    }

    /// Closed, nothing new chooses the spool; a submit already writing to it finishes first
    /// (at most 2 s), since the spool's thread ends with its scope.
    private func detach(_ spool: RecordSpool) async {
        let deadline = ContinuousClock.now + .seconds(2)
        while machine.submitSpills > 0, .now < deadline { try? await Task.sleep(for: .milliseconds(1)) }
        machine.spoolClosed()
        self.spool = nil
        await reportSpool(spool)
    }

    private func close() { machine.close() }

    /// The machine's next step, in one visit to the actor; logs when Redis stops or starts taking records.
    private func advance(_ event: consuming Machine.FlushEvent) -> Machine.FlushStep {
        let step = machine.next(event)
        switch step.availability {
        case nil: break
        case .lost(let error):
            logger.warning(
                "adtelemetry: redis is not taking records; holding them and retrying",
                metadata: ["adtelemetry_error": "\(error.map(\.description) ?? "?")", "adtelemetry_buffered": "\(machine.bufferedRecords)"]
            )
        case .restored(let away):
            recovery.record(duration: away)
            logger.notice("adtelemetry: redis takes records again", metadata: ["adtelemetry_unavailable_for": "\(away)"])
        }
        return step
    }

    /// Runs the machine's steps until it has nothing to do: one visit to the actor per round.
    private nonisolated func flushPending(_ connections: [RedisConnection], spool: RecordSpool?) async {
        var event = Machine.FlushEvent.wakeup
        while true {
            // Consumed and taken out: the round's records have one owner, so they change in place.
            var step = await advance(consume event)
            await settle(step, spool: spool)
            switch step.next {
            case .idle:
                return
            case .sleep(let pause):
                try? await Task.sleep(for: pause)
                event = .slept
            case .loadFromSpool(let maximum):
                guard let spool else { return }
                event = await load(maximum, from: spool)
            case .round:
                guard var round = step.takeRound() else { return }
                await lookUpUnknownOutcomes(&round, on: connections)
                let (commands, routes) = round.commandsToSend()
                let sentAt = UInt64(Timestamp.now().millisecondsSinceEpoch)
                let results = commands.isEmpty ? [] : await pipeline(commands, routes: routes, on: connections)
                round.sent(results, sentAtMilliseconds: sentAt, cancelled: Task.isCancelled)
                event = .sent(round)
            }
        }
    }

    /// Does what a step settled: the spool batch committed or released, records Redis did not
    /// take spilled, metrics, and the waiting callers told.
    private nonisolated func settle(_ step: Machine.FlushStep, spool: RecordSpool?) async {
        var failures = step.failed
        if let spool {
            switch step.spool {
            case nil: break
            case .commit(let records): await spool.commit(records: records)
            case .release: await spool.release()
            }
            if let stream = step.blockedStream {
                logger.error(
                    "adtelemetry: the spool holds records for a stream this configuration does not write; they stay on disk: run with the shard count and stream prefix they were written with until the spool is empty",
                    metadata: ["adtelemetry_stream": "\(stream)", "adtelemetry_spool": "\(spool.directory)"]
                )
            }
            if !step.spill.isEmpty {
                let outcome = await spool.append(step.spill)
                countRefused(outcome)
                failures += outcome.refused
                await spilled(outcome, spool: spool, submitted: false)
            } else if step.spool != nil {
                await reportSpool(spool)
            }
        }
        buffered.record(step.bufferedRecords)
        if step.retried > 0 { retried.increment(by: step.retried) }
        if step.sent > 0 { sent.increment(by: step.sent) }
        if failures > 0 {
            failed.increment(by: failures)
            logger.warning(
                "adtelemetry send failed", metadata: ["adtelemetry_records": "\(failures)", "adtelemetry_error": "\(step.lastError.map(\.description) ?? "?")"]
            )
        }
        for completed in step.completed {
            sendLatency.record(duration: completed.waited)
            if let waiter = completed.waiter, let results = completed.results { waiter.resume(returning: results) }
        }
    }

    /// Reads the spool's next batch (when memory has room); one batch at a time, so while Redis is
    /// away that batch is what keeps asking it.
    private nonisolated func load(_ maximum: Int, from spool: RecordSpool) async -> Machine.FlushEvent {
        let records = await spool.takeBatch(maximum: maximum, nowMilliseconds: UInt64(Timestamp.now().millisecondsSinceEpoch))
        let unreadable = await spool.takeUnreadable()
        if unreadable > 0 {
            dropped("spool_damaged", count: unreadable)
            await reportSpool(spool)
        }
        return .loaded(records, unreadable: unreadable)
    }
}

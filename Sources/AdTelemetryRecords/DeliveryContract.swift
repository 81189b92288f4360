/// What the producer and the worker promise each other so that a record sent again after an
/// unknown outcome (a pipeline cut after Redis may have run part of it) is stored once.
///
/// Before sending such a record again, the producer reads its stream from a little before where
/// the record can be (``lookupReach``) for its `origin`. That only works while the entries it
/// reads are still there: the worker's trim keeps every entry within ``keepWindow`` of the
/// stream's newest id, acknowledged or not. The producer looks at most ``longestRetryPause``
/// after Redis answers again (the next retry round), so the farthest it reads behind the newest
/// id is ``lookupWindow``, which must stay below ``keepWindow``.
public enum DeliveryContract {
    /// With nothing confirmed on the stream yet, how far before the send (by Redis's clock) the
    /// lookup starts: the time between measuring the clocks' difference and the send, and a
    /// clock stepped in between.
    public static let hostClockMargin: Duration = .seconds(5)
    /// How far before the last id Redis confirmed on the stream the lookup starts: a failover
    /// that lost the confirmed entry, to a primary whose clock is behind.
    public static let confirmedIDMargin: Duration = .seconds(1)
    /// The producer's longest pause between retry rounds (its backoff's cap): once Redis answers
    /// again, the lookup comes within this.
    public static let longestRetryPause: Duration = .seconds(2)
    /// How far before where a record can be the producer starts reading.
    public static var lookupReach: Duration { max(hostClockMargin, confirmedIDMargin) }
    /// How far behind the stream's newest id a lookup may read.
    public static var lookupWindow: Duration { lookupReach + longestRetryPause }
    /// Entries this close to the stream's newest id stay when the worker trims, acknowledged or
    /// not. Measured from the newest id, not the clock: while Redis is away no entry arrives, so
    /// what was written before an outage stays until writing has resumed for this long.
    public static let keepWindow: Duration = .seconds(10)
    /// Whether every entry a lookup reads is still kept by the trim.
    public static var holds: Bool { lookupWindow < keepWindow }
}

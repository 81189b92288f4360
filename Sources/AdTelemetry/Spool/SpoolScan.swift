/// What a segment's bytes hold: whole frames, damaged stretches read past, and a torn tail.
///
/// The writer only ever leaves whole frames (a failed write is cut back to the last one), so bytes
/// that are no frame are damage (a flipped bit, a disk that lost a block), except at the very end
/// of a file a crash stopped mid-write: a frame whose length runs past the end, with nothing
/// valid after it. Damage is read past by finding the next valid frame: first where the damaged
/// frame's own length says the next one starts (damage in the payload), else at the next offset
/// where one decodes (damage in the length). A false start needs a matching CRC-32C.
struct SpoolScan: Equatable {
    /// Start offsets of the whole frames, in order.
    var frames: [Int] = []
    /// Stretches that are no frame and are read past.
    var damaged: [Range<Int>] = []
    /// Where a frame cut short by a crash begins: everything from here to the end is that frame.
    var tornTail: Int?
    /// Records the damaged stretches held, as far as their bytes tell: one for a frame whose
    /// length still points at the next frame; otherwise the stretch over the mean frame size.
    var damagedRecordsEstimate = 0

    init(frames: [Int] = [], damaged: [Range<Int>] = [], tornTail: Int? = nil, damagedRecordsEstimate: Int = 0) {
        self.frames = frames
        self.damaged = damaged
        self.tornTail = tornTail
        self.damagedRecordsEstimate = damagedRecordsEstimate
    }

    /// Scans `bytes` from `start` to the end.
    init(_ bytes: [UInt8], from start: Int = 0) {
        var offset = start
        var estimates: [(bytes: Int, exact: Bool)] = []
        var frameBytes = 0
        while offset < bytes.count {
            let decoded = SpoolFrame.decode(bytes[offset...])
            if case .record(_, let size) = decoded {
                frames.append(offset)
                frameBytes += size
                offset += size
                continue
            }
            let declaredEnd = SpoolFrame.declaredEnd(bytes[offset...])
            let next: Int
            let exact: Bool
            if let declaredEnd, declaredEnd < bytes.count, Self.isFrame(bytes, at: declaredEnd) {
                (next, exact) = (declaredEnd, true)
            } else if let found = ((offset + 1)..<bytes.count).first(where: { Self.isFrame(bytes, at: $0) }) {
                (next, exact) = (found, false)
            } else {
                if case .incomplete = decoded, declaredEnd.map({ $0 > bytes.count }) ?? true {
                    tornTail = offset
                    break
                }
                (next, exact) = (bytes.count, declaredEnd == bytes.count)
            }
            damaged.append(offset..<next)
            estimates.append((next - offset, exact))
            offset = next
        }
        let meanFrame = frames.isEmpty ? 512 : max(1, frameBytes / frames.count)
        damagedRecordsEstimate = estimates.reduce(0) { $0 + ($1.exact ? 1 : max(1, ($1.bytes + meanFrame / 2) / meanFrame)) }
    }

    private static func isFrame(_ bytes: [UInt8], at offset: Int) -> Bool {
        // The version byte first: most offsets fail there, before any checksum is computed.
        guard offset + SpoolFrame.headerSize < bytes.count, bytes[offset + SpoolFrame.headerSize] == SpoolFrame.version else { return false }
        if case .record = SpoolFrame.decode(bytes[offset...]) { return true }
        return false
    }
}

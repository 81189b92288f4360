import AdTelemetryRecords
import AdWorkerCore
import AdWorkerPostgres

/// One fuzz input as a stream entry: 8 bytes of id milliseconds, 8 of sequence, one byte for the
/// record kind, then fields as (name length, name, value length, value) with one-byte lengths.
/// The id's bytes come first so the fuzzer reaches the extreme ids quickly.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEntry(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard input.count >= 17 else { return 0 }
    func integer(at offset: Int) -> UInt64 {
        (0..<8).reduce(0) { value, index in value << 8 | UInt64(input[offset + index]) }
    }
    let id = StreamEntryID(milliseconds: integer(at: 0), sequence: integer(at: 8))
    let kind: RecordKind = input[16] & 1 == 0 ? .training : .inference
    var fields = StreamFields()
    var offset = 17
    func chunk() -> UnsafeRawBufferPointer? {
        guard offset < input.count else { return nil }
        let length = Int(input[offset])
        offset += 1
        let end = min(input.count, offset + length)
        defer { offset = end }
        return UnsafeRawBufferPointer(rebasing: input[offset..<end])
    }
    while let name = chunk() {
        fields.append(name: name, value: chunk() ?? UnsafeRawBufferPointer(start: nil, count: 0))
    }
    // Small bounds so that the size checks are reached too.
    let decoder = WireDecoder(maximumEntryBytes: 4096, maximumTextFieldBytes: 64)
    do {
        let record = try decoder.decode(StreamEntry(id: id, fields: fields), as: kind)
        var rows = BinaryCopyRows()
        RowEncoder.append(record, id: id, to: &rows)
        precondition(rows.count == 1, "a decoded record encodes as exactly one row")
    } catch {
        // Refused with a reason: what the worker turns into a dead letter.
        precondition(!error.description.isEmpty)
    }
    // The parsers the reply decoder and the numeric fields use, on the raw bytes.
    _ = StreamEntryID(utf8: input)
    _ = DecimalText.double(input)
    return 0
}

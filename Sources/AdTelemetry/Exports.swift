// What a service needs to send telemetry comes with `import AdTelemetry`: the records, their value
// types and errors, the entry ids sends return, and of the Redis module only the configuration. The
// codec (WireFormat, WireDecoder), the stream types and the synthetic generator stay out of the
// service's namespace.
@_exported public import struct AdTelemetryRecords.TrainingRecord
@_exported public import struct AdTelemetryRecords.InferenceRecord
@_exported public import enum AdTelemetryRecords.TelemetryRecord
@_exported public import enum AdTelemetryRecords.RecordKind
@_exported public import struct AdTelemetryRecords.RecordError
@_exported public import struct AdTelemetryRecords.Timestamp
@_exported public import struct AdTelemetryRecords.JSONText
@_exported public import enum AdTelemetryRecords.JSONValue
@_exported public import struct AdTelemetryRecords.IPAddress
@_exported public import struct AdTelemetryRecords.StreamEntryID
@_exported public import struct AdWorkerRedis.RedisConfiguration
@_exported public import struct AdWorkerRedis.RedisNodeAddress

// What a service needs to send telemetry comes with `import AdTelemetry`: the records and their
// value types (the whole records module: it is the telemetry's vocabulary), and of the Redis
// module only the configuration, so the connection machinery stays out of the service's namespace.
@_exported public import AdTelemetryRecords
@_exported public import struct AdWorkerRedis.RedisConfiguration
@_exported public import struct AdWorkerRedis.RedisNodeAddress

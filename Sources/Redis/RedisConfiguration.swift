/// How to reach Redis.
public struct RedisConfiguration: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// ACL user; `nil` authenticates as `default` when a password is set.
    public var username: String?
    public var password: String?
    public var connectTimeout: Duration
    /// Socket read/write timeout for every command. Must exceed any XREADGROUP BLOCK.
    public var commandTimeout: Duration

    public init(
        host: String = "127.0.0.1", port: Int = 6379, username: String? = nil, password: String? = nil,
        connectTimeout: Duration = .seconds(5), commandTimeout: Duration = .seconds(10)
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
    }

    /// Never shows the password.
    public var description: String {
        "redis://\(username.map { "\($0)@" } ?? "")\(host):\(port)\(password == nil ? "" : " (password set)")"
    }
}

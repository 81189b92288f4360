#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address (`source_ip`), parsed once so the worker can write PostgreSQL's binary
/// `inet` without the server parsing text.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6, network order.
    public let bytes: [UInt8]

    public var isIPv6: Bool { bytes.count == 16 }

    /// Parses the textual form; `nil` if it is neither an IPv4 nor an IPv6 address.
    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
            return
        }
        return nil
    }

    public var description: String {
        var output = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = isIPv6 ? AF_INET6 : AF_INET
        bytes.withUnsafeBytes { raw in
            _ = inet_ntop(family, raw.baseAddress, &output, socklen_t(output.count))
        }
        return String(decoding: output.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

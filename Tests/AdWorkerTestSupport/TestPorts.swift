#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Ports for the servers a test starts itself (a private redis-server, an HTTP endpoint).
///
/// They come from 20000-29999, below Linux's ephemeral range (32768-60999 by default): the kernel
/// takes the local port of every outgoing connection from that range, and such a connection
/// can hold the port a server is about to bind (seen here: a private redis-server could not bind
/// a port a client socket was using). A port bound with port 0 is from that range too, so it is
/// not used. Each call hands out the next port not bound by anyone now, so tests running at the
/// same time in this process never share one; the start is drawn per process, so two test
/// processes at once (another worktree's, a fault scenario's) are unlikely to race for one.
public enum TestPorts {
    static let range = 20_000..<30_000
    private static let next = Mutex(Int.random(in: range))

    /// A loopback port nothing listens on now, outside the ephemeral range.
    public static func free() throws -> Int {
        for _ in 0..<range.count {
            let port = next.withLock { next in
                defer { next = next + 1 == range.upperBound ? range.lowerBound : next + 1 }
                return next
            }
            if canBind(port) { return port }
        }
        throw TestSupportError("no free port in \(range)")
    }

    /// Whether 127.0.0.1:`port` can be bound now (without SO_REUSEADDR, as redis-server binds).
    static func canBind(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

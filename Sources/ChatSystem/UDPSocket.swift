// UDP sockets for the daemon and the client, and host name resolution.
//
// The rest of the package speaks `Endpoint` and bytes; sockaddr structs, byte
// order and address families stay in this file. Sockets are always
// nonblocking, so the daemon's loop never stalls on one; the simple client
// waits with `waitReadable` instead. A daemon bound to `::` also serves IPv4,
// and the IPv4 clients it hears from arrive as `::ffff:a.b.c.d`; they are
// folded back to IPv4 here so that a client has one identity, whichever socket
// family carried its datagram.

import CLinux
import ChatCore
import Glibc
import Synchronization

// MARK: - Socket

/// A nonblocking UDP socket. Owns its descriptor, closed by `close()` or on
/// deinit. Sendable because every operation is one syscall on an immutable
/// descriptor; closing it while another thread uses it is still a bug.
public final class UDPSocket: Sendable {
    public let fd: Int32
    /// Whether the socket is AF_INET6 (and so needs v4-mapped destinations).
    public let isIPv6: Bool
    private let closed = Atomic<Bool>(false)

    /// A socket bound to `endpoint` (port 0 picks a free port; see
    /// `localEndpoint`). Bound to `::`, it accepts IPv4 too (IPV6_V6ONLY off).
    ///
    /// - Parameters:
    ///   - reuseAddress: sets SO_REUSEADDR. For UDP on Linux that lets a second
    ///     socket bind the same address and port and silently share the
    ///     traffic, so it is off unless asked for: a second daemon should fail
    ///     with EADDRINUSE, not steal datagrams.
    ///   - receiveBufferSize: the receive buffer in bytes, if given (the kernel
    ///     doubles it; without privilege it is capped at net.core.rmem_max).
    public init(binding endpoint: Endpoint, reuseAddress: Bool = false, receiveBufferSize: Int? = nil) throws {
        let isIPv6 = !endpoint.address.isIPv4
        let fd = try Self.openSocket(isIPv6: isIPv6)
        do {
            if reuseAddress {
                try Self.setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1, "setsockopt(SO_REUSEADDR)")
            }
            if let size = receiveBufferSize {
                // SO_RCVBUFFORCE passes net.core.rmem_max when we may (root,
                // CAP_NET_ADMIN); otherwise the kernel caps SO_RCVBUF there.
                do {
                    try Self.setOption(fd, SOL_SOCKET, SO_RCVBUFFORCE, Int32(clamping: size), "setsockopt(SO_RCVBUFFORCE)")
                } catch {
                    try Self.setOption(fd, SOL_SOCKET, SO_RCVBUF, Int32(clamping: size), "setsockopt(SO_RCVBUF)")
                }
            }
            if endpoint.address == .anyIPv6 {
                try Self.setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 0, "setsockopt(IPV6_V6ONLY)")
            }
            try SocketAddress.with(endpoint, ipv6: isIPv6) { address, length in
                _ = try syscall("bind(\(endpoint))") { Glibc.bind(fd, address, length) }
            }
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
        self.fd = fd
        self.isIPv6 = isIPv6
    }

    /// An unbound socket of `address`'s family, for a client that sends to
    /// `address`; the kernel picks the source port on the first send.
    public init(family address: IPAddress) throws {
        isIPv6 = !address.isIPv4
        fd = try Self.openSocket(isIPv6: isIPv6)
    }

    /// Takes over a datagram socket someone else opened and bound (systemd's
    /// socket activation), making it nonblocking. Throws if `fd` is not a
    /// bound IPv4 or IPv6 datagram socket; the descriptor is then left open.
    public init(adopting fd: Int32) throws {
        try Posix.adoptSocket(fd, type: Int32(SOCK_DGRAM.rawValue), kind: "datagram")
        self.fd = fd
        var storage = sockaddr_storage()
        var addressLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try withUnsafeMutablePointer(to: &storage) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                try syscall("getsockname") { getsockname(fd, address, &addressLength) }
            }
        }
        switch Int32(storage.ss_family) {
        case AF_INET: isIPv6 = false
        case AF_INET6: isIPv6 = true
        default:
            closed.store(true, ordering: .releasing)  // not ours to close
            throw SystemError(errno: EAFNOSUPPORT, call: "adopt socket \(fd) (not IPv4 or IPv6)")
        }
    }

    deinit {
        if !closed.load(ordering: .acquiring) { try? Posix.close(fd: fd) }
    }

    /// Closes the descriptor; later calls do nothing.
    public func close() throws {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        try Posix.close(fd: fd)
    }

    /// The bound address and port (getsockname): the port chosen for port 0,
    /// or the one the kernel picked for an unbound socket after its first send.
    public var localEndpoint: Endpoint {
        get throws {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            _ = try withUnsafeMutablePointer(to: &storage) { pointer in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                    try syscall("getsockname") { getsockname(fd, address, &length) }
                }
            }
            guard let endpoint = SocketAddress.endpoint(from: storage) else {
                throw SystemError(errno: EAFNOSUPPORT, call: "getsockname")
            }
            return endpoint
        }
    }

    // MARK: Sending

    /// Sends one datagram. `.wouldBlock` when the send buffer is full (the
    /// datagram was not sent). Other failures, such as ENOBUFS, EPERM (a
    /// firewall rule), ENETUNREACH or ECONNREFUSED, are thrown for the caller
    /// to judge: for a datagram service they usually mean this one datagram is
    /// lost. An IPv6 destination from an IPv4 socket throws EAFNOSUPPORT.
    public func send(_ bytes: UnsafeRawBufferPointer, to destination: Endpoint) throws -> IOResult<Int> {
        try SocketAddress.with(destination, ipv6: isIPv6) { address, length in
            try syscall("sendto(\(destination))", allowWouldBlock: true) {
                sendto(fd, bytes.baseAddress, bytes.count, 0, address, length)
            }
        }
    }

    public func send(_ bytes: some Collection<UInt8>, to destination: Endpoint) throws -> IOResult<Int> {
        if let result = try bytes.withContiguousStorageIfAvailable({ buffer in
            try send(UnsafeRawBufferPointer(buffer), to: destination)
        }) {
            return result
        }
        return try Array(bytes).withUnsafeBytes { try send($0, to: destination) }
    }

    // MARK: Receiving

    /// Receives one datagram into `buffer`. `count` is the datagram's real
    /// length, which exceeds `buffer.count` when the datagram was too long:
    /// only the first `buffer.count` bytes were kept and the rest are gone,
    /// so the caller should treat it as oversized. `.wouldBlock` when none is
    /// queued.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> IOResult<(count: Int, from: Endpoint)> {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = try withUnsafeMutablePointer(to: &storage) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                // MSG_TRUNC makes recvfrom return the full length of a longer datagram.
                try syscall("recvfrom", allowWouldBlock: true) {
                    recvfrom(fd, buffer.baseAddress, buffer.count, Int32(MSG_TRUNC), address, &length)
                }
            }
        }
        guard case .processed(let count) = result else { return .wouldBlock }
        guard let source = SocketAddress.endpoint(from: storage) else {
            throw SystemError(errno: EAFNOSUPPORT, call: "recvfrom")
        }
        return .processed((count, source))
    }

    /// Receives one datagram as an array of at most `maxSize` bytes. A longer
    /// datagram comes back cut to `maxSize` bytes (the rest is gone), so to
    /// recognise oversized datagrams pass one more than the largest size you
    /// accept and treat `bytes.count > limit` as oversized.
    public func receive(maxSize: Int = 2048) throws -> IOResult<([UInt8], Endpoint)> {
        var bytes = [UInt8](repeating: 0, count: maxSize)
        let result = try bytes.withUnsafeMutableBytes { try receive(into: $0) }
        guard case .processed(let (count, source)) = result else { return .wouldBlock }
        bytes.removeLast(maxSize - min(count, maxSize))
        return .processed((bytes, source))
    }

    /// Waits up to `timeoutMilliseconds` (negative: forever) until a receive
    /// would not block: a datagram, or a pending error it would throw.
    public func waitReadable(timeoutMilliseconds: Int32) throws -> Bool {
        try Posix.poll(fd: fd, events: Int16(POLLIN), timeoutMilliseconds: timeoutMilliseconds) != 0
    }

    // MARK: Setup

    private static func openSocket(isIPv6: Bool) throws -> Int32 {
        let type = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        return try syscall("socket") { socket(isIPv6 ? AF_INET6 : AF_INET, type, 0) }
    }

    private static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32, _ call: String) throws {
        var value = value
        _ = try syscall(call) { setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) }
    }
}

// MARK: - Name resolution

/// A host name that did not resolve to any address.
public struct ResolutionError: Error, CustomStringConvertible, Equatable, Sendable {
    public let host: String
    /// Why, as getaddrinfo put it (`Name or service not known`).
    public let reason: String

    public init(host: String, reason: String) {
        self.host = host
        self.reason = reason
    }

    public var description: String { "cannot resolve host '\(host)': \(reason)" }
}

extension UDPSocket {
    /// The address for `host`: an IP literal as is, otherwise the first IPv4
    /// address getaddrinfo gives, or its first IPv6 one if there is no IPv4.
    /// IPv4 is preferred because `localhost` on many systems lists `::1`
    /// first while daemons are often bound to IPv4 only. AI_ADDRCONFIG is off
    /// so that `localhost` resolves on a machine with only loopback.
    /// Blocks while it asks DNS: meant for a client's startup, not the daemon's loop.
    public static func resolve(host: String) throws -> IPAddress {
        if let literal = IPAddress(host) { return literal }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let code = getaddrinfo(host, nil, &hints, &list)
        guard code == 0 else {
            let reason = code == EAI_SYSTEM ? String(cString: strerror(Glibc.errno)) : String(cString: gai_strerror(code))
            throw ResolutionError(host: host, reason: reason)
        }
        defer { freeaddrinfo(list) }
        var firstIPv6: IPAddress?
        var entry = list
        while let info = entry?.pointee {
            entry = info.ai_next
            guard let address = info.ai_addr else { continue }
            var storage = sockaddr_storage()
            withUnsafeMutableBytes(of: &storage) { target in
                target.copyMemory(from: UnsafeRawBufferPointer(start: address, count: Int(info.ai_addrlen)))
            }
            switch SocketAddress.endpoint(from: storage)?.address {
            case .v4(let v4)?: return .v4(v4)
            case let v6?: firstIPv6 = firstIPv6 ?? v6
            case nil: continue
            }
        }
        guard let firstIPv6 else { throw ResolutionError(host: host, reason: "no IPv4 or IPv6 address") }
        return firstIPv6
    }
}

// MARK: - sockaddr conversion

/// Between `Endpoint` and the kernel's sockaddr_in / sockaddr_in6.
enum SocketAddress {
    /// Calls `body` with `endpoint` as a sockaddr for a socket of the given
    /// family; IPv4 becomes `::ffff:a.b.c.d` for an IPv6 socket.
    static func with<Result>(
        _ endpoint: Endpoint, ipv6: Bool,
        _ body: (UnsafePointer<sockaddr>, socklen_t) throws -> Result
    ) throws -> Result {
        if ipv6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = endpoint.port.bigEndian
            withUnsafeMutableBytes(of: &address.sin6_addr) { target in
                target.copyBytes(from: endpoint.address.ipv6Bytes)
            }
            return try withUnsafePointer(to: &address) { pointer in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                    try body(generic, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
        guard case .v4(let v4) = endpoint.address else {
            throw SystemError(errno: EAFNOSUPPORT, call: "IPv6 address \(endpoint) on an IPv4 socket")
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = endpoint.port.bigEndian
        address.sin_addr = in_addr(s_addr: v4.bigEndian)
        return try withUnsafePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                try body(generic, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }

    /// The endpoint in a sockaddr the kernel filled in, v4-mapped IPv6 folded
    /// to IPv4; nil for a family other than AF_INET/AF_INET6.
    static func endpoint(from storage: sockaddr_storage) -> Endpoint? {
        var storage = storage
        guard [AF_INET, AF_INET6].contains(Int32(storage.ss_family)) else { return nil }
        return endpoint(of: &storage)
    }

    /// `endpoint(from:)` without copying or allocating, for the datagram path.
    /// The family must be AF_INET or AF_INET6 (anything else reads as `::`).
    static func endpoint(of storage: UnsafeMutablePointer<sockaddr_storage>) -> Endpoint {
        let raw = UnsafeRawPointer(storage)
        if Int32(storage.pointee.ss_family) == AF_INET {
            let address = raw.load(as: sockaddr_in.self)
            return Endpoint(.v4(UInt32(bigEndian: address.sin_addr.s_addr)), port: UInt16(bigEndian: address.sin_port))
        }
        let port = UInt16(bigEndian: raw.load(fromByteOffset: MemoryLayout<sockaddr_in6>.offset(of: \.sin6_port)!, as: UInt16.self))
        let addressOffset = MemoryLayout<sockaddr_in6>.offset(of: \.sin6_addr)!
        let high = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: addressOffset, as: UInt64.self))
        let low = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: addressOffset + 8, as: UInt64.self))
        return Endpoint(.ipv6(high: high, low: low), port: port)
    }
}

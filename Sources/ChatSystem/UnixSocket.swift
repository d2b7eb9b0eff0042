// Unix stream sockets, for chatd's control socket and chatctl: a listener
// chatd binds itself or adopts from systemd, the connections it accepts
// (with the peer's credentials, chatd's second gate after the file's
// mode), and the client's connect.
//
// chatd's side is nonblocking (its epoll loop waits); writes use send with
// MSG_NOSIGNAL, so a client that hangs up mid-answer is the error EPIPE for
// that connection, never a SIGPIPE for the process.

import CLinux
import Glibc

/// A listening Unix stream socket.
public final class UnixListener: Sendable {
    public let fd: Int32
    /// The file chatd created, removed again by `close()`; nil for a socket
    /// systemd passed (systemd owns its file).
    public let ownedPath: String?

    /// Binds `path` with mode `mode` and listens. A socket file already at
    /// `path` is replaced if nobody accepts on it (a chatd that crashed left
    /// it); if someone does, this throws EADDRINUSE: another chatd runs. A
    /// missing parent folder is created (0755), as systemd's would be.
    public init(binding path: String, mode: mode_t, backlog: Int32 = 16) throws {
        guard path.utf8.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) else {
            throw SystemError(errno: ENAMETOOLONG, call: "bind(\(path))")
        }
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            try FileSystem.createDirectories(atPath: String(path[..<slash]), mode: 0o755)
        }
        if let existing = try? Posix.stat(path: path) {
            guard existing.st_mode & S_IFMT == S_IFSOCK else {
                throw SystemError(errno: EEXIST, call: "bind(\(path)): not a socket")
            }
            guard try !Self.isServed(path) else {
                throw SystemError(errno: EADDRINUSE, call: "bind(\(path)): another process accepts on it")
            }
            try Posix.unlink(path: path)
        }
        let fd = try syscall("socket(AF_UNIX)") {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        do {
            // The file gets its mode from the umask at bind: set so that it
            // never exists with wider permissions, even for a moment.
            let previous = umask(~mode & 0o777)
            defer { umask(previous) }
            try Self.withAddress(path) { address, length in
                _ = try syscall("bind(\(path))") { bind(fd, address, length) }
            }
            _ = try syscall("listen") { listen(fd, backlog) }
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
        self.fd = fd
        ownedPath = path
    }

    /// Whether a process accepts on the socket at `path`. The connect does
    /// not block: a live listener with a full backlog (EAGAIN) counts as one
    /// rather than holding chatd's start; only ECONNREFUSED means stale.
    static func isServed(_ path: String) throws -> Bool {
        let fd = try syscall("socket(AF_UNIX)") {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        defer { _ = Glibc.close(fd) }
        do {
            try withAddress(path) { address, length in
                _ = try syscall("connect(\(path))") { connect(fd, address, length) }
            }
            return true
        } catch let error as SystemError where error.errno == ECONNREFUSED {
            return false
        } catch let error as SystemError where error.errno == EAGAIN {
            return true
        }
    }

    /// Takes over a listening stream socket systemd passed, making it nonblocking.
    public init(adopting fd: Int32) throws {
        try Posix.adoptSocket(fd, type: Int32(SOCK_STREAM.rawValue), kind: "stream")
        self.fd = fd
        ownedPath = nil
    }

    /// The next connection waiting, nonblocking and close-on-exec, or nil
    /// when none waits.
    public func accept() throws -> UnixStream? {
        let flags = Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        switch try syscall("accept4", allowWouldBlock: true, { chatd_accept4(fd, flags) }) {
        case .processed(let connection): return UnixStream(fd: connection)
        case .wouldBlock: return nil
        }
    }

    /// Closes the socket and removes the file chatd created.
    public func close() {
        _ = Glibc.close(fd)
        if let ownedPath { try? Posix.unlink(path: ownedPath) }
    }

    static func withAddress<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) throws -> T) throws -> T {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SystemError(errno: ENAMETOOLONG, call: "sockaddr_un(\(path))")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return try withUnsafePointer(to: &address) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                try body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }
}

/// One connected Unix stream socket.
public struct UnixStream: Sendable {
    public let fd: Int32

    public init(fd: Int32) { self.fd = fd }

    /// Connects to the socket at `path`, blocking (chatctl's side). ENOENT
    /// and ECONNREFUSED mean nobody serves there; EACCES, no permission.
    public init(connectingTo path: String) throws {
        let fd = try syscall("socket(AF_UNIX)") {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        do {
            try UnixListener.withAddress(path) { address, length in
                _ = try syscall("connect(\(path))") { connect(fd, address, length) }
            }
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
        self.fd = fd
    }

    /// Who is at the other end, as the kernel saw it at connect.
    public func peerCredentials() throws -> (pid: Int32, uid: UInt32, gid: UInt32) {
        var credentials = chatd_ucred()
        _ = try syscall("getsockopt(SO_PEERCRED)") { chatd_peer_credentials(fd, &credentials) }
        return (credentials.pid, credentials.uid, credentials.gid)
    }

    /// Reads what has arrived; 0 bytes is the peer's end of stream.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> IOResult<Int> {
        try Posix.read(fd: fd, into: buffer)
    }

    /// Writes what fits now (EPIPE, not SIGPIPE, if the peer is gone).
    public func write(_ bytes: UnsafeRawBufferPointer) throws -> IOResult<Int> {
        try syscall("send", allowWouldBlock: true) {
            send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
        }
    }

    /// Sets a receive timeout for a blocking socket (chatctl waits for chatd at most this long).
    public func setReceiveTimeout(_ duration: Duration) throws {
        var value = timeval(
            tv_sec: Int(duration.nanoseconds / 1_000_000_000), tv_usec: Int(duration.nanoseconds % 1_000_000_000 / 1000))
        _ = try syscall("setsockopt(SO_RCVTIMEO)") {
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
        }
    }

    public func close() {
        _ = Glibc.close(fd)
    }
}

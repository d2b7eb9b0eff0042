// The one door to libc: errors, the syscall helper, and thin wrappers.
//
// Every libc call in the package goes through this module so that errno is
// read in exactly one way: a call that returns -1 is retried on EINTR, reports
// EAGAIN as the value `.wouldBlock` when the caller is nonblocking on purpose,
// traps on EBADF/EFAULT (a closed or bogus descriptor is a bug in this
// program, not a condition to handle), and throws `SystemError` naming the
// call for everything else. The rest of the package sees Swift values and
// typed errors, never errno.

import CLinux
import Glibc

// MARK: - Errors

/// A failed system call: which call, and the errno it left.
public struct SystemError: Error, CustomStringConvertible, Equatable, Sendable {
    public let errno: Int32
    /// The call that failed, sometimes with what it failed on (`open(/etc/chatd.toml)`).
    public let call: String

    public init(errno: Int32, call: String) {
        self.errno = errno
        self.call = call
    }

    /// A write to a pipe or socket whose reader has gone (SIGPIPE ignored).
    public var isBrokenPipe: Bool { errno == EPIPE }

    /// `bind: Address already in use (errno 98)`.
    public var description: String {
        "\(call): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// The outcome of a call on a nonblocking descriptor: done, or try again after
/// the descriptor becomes ready.
public enum IOResult<T> {
    case processed(T)
    case wouldBlock
}

extension IOResult: Sendable where T: Sendable {}

extension IOResult {
    /// The value, or nil for `.wouldBlock`.
    public var value: T? {
        if case .processed(let value) = self { return value }
        return nil
    }
}

// MARK: - The syscall helper

/// Runs `body` until it stops failing with EINTR.
///
/// `body` returns the raw result of a libc call that signals failure with -1
/// and errno. With `allowWouldBlock`, EAGAIN/EWOULDBLOCK become `.wouldBlock`;
/// without it they are thrown like any other error, since a blocking
/// descriptor that reports them is a condition the caller should see.
@inline(__always)
internal func syscall<T: FixedWidthInteger>(
    _ call: @autoclosure () -> String,
    allowWouldBlock: Bool,
    _ body: () -> T
) throws -> IOResult<T> {
    while true {
        let result = body()
        if result != -1 { return .processed(result) }
        let code = Glibc.errno
        if code == EINTR { continue }
        if allowWouldBlock && (code == EAGAIN || code == EWOULDBLOCK) { return .wouldBlock }
        if code == EBADF || code == EFAULT {
            preconditionFailure("\(SystemError(errno: code, call: call())): a programming error")
        }
        throw SystemError(errno: code, call: call())
    }
}

/// `syscall` for calls that cannot block: the value, or a thrown error.
@inline(__always)
internal func syscall<T: FixedWidthInteger>(
    _ call: @autoclosure () -> String,
    _ body: () -> T
) throws -> T {
    switch try syscall(call(), allowWouldBlock: false, body) {
    case .processed(let value): return value
    case .wouldBlock: preconditionFailure("unreachable: would-block was not allowed")
    }
}

// MARK: - Thin wrappers

/// Static wrappers over the libc calls the package uses, named after them.
public enum Posix {
    /// Closes `fd`. EINTR is not retried: on Linux the descriptor is already
    /// released by then, and a retry could close a descriptor another thread
    /// has just been given.
    public static func close(fd: Int32) throws {
        if Glibc.close(fd) == 0 { return }
        let code = Glibc.errno
        if code == EINTR { return }
        if code == EBADF { preconditionFailure("close(\(fd)): bad file descriptor") }
        throw SystemError(errno: code, call: "close")
    }

    /// Opens `path`, always with O_CLOEXEC so that no descriptor leaks into a child.
    public static func open(path: String, flags: Int32, mode: mode_t = 0) throws -> Int32 {
        try syscall("open(\(path))") { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    public static func read(fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws
        -> IOResult<Int>
    {
        try syscall("read", allowWouldBlock: true) { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    public static func write(fd: Int32, bytes: UnsafeRawBufferPointer) throws -> IOResult<Int> {
        try syscall("write", allowWouldBlock: true) { Glibc.write(fd, bytes.baseAddress, bytes.count) }
    }

    /// Writes every byte, looping over short writes. A nonblocking descriptor
    /// that fills up (a stderr pipe, say) is waited on with poll rather than
    /// dropping the rest.
    public static func writeAll(fd: Int32, bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            switch try write(fd: fd, bytes: rest) {
            case .processed(let written): offset += written
            case .wouldBlock: _ = try poll(fd: fd, events: Int16(POLLOUT), timeoutMilliseconds: -1)
            }
        }
    }

    public static func writeAll(fd: Int32, bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { (buffer) throws in try writeAll(fd: fd, bytes: buffer) }
    }

    public static func fsync(fd: Int32) throws {
        _ = try syscall("fsync") { Glibc.fsync(fd) }
    }

    public static func fdatasync(fd: Int32) throws {
        _ = try syscall("fdatasync") { Glibc.fdatasync(fd) }
    }

    public static func rename(from source: String, to target: String) throws {
        _ = try syscall("rename(\(source), \(target))") { Glibc.rename(source, target) }
    }

    public static func mkdir(path: String, mode: mode_t) throws {
        _ = try syscall("mkdir(\(path))") { Glibc.mkdir(path, mode) }
    }

    public static func unlink(path: String) throws {
        _ = try syscall("unlink(\(path))") { Glibc.unlink(path) }
    }

    /// `stat`, following symlinks; throws ENOENT like any other error. (The
    /// function `stat` is hidden behind the struct of the same name in Swift,
    /// hence fstatat.)
    public static func stat(path: String) throws -> Glibc.stat {
        var info = Glibc.stat()
        _ = try syscall("stat(\(path))") { fstatat(AT_FDCWD, path, &info, 0) }
        return info
    }

    /// Waits for `events` (POLLIN, POLLOUT) on one descriptor and returns the
    /// `revents` seen, 0 on timeout. A negative timeout waits forever. EINTR
    /// restarts the wait with the full timeout, so signals can stretch it;
    /// the callers (a simple client, a full pipe) do not mind.
    public static func poll(fd: Int32, events: Int16, timeoutMilliseconds: Int32) throws -> Int16 {
        var entry = pollfd(fd: fd, events: events, revents: 0)
        let ready = try syscall("poll") { Glibc.poll(&entry, 1, timeoutMilliseconds) }
        return ready == 0 ? 0 : entry.revents
    }

    /// Waits until any of `fds` is readable (or at its end, or in error, which
    /// a read reports) and returns which are, all false on timeout. poll(2)
    /// rather than epoll because it also takes regular files, which a
    /// client's stdin may be. A negative timeout waits forever.
    public static func pollReadable(fds: [Int32], timeoutMilliseconds: Int32) throws -> [Bool] {
        var entries = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        let ready = try syscall("poll") { Glibc.poll(&entries, nfds_t(entries.count), timeoutMilliseconds) }
        let readable = Int16(POLLIN | POLLHUP | POLLERR | POLLNVAL)
        return entries.map { ready > 0 && $0.revents & readable != 0 }
    }

    /// A pipe, close-on-exec at both ends; `nonblocking` applies to both.
    /// (pipe2 is a GNU extension the Glibc module does not import, so the
    /// flags are set after the fact; nothing here forks in between.)
    public static func pipe(nonblocking: Bool = false) throws -> (read: Int32, write: Int32) {
        var ends: [Int32] = [-1, -1]
        _ = try syscall("pipe") { Glibc.pipe(&ends) }
        do {
            for end in ends {
                _ = try syscall("fcntl(F_SETFD)") { fcntl(end, F_SETFD, FD_CLOEXEC) }
                if nonblocking {
                    let flags = try syscall("fcntl(F_GETFL)") { fcntl(end, F_GETFL) }
                    _ = try syscall("fcntl(F_SETFL)") { fcntl(end, F_SETFL, flags | O_NONBLOCK) }
                }
            }
        } catch {
            for end in ends { _ = Glibc.close(end) }
            throw error
        }
        return (ends[0], ends[1])
    }

    /// Whether `fd` is an open descriptor (a program may be started with
    /// stdin closed; reading it would be EBADF, which the wrappers treat as a bug).
    public static func isOpen(fd: Int32) -> Bool {
        fcntl(fd, F_GETFD) != -1
    }

    public static func isTerminal(fd: Int32) -> Bool {
        isatty(fd) == 1
    }

    public static func truncate(fd: Int32, length: Int) throws {
        _ = try syscall("ftruncate") { ftruncate(fd, off_t(length)) }
    }

    /// The size of the open file `fd`.
    public static func fileSize(fd: Int32) throws -> Int64 {
        Int64(try status(fd: fd).st_size)
    }

    public static func status(fd: Int32) throws -> Glibc.stat {
        var status = Glibc.stat()
        _ = try syscall("fstat") { fstat(fd, &status) }
        return status
    }

    /// Sends `signal` to process `pid` (ESRCH if there is none, EPERM if not ours).
    public static func kill(pid: Int32, signal: Int32) throws {
        _ = try syscall("kill(\(pid))") { Glibc.kill(pid, signal) }
    }

    /// Sleeps for `duration` (nanosleep, resumed after signals).
    public static func sleep(_ duration: Duration) throws {
        var remaining = timespec(
            tv_sec: Int(duration.nanoseconds / 1_000_000_000), tv_nsec: Int(duration.nanoseconds % 1_000_000_000))
        var left = timespec()
        while nanosleep(&remaining, &left) != 0 {
            guard errno == EINTR else { throw SystemError(errno: errno, call: "nanosleep") }
            remaining = left
        }
    }

    /// Starts (and with the WAIT flags, waits for) writeback of part of a file.
    public static func syncFileRange(fd: Int32, offset: Int, length: Int, flags: Int) throws {
        _ = try syscall("sync_file_range") {
            chatd_sync_file_range(fd, Int64(offset), Int64(length), UInt32(flags))
        }
    }

    /// Checks that `fd` is a socket of `type` (SOCK_DGRAM, SOCK_STREAM) and
    /// makes it nonblocking: a socket someone else opened (systemd's socket
    /// activation) taken over. Throws ENOTSUP for another type.
    public static func adoptSocket(_ fd: Int32, type expected: Int32, kind: String) throws {
        var type: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = try syscall("getsockopt(SO_TYPE)") { getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) }
        guard type == expected else {
            throw SystemError(errno: ENOTSUP, call: "adopt socket \(fd) (not a \(kind) socket)")
        }
        let flags = try syscall("fcntl(F_GETFL)") { fcntl(fd, F_GETFL) }
        _ = try syscall("fcntl(F_SETFL)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    /// An environment variable, or nil when unset.
    public static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    public static func processID() -> Int32 {
        getpid()
    }

    /// The effective user id, which the control socket's peers are checked against.
    public static func effectiveUserID() -> UInt32 {
        geteuid()
    }

    /// Ends the process with `status`. exit(3), not _exit(2), so that what
    /// `print` left in stdout's buffer is still written.
    public static func exit(_ status: Int32) -> Never {
        Glibc.exit(status)
    }
}

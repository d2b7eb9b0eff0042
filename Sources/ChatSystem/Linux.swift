// The Linux-only descriptors chatd's event loop waits on: epoll and signalfd.
//
// With these, one epoll_wait covers everything the daemon reacts to
// (datagrams, helper threads' eventfds, SIGTERM/SIGHUP) on one thread, with
// no signal handlers and no async-signal-safety to worry about; its timeout
// is the earliest deadline, so no timer needs a descriptor. Swift's Glibc
// module map leaves out <sys/epoll.h> and <sys/signalfd.h>; the CLinux module
// imports them, so clang, not this file, knows their layouts (epoll_event is
// packed on x86_64).

import CLinux
import Glibc
import Synchronization

// MARK: - epoll bits

private enum EpollBits {
    static let epollIn = CLinux.EPOLLIN.rawValue
    static let epollOut = CLinux.EPOLLOUT.rawValue
    static let epollErr = CLinux.EPOLLERR.rawValue
    static let epollHup = CLinux.EPOLLHUP.rawValue
    static let epollRdHup = CLinux.EPOLLRDHUP.rawValue
}

// MARK: - epoll

/// What a descriptor is ready for, in our own bits so callers never see EPOLL* values.
public struct EpollEvents: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let readable = EpollEvents(rawValue: 1 << 0)
    public static let writable = EpollEvents(rawValue: 1 << 1)
    /// Always reported by the kernel, whether asked for or not.
    public static let error = EpollEvents(rawValue: 1 << 2)
    /// The peer hung up (EPOLLHUP, or EPOLLRDHUP when asked for).
    public static let hangup = EpollEvents(rawValue: 1 << 3)

    init(epollBits bits: UInt32) {
        var events: EpollEvents = []
        if bits & EpollBits.epollIn != 0 { events.insert(.readable) }
        if bits & EpollBits.epollOut != 0 { events.insert(.writable) }
        if bits & EpollBits.epollErr != 0 { events.insert(.error) }
        if bits & (EpollBits.epollHup | EpollBits.epollRdHup) != 0 { events.insert(.hangup) }
        self = events
    }

    var epollBits: UInt32 {
        var bits: UInt32 = 0
        if contains(.readable) { bits |= EpollBits.epollIn }
        if contains(.writable) { bits |= EpollBits.epollOut }
        if contains(.error) { bits |= EpollBits.epollErr }
        if contains(.hangup) { bits |= EpollBits.epollRdHup }
        return bits
    }

    public var description: String {
        let names: [(EpollEvents, String)] = [
            (.readable, "readable"), (.writable, "writable"), (.error, "error"), (.hangup, "hangup"),
        ]
        return "[" + names.filter { contains($0.0) }.map(\.1).joined(separator: ", ") + "]"
    }
}

/// One ready registration: the tag given to `add`, and what it is ready for.
public struct EpollEvent: Hashable, Sendable {
    public var tag: UInt64
    public var events: EpollEvents

    public init(tag: UInt64, events: EpollEvents) {
        self.tag = tag
        self.events = events
    }
}

/// An epoll instance. Registrations carry a caller-chosen tag rather than the
/// descriptor, so a loop can tell a stale event for a closed-and-reused
/// descriptor from a live one. Level-triggered. Not thread-safe: one event
/// loop owns it.
public final class Epoll {
    public let fd: Int32
    private var isOpen = true
    /// The kernel's `epoll_event`s, reused by every `wait`.
    private var rawEvents: [epoll_event]

    /// - Parameter maxEvents: the most events one `wait` returns; more stay queued for the next.
    public init(maxEvents: Int = 64) throws {
        precondition(maxEvents > 0 && maxEvents <= Int(Int32.max))
        fd = try syscall("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        rawEvents = Array(repeating: epoll_event(), count: maxEvents)
    }

    deinit {
        if isOpen { try? Posix.close(fd: fd) }
    }

    public func add(fd target: Int32, events: EpollEvents, tag: UInt64) throws {
        try control(EPOLL_CTL_ADD, "epoll_ctl(ADD)", target, events, tag)
    }

    public func modify(fd target: Int32, events: EpollEvents, tag: UInt64) throws {
        try control(EPOLL_CTL_MOD, "epoll_ctl(MOD)", target, events, tag)
    }

    /// Closing a descriptor removes it too; this is for one that stays open.
    public func remove(fd target: Int32) throws {
        try control(EPOLL_CTL_DEL, "epoll_ctl(DEL)", target, [], 0)
    }

    /// Waits for events and replaces `buffer`'s contents with them (reusing
    /// its storage). A negative timeout waits forever. Returns how many came;
    /// 0 on timeout, and also when a signal interrupts the wait, because the
    /// caller recomputes its timeout from its deadlines anyway.
    @discardableResult
    public func wait(timeoutMilliseconds: Int32, into buffer: inout [EpollEvent]) throws -> Int {
        precondition(isOpen, "wait on a closed Epoll")
        buffer.removeAll(keepingCapacity: true)
        let count = rawEvents.withUnsafeMutableBufferPointer {
            epoll_wait(fd, $0.baseAddress, Int32($0.count), timeoutMilliseconds)
        }
        if count < 0 {
            let code = Glibc.errno
            if code == EINTR { return 0 }
            throw SystemError(errno: code, call: "epoll_wait")
        }
        for raw in rawEvents.prefix(Int(count)) {
            buffer.append(EpollEvent(tag: raw.data.u64, events: EpollEvents(epollBits: raw.events)))
        }
        return Int(count)
    }

    /// `wait(timeoutMilliseconds:into:)` returning a new array.
    public func wait(timeoutMilliseconds: Int32) throws -> [EpollEvent] {
        var events: [EpollEvent] = []
        try wait(timeoutMilliseconds: timeoutMilliseconds, into: &events)
        return events
    }

    /// Closes the descriptor; later calls do nothing.
    public func close() throws {
        guard isOpen else { return }
        isOpen = false
        try Posix.close(fd: fd)
    }

    private func control(
        _ operation: Int32, _ call: String, _ target: Int32, _ events: EpollEvents, _ tag: UInt64
    ) throws {
        precondition(isOpen, "\(call) on a closed Epoll")
        var event = epoll_event()
        event.events = events.epollBits
        event.data.u64 = tag
        _ = try syscall(call) { epoll_ctl(fd, operation, target, &event) }
    }
}

// MARK: - signalfd

/// Signals as a readable descriptor, so the event loop handles SIGTERM and
/// SIGHUP between datagrams instead of inside a handler.
///
/// The signals are blocked with pthread_sigmask on the calling thread, and a
/// thread inherits its creator's mask, so create this on the main thread
/// before any other thread starts (Dispatch, a logging backend, the Swift
/// concurrency pool). A thread that was already running keeps the signals
/// unblocked and would receive them the default way, typically by dying.
public final class SignalFD: Sendable {
    public let fd: Int32
    public let signals: [Int32]
    private let closed = Atomic<Bool>(false)

    /// Blocks `signals` on this thread and opens a nonblocking, close-on-exec
    /// signalfd for them. They stay blocked after `close`.
    public init(signals: [Int32]) throws {
        var mask = sigset_t()
        sigemptyset(&mask)
        for signal in signals {
            _ = try syscall("sigaddset(\(signal))") { sigaddset(&mask, signal) }
        }
        // pthread_sigmask returns the error number instead of setting errno.
        var previous = sigset_t()
        let code = pthread_sigmask(SIG_BLOCK, &mask, &previous)
        if code != 0 { throw SystemError(errno: code, call: "pthread_sigmask") }
        do {
            fd = try syscall("signalfd") {
                signalfd(-1, &mask, Int32(SFD_NONBLOCK | SFD_CLOEXEC))
            }
        } catch {
            // Without the descriptor nobody would ever read them: unblock again.
            pthread_sigmask(SIG_SETMASK, &previous, nil)
            throw error
        }
        self.signals = signals
    }

    deinit {
        if !closed.load(ordering: .acquiring) { try? Posix.close(fd: fd) }
    }

    /// The next pending signal's number, or nil when none is pending. Each
    /// call consumes one; a signal sent twice before it is read is pending once.
    public func next() throws -> Int32? {
        precondition(!closed.load(ordering: .relaxed), "read on a closed SignalFD")
        var info = signalfd_siginfo()
        let result = try withUnsafeMutableBytes(of: &info) { try Posix.read(fd: fd, into: $0) }
        guard case .processed(let count) = result else { return nil }
        precondition(count == MemoryLayout<signalfd_siginfo>.size, "signalfd read returned \(count) bytes")
        return Int32(bitPattern: info.ssi_signo)
    }

    /// Closes the descriptor; later calls do nothing.
    public func close() throws {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        try Posix.close(fd: fd)
    }
}

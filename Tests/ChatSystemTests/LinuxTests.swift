// Tests for epoll and signalfd: the descriptors the event loop waits on.
//
// Waits are bounded (two seconds at most), so a missing event fails the
// test rather than hanging it.

import ChatCore
import ChatSystem
import Glibc
import Testing

// MARK: - epoll

@Suite struct EpollTests {
    /// The event loop has no timer descriptor: it sleeps in epoll_wait
    /// until its earliest deadline, so the timeout must hold.
    @Test func waitReturnsEmptyAfterItsTimeout() throws {
        let epoll = try Epoll()
        let start = SystemClock.monotonicNow()
        #expect(try epoll.wait(timeoutMilliseconds: 20).isEmpty)
        #expect(SystemClock.monotonicNow() - start >= .milliseconds(20))
    }

    @Test func socketReadinessAndRegistrationChanges() throws {
        let epoll = try Epoll()
        let socket = try UDPSocket(binding: Endpoint(.loopbackIPv4, port: 0))
        try epoll.add(fd: socket.fd, events: .readable, tag: 42)
        #expect(try epoll.wait(timeoutMilliseconds: 0).isEmpty)

        _ = try socket.send([1, 2, 3], to: try socket.localEndpoint)
        #expect(try epoll.wait(timeoutMilliseconds: 2000) == [EpollEvent(tag: 42, events: .readable)])

        // Level-triggered: still readable until received; a new tag shows up after modify.
        try epoll.modify(fd: socket.fd, events: [.readable, .writable], tag: 43)
        #expect(try epoll.wait(timeoutMilliseconds: 0) == [EpollEvent(tag: 43, events: [.readable, .writable])])

        try epoll.remove(fd: socket.fd)
        #expect(try epoll.wait(timeoutMilliseconds: 0).isEmpty)
        let error = try #require(throws: SystemError.self) { try epoll.remove(fd: socket.fd) }
        #expect(error.errno == ENOENT)
    }

    @Test func waitReturnsAtMostMaxEvents() throws {
        let epoll = try Epoll(maxEvents: 2)
        let sockets = try (0..<3).map { _ in try UDPSocket(binding: Endpoint(.loopbackIPv4, port: 0)) }
        for (index, socket) in sockets.enumerated() {
            try epoll.add(fd: socket.fd, events: .writable, tag: UInt64(index))
        }
        var events: [EpollEvent] = []
        #expect(try epoll.wait(timeoutMilliseconds: 0, into: &events) == 2)
        #expect(events.count == 2)
        #expect(events.allSatisfy { $0.events == .writable })
    }

    @Test func eventsDescription() {
        #expect(EpollEvents([.readable, .hangup]).description == "[readable, hangup]")
        #expect(EpollEvents().description == "[]")
    }
}

// MARK: - signalfd

@Suite struct SignalFDTests {
    /// Synchronous on purpose: blocking, raising and reading must happen on
    /// one thread. `raise` sends to the calling thread, whose mask now blocks
    /// the signal, so it stays pending for the signalfd. (`kill(getpid())`
    /// would target the whole process, and the test runner's other threads
    /// have it unblocked.) SIGWINCH and SIGURG are ignored by default, so a
    /// mistake here cannot kill the test process.
    @Test(arguments: [SIGWINCH, SIGURG])
    func raisedSignalIsReadFromDescriptor(signal: Int32) throws {
        let signals = try SignalFD(signals: [signal])
        defer { try? signals.close() }
        #expect(try signals.next() == nil)
        #expect(raise(signal) == 0)
        #expect(try signals.next() == signal)
        #expect(try signals.next() == nil)
    }

    @Test func signalFDIsReadableThroughEpoll() throws {
        let signals = try SignalFD(signals: [SIGWINCH])
        let epoll = try Epoll()
        try epoll.add(fd: signals.fd, events: .readable, tag: 9)
        #expect(try epoll.wait(timeoutMilliseconds: 0).isEmpty)
        #expect(raise(SIGWINCH) == 0)
        #expect(try epoll.wait(timeoutMilliseconds: 2000).map(\.tag) == [9])
        #expect(try signals.next() == SIGWINCH)
    }

    @Test func invalidSignalThrows() throws {
        let error = try #require(throws: SystemError.self) { try SignalFD(signals: [9999]) }
        #expect(error.errno == EINVAL)
    }
}

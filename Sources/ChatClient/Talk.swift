// `chat talk`: ChatCore's TalkSession driven over the handshake's socket,
// stdin and a signalfd.
//
// One thread waits in poll(2) on the socket, the signalfd (SIGINT,
// SIGTERM) and stdin, until the session's next deadline; poll rather than
// epoll because stdin may be a regular file (`chat talk bob < notes`),
// which epoll refuses. Stdin is only watched while the session takes input,
// so a long paste is read as fast as it is sent. The first signal asks the
// session to leave (LEAVE, then exit); a second one ends at once, for a
// server that no longer answers. Output that can no longer be shown (`chat
// talk --listen | head` once head exits) leaves the same way as a signal:
// a listener nobody reads is a member the room should lose.

import ChatCore
import ChatSystem

extension Client {
    /// How `chat talk` ended.
    public enum TalkOutcome: Equatable, Sendable {
        /// The handshake did not end in a username.
        case handshake(HandshakeResult)
        case finished(TalkResult)
    }

    /// Runs the handshake of `chat join name`, then the session until it ends.
    /// - Parameters:
    ///   - readsInput: false for `--listen`: stdin is never read, and only a
    ///     signal (or output gone, below) ends the session.
    ///   - show: called with each message and notice, in order; returns false
    ///     once the output has gone (stdout closed), and the session then
    ///     leaves as on SIGTERM.
    public static func talk(
        _ name: Username, server: Endpoint, source: IPAddress? = nil, settings: TalkSettings, readsInput: Bool,
        show: (TalkOutput) -> Bool
    ) throws -> TalkOutcome {
        let socket = try openSocket(server: server, source: source)
        let handshakeResult = try handshake(.join(name), on: socket, server: server, settings: settings.requests)
        guard case .success = handshakeResult else { return .handshake(handshakeResult) }
        // Blocked from here on (the process has one thread), so that a
        // signal becomes a LEAVE instead of an exit without one.
        let signals = try SignalFD(signals: [Signal.interrupt, Signal.terminate])
        defer { try? signals.close() }

        var session = TalkSession(server: server, settings: settings, random: SystemRandomNumberGenerator())
        var input = LineReader(fd: 0)
        if !readsInput || !Posix.isOpen(fd: 0) { input.atEnd = true }
        var signalled = false
        var outputGone = false
        session.start(now: SystemClock.monotonicNow())
        if readsInput && input.atEnd { session.endOfInput(now: SystemClock.monotonicNow()) }
        while true {
            // Outputs before transmits: quitting for a closed stdout queues a
            // LEAVE that must go out before a finished session returns.
            while let output = session.pollOutput() {
                if !show(output) && !outputGone {
                    outputGone = true
                    session.quit(now: SystemClock.monotonicNow())
                }
            }
            while let bytes = session.pollTransmit() {
                // A failed send is a lost datagram: the retry timers cover it.
                _ = try? socket.send(bytes, to: server)
            }
            if let result = session.result { return .finished(result) }

            let readsNow = !input.atEnd && session.acceptsInput
            let fds = [socket.fd, signals.fd] + (readsNow ? [input.fd] : [])
            let timeout = session.nextTimeout().map(milliseconds(until:)) ?? -1
            let ready = try Posix.pollReadable(fds: fds, timeoutMilliseconds: timeout)
            if ready[1] {
                while try signals.next() != nil {
                    if signalled { return .finished(.interrupted) }
                    signalled = true
                    session.quit(now: SystemClock.monotonicNow())
                }
            }
            if ready[0] {
                while case .processed(let (bytes, source)) = try socket.receive(maxSize: maxDatagramSize + 1) {
                    session.handle(datagram: bytes, from: source, now: SystemClock.monotonicNow())
                }
            }
            if readsNow && ready[2] {
                for line in input.read() { session.input(line, now: SystemClock.monotonicNow()) }
                if input.atEnd { session.endOfInput(now: SystemClock.monotonicNow()) }
            }
            let now = SystemClock.monotonicNow()
            if let deadline = session.nextTimeout(), deadline <= now { session.handleTimeout(now: now) }
        }
    }
}

/// Splits what a descriptor yields into lines, without their "\n" or "\r\n".
struct LineReader {
    let fd: Int32
    var atEnd = false
    private var pending: [UInt8] = []
    private var chunk = [UInt8](repeating: 0, count: 16 * 1024)

    /// A line longer than this keeps only its start: it is refused as too
    /// long all the same, and memory stays bounded however long it is.
    static let maxLine = 64 * 1024

    init(fd: Int32) { self.fd = fd }

    /// Reads once (the caller knows it will not block) and returns the lines
    /// it completed; at the end, the last line even without its "\n".
    mutating func read() -> [[UInt8]] {
        let result = chunk.withUnsafeMutableBytes { try? Posix.read(fd: fd, into: $0) }
        switch result {
        case .processed(let count)? where count > 0:
            return split(chunk[..<count])
        case .wouldBlock?:
            return []
        default:
            // End of input, or a read error (a terminal hung up): the same to us.
            atEnd = true
            defer { pending.removeAll() }
            return pending.isEmpty ? [] : [Self.trimmed(pending[...])]
        }
    }

    private mutating func split(_ bytes: ArraySlice<UInt8>) -> [[UInt8]] {
        var lines: [[UInt8]] = []
        var rest = bytes
        while let newline = rest.firstIndex(of: UInt8(ascii: "\n")) {
            append(rest[..<newline])
            lines.append(Self.trimmed(pending[...]))
            pending.removeAll(keepingCapacity: true)
            rest = rest[(newline + 1)...]
        }
        append(rest)
        return lines
    }

    private mutating func append(_ bytes: ArraySlice<UInt8>) {
        pending += bytes.prefix(max(0, Self.maxLine - pending.count))
    }

    private static func trimmed(_ line: ArraySlice<UInt8>) -> [UInt8] {
        Array(line.last == UInt8(ascii: "\r") ? line.dropLast() : line)
    }
}

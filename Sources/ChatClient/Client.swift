// The client library: ChatCore's client machines driven over a UDP socket.
//
// The machines decide everything (ids, retries, which replies count); this
// file only performs their actions: send, wait until the armed instant or a
// datagram, and hand either back. One socket serves the handshake and what
// follows it, so the server sees one source port (the endpoint its cookie
// names), and stale replies to earlier attempts arrive on it and are
// discarded by the machines.

import ChatCore
import ChatSystem

public enum Client {
    /// Why a handshake could not even be attempted.
    public struct SetupError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Runs one handshake to its end.
    /// - Parameters:
    ///   - server: where the server listens.
    ///   - source: the local address to send from (nil: any address of the
    ///     server's family).
    public static func run(
        _ goal: HandshakeGoal, server: Endpoint, source: IPAddress? = nil, settings: HandshakeSettings
    ) throws -> HandshakeResult {
        let socket = try openSocket(server: server, source: source)
        return try handshake(goal, on: socket, server: server, settings: settings)
    }

    /// How a one-shot chat command ended.
    public enum CallOutcome: Equatable, Sendable {
        /// The CONNECT before it did not find a username.
        case handshake(HandshakeResult)
        case call(ChatCallResult)
    }

    /// `chat say`, `chat who`: CONNECT (so an unregistered address is told
    /// as `chat connect` tells it), then the request, on one socket.
    public static func call(
        _ goal: ChatCallGoal, server: Endpoint, source: IPAddress? = nil, settings: HandshakeSettings
    ) throws -> CallOutcome {
        let socket = try openSocket(server: server, source: source)
        let connected = try handshake(.connect, on: socket, server: server, settings: settings)
        guard case .success = connected else { return .handshake(connected) }
        var machine = ChatCall(goal: goal, server: server, settings: settings, random: SystemRandomNumberGenerator())
        machine.start(now: SystemClock.monotonicNow())
        while true {
            while let bytes = machine.pollTransmit() {
                // A failed send is a lost datagram: the retry timer covers it.
                _ = try? socket.send(bytes, to: server)
            }
            if let result = machine.result { return .call(result) }
            guard let deadline = machine.nextTimeout() else { preconditionFailure("a call in progress has a deadline") }
            if try socket.waitReadable(timeoutMilliseconds: milliseconds(until: deadline)) {
                while case .processed(let (bytes, source)) = try socket.receive(maxSize: maxDatagramSize + 1) {
                    machine.handle(datagram: bytes, from: source, now: SystemClock.monotonicNow())
                }
            }
            machine.handleTimeout(now: SystemClock.monotonicNow())
        }
    }

    /// A socket at `source` (or any address of the server's family), port
    /// chosen by the kernel.
    static func openSocket(server: Endpoint, source: IPAddress?) throws -> UDPSocket {
        if let source, source.isIPv4 != server.address.isIPv4 {
            throw SetupError(description: "source address \(source) and server \(server) are of different IP families")
        }
        let local = source ?? (server.address.isIPv4 ? .anyIPv4 : .anyIPv6)
        do {
            return try UDPSocket(binding: Endpoint(local, port: 0), reuseAddress: false)
        } catch {
            throw SetupError(description: "cannot use source address \(local): \(error)")
        }
    }

    static func handshake(
        _ goal: HandshakeGoal, on socket: UDPSocket, server: Endpoint, settings: HandshakeSettings
    ) throws -> HandshakeResult {
        var machine = Handshake(goal: goal, server: server, settings: settings, random: SystemRandomNumberGenerator())
        var pending = machine.start(now: SystemClock.monotonicNow())
        while true {
            for action in pending {
                switch action {
                case .send(let bytes):
                    // A failed send is a lost datagram: the retry timer covers it.
                    _ = try? socket.send(bytes, to: server)
                case .armTimer:
                    break  // machine.deadline holds it
                case .finished(let result):
                    return result
                }
            }
            pending = try waitForNext(&machine, on: socket)
        }
    }

    /// Blocks until a datagram arrives or the machine's deadline passes, and
    /// returns what the machine makes of it.
    private static func waitForNext(
        _ machine: inout Handshake<SystemRandomNumberGenerator>, on socket: UDPSocket
    ) throws -> [HandshakeAction] {
        guard let deadline = machine.deadline else { return [] }
        if try socket.waitReadable(timeoutMilliseconds: milliseconds(until: deadline)) {
            var actions: [HandshakeAction] = []
            while case .processed(let (bytes, source)) = try socket.receive(maxSize: maxDatagramSize + 1) {
                actions += machine.received(bytes, from: source, now: SystemClock.monotonicNow())
                if machine.result != nil { break }
            }
            if !actions.isEmpty { return actions }
        }
        return machine.timerFired(now: SystemClock.monotonicNow())
    }

    /// Milliseconds from now until `deadline`, rounded up so that a wait
    /// never ends just before it; 0 once it has passed.
    static func milliseconds(until deadline: Instant) -> Int32 {
        let remaining = deadline - SystemClock.monotonicNow()
        return Int32(clamping: max(0, (remaining.nanoseconds + 999_999) / 1_000_000))
    }
}

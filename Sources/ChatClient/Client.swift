// The client library: ChatCore's handshake machine driven over a UDP socket.
//
// The machine decides everything (ids, retries, which replies count); this
// file only performs its actions: send, wait until the armed instant or a
// datagram, and hand either back. One socket serves the whole handshake, so
// the server sees one source port, and stale replies to earlier attempts
// arrive on it and are discarded by the machine.

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
        if let source, source.isIPv4 != server.address.isIPv4 {
            throw SetupError(description: "source address \(source) and server \(server) are of different IP families")
        }
        let local = source ?? (server.address.isIPv4 ? .anyIPv4 : .anyIPv6)
        let socket: UDPSocket
        do {
            socket = try UDPSocket(binding: Endpoint(local, port: 0), reuseAddress: false)
        } catch {
            throw SetupError(description: "cannot use source address \(local): \(error)")
        }
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
        let remaining = deadline - SystemClock.monotonicNow()
        let milliseconds = max(0, (remaining.nanoseconds + 999_999) / 1_000_000)
        if try socket.waitReadable(timeoutMilliseconds: Int32(clamping: milliseconds)) {
            var actions: [HandshakeAction] = []
            while case .processed(let (bytes, source)) = try socket.receive(maxSize: maxDatagramSize + 1) {
                actions += machine.received(bytes, from: source, now: SystemClock.monotonicNow())
                if machine.result != nil { break }
            }
            if !actions.isEmpty { return actions }
        }
        return machine.timerFired(now: SystemClock.monotonicNow())
    }
}

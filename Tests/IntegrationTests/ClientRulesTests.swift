// The `chat` binary against a scripted fake server, to prove the client's
// rules where a real server would never misbehave: lost replies, late
// replies to earlier attempts, replies from elsewhere, a server confirming
// the wrong name.

import ChatCore
import ChatSystem
import Foundation
import Testing

/// A UDP socket on 127.0.0.1 that plays the server, one datagram at a time.
final class FakeServer {
    let socket: UDPSocket
    let port: UInt16

    init() throws {
        socket = try UDPSocket(binding: Endpoint(.loopbackIPv4, port: 0))
        port = try socket.localEndpoint.port
    }

    deinit { try? socket.close() }

    /// The next request, or a test failure after `timeout`.
    func next(timeout: Duration = .seconds(5)) throws -> (Request, Endpoint) {
        let milliseconds = Int32(timeout.components.seconds * 1000)
        guard try socket.waitReadable(timeoutMilliseconds: milliseconds),
            case .processed(let (bytes, source)) = try socket.receive()
        else { throw TestFailure(description: "no request within \(timeout)") }
        guard case .request(let request) = RequestParse(bytes) else {
            throw TestFailure(description: "not a request: \(String(decoding: bytes, as: UTF8.self))")
        }
        return (request, source)
    }

    func reply(_ response: Response, to client: Endpoint, from socket: UDPSocket? = nil) throws {
        _ = try (socket ?? self.socket).send(response.bytes, to: client)
    }

    /// True when no datagram arrives within `window`.
    func isQuiet(for window: Duration) throws -> Bool {
        try !socket.waitReadable(timeoutMilliseconds: Int32(window.components.seconds * 1000 + window.components.attoseconds / 1_000_000_000_000_000))
    }
}

private let alice = Username("alice")!

@Suite(.serialized, .timeLimit(.minutes(2)))
struct ClientRulesTests {
    @Test func retriesWithAFreshIDUntilAnswered() throws {
        let server = try FakeServer()
        let client = try startProgram(Binaries.chat, ["connect", "--config", emptyConfig, "--port", "\(server.port)", "--timeout-ms", "100", "--attempts", "5"])
        var ids: [UInt32] = []
        var times: [ContinuousClock.Instant] = []
        var source: Endpoint?
        for _ in 0..<3 {
            let (request, from) = try server.next()
            #expect(request == .connect(id: request.id))
            ids.append(request.id)
            times.append(.now)
            source = from
        }
        try server.reply(.success(id: ids[2], username: alice), to: source!)
        let result = try client.wait(timeout: .seconds(10))
        #expect(result.status == 0)
        #expect(result.lastLine == "alice")
        #expect(Set(ids).count == 3)
        // Backoff 2.0: the second wait is about twice the first (generous bounds).
        let first = times[1] - times[0]
        let second = times[2] - times[1]
        #expect(first >= .milliseconds(90))
        #expect(second >= .milliseconds(180))
    }

    @Test func aLateReplyToAnEarlierAttemptIsIgnored() throws {
        let server = try FakeServer()
        let client = try startProgram(Binaries.chat, ["connect", "--config", emptyConfig, "--port", "\(server.port)", "--timeout-ms", "150", "--attempts", "5"])
        let (first, source) = try server.next()
        let (second, _) = try server.next()
        #expect(second.id != first.id)
        // The first attempt's reply arrives late and says something else.
        try server.reply(.error(id: first.id, reason: .serverFull), to: source)
        try server.reply(.success(id: second.id, username: alice), to: source)
        let result = try client.wait(timeout: .seconds(10))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.lastLine == "alice")
    }

    @Test func aReplyFromAnotherPortIsIgnored() throws {
        let server = try FakeServer()
        let impostor = try UDPSocket(binding: Endpoint(.loopbackIPv4, port: 0))
        defer { try? impostor.close() }
        let client = try startProgram(Binaries.chat, ["connect", "--config", emptyConfig, "--port", "\(server.port)", "--timeout-ms", "300", "--attempts", "3"])
        let (request, source) = try server.next()
        try server.reply(.error(id: request.id, reason: .serverFull), to: source, from: impostor)
        try server.reply(.success(id: request.id, username: alice), to: source)
        let result = try client.wait(timeout: .seconds(10))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.lastLine == "alice")
    }

    @Test func joinResendsIntroduceWhenTheServerConfirmsAnotherName() throws {
        let server = try FakeServer()
        let client = try startProgram(Binaries.chat, ["join", "alice", "--config", emptyConfig, "--port", "\(server.port)", "--timeout-ms", "2000", "--attempts", "3"])
        let (connect, source) = try server.next()
        #expect(connect == .connect(id: connect.id))
        try server.reply(.error(id: connect.id, reason: .clientNotFound), to: source)
        let (introduce, _) = try server.next()
        #expect(introduce == .introduce(id: introduce.id, username: alice))
        try server.reply(.success(id: introduce.id, username: Username("mallory")!), to: source)
        let (again, _) = try server.next()
        #expect(again == .introduce(id: again.id, username: alice))
        #expect(again.id != introduce.id)
        try server.reply(.success(id: again.id, username: alice), to: source)
        let (final, _) = try server.next()
        #expect(final == .connect(id: final.id))
        try server.reply(.success(id: final.id, username: alice), to: source)
        let result = try client.wait(timeout: .seconds(10))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.lastLine == "alice")
    }

    @Test func givesUpAfterMaxAttemptsNamingTheServer() throws {
        let server = try FakeServer()
        let client = try startProgram(Binaries.chat, ["connect", "--config", emptyConfig, "--port", "\(server.port)", "--timeout-ms", "50", "--attempts", "3"])
        for _ in 0..<3 { _ = try server.next() }
        let result = try client.wait(timeout: .seconds(10))
        #expect(result.status == 69)
        #expect(result.stderr.contains("127.0.0.1:\(server.port)"))
        #expect(result.stderr.contains("3 attempts"))
        #expect(try server.isQuiet(for: .milliseconds(300)))
    }

    @Test(arguments: [
        (Response.error(id: 0, reason: .serverFull), Int32(75)),
        (.error(id: 0, reason: .malformed), 76),
        (.error(id: 0, reason: .invalidUsername, detail: "TAKEN"), 65),
    ])
    func introduceErrorsBecomeExitStatuses(response: Response, status: Int32) throws {
        let server = try FakeServer()
        let client = try startProgram(Binaries.chat, ["introduce", "alice", "--config", emptyConfig, "--port", "\(server.port)", "--timeout-ms", "2000"])
        let (request, source) = try server.next()
        guard case .error(_, let reason, let detail) = response else { return }
        try server.reply(.error(id: request.id, reason: reason, detail: detail), to: source)
        let result = try client.wait(timeout: .seconds(10))
        #expect(result.status == status)
        #expect(result.stderr.hasPrefix("chat: "))
    }

    @Test func badUsageExits64() throws {
        // The bounds are the config file's, so a flag accepts what the key would.
        let flags = [
            (["--port", "70000"], "--port must be from 1 to 65535"),
            (["--timeout-ms", "0"], "--timeout-ms must be from 1 to 600000"),
            (["--attempts", "101"], "--attempts must be from 1 to 100"),
            (["--server", "chat example.org"], "--server must be an address or host name"),
            (["--server", "chat\texample.org"], "--server must be an address or host name"),
            (["--bind", "localhost"], "--bind must be an IP address"),
        ]
        for (arguments, message) in flags {
            let result = try runProgram(Binaries.chat, ["join", "alice"] + arguments)
            #expect(result.status == 64)
            #expect(result.stderr.contains(message))
        }
        let noCommand = try runProgram(Binaries.chat, ["frobnicate"])
        #expect(noCommand.status == 64)
    }
}

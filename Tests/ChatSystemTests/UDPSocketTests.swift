// Loopback tests for UDP sockets: addressing, dual stack, truncation, would-block.
//
// Every socket binds port 0, so tests run in parallel without colliding, and
// every wait is bounded (a second at most) so a lost datagram fails the test
// instead of hanging it.

import ChatCore
import ChatSystem
import Glibc
import Testing

// MARK: - Helpers

/// `127.0.0.1`-style literals, checked.
private func address(_ text: String) throws -> IPAddress {
    try #require(IPAddress(text))
}

/// Receives one datagram, waiting up to a second for it.
private func receiveOne(_ socket: UDPSocket, maxSize: Int = 2048) throws -> ([UInt8], Endpoint) {
    #expect(try socket.waitReadable(timeoutMilliseconds: 1000))
    return try #require(try socket.receive(maxSize: maxSize).value)
}

/// Whether this machine can bind an IPv6 socket to `::` (containers often cannot).
private let ipv6Available: Bool = (try? UDPSocket(binding: Endpoint(.anyIPv6, port: 0))) != nil

// MARK: - Tests

@Suite struct UDPSocketTests {
    @Test func sendAndReceiveBetweenTwoLoopbackAddresses() throws {
        let first = try UDPSocket(binding: Endpoint(try address("127.0.0.1"), port: 0))
        let second = try UDPSocket(binding: Endpoint(try address("127.0.0.2"), port: 0))
        let firstEndpoint = try first.localEndpoint
        let secondEndpoint = try second.localEndpoint
        #expect(firstEndpoint.address == (try address("127.0.0.1")))
        #expect(firstEndpoint.port != 0)
        #expect(secondEndpoint.address == (try address("127.0.0.2")))

        let message = Array("hello".utf8)
        #expect(try first.send(message, to: secondEndpoint).value == message.count)
        let (bytes, source) = try receiveOne(second)
        #expect(bytes == message)
        #expect(source == firstEndpoint)

        // And back, through the raw-buffer API.
        let reply: [UInt8] = [0, 1, 2, 255]
        #expect(try reply.withUnsafeBytes { try second.send($0, to: source) }.value == 4)
        let (replyBytes, replySource) = try receiveOne(first)
        #expect(replyBytes == reply)
        #expect(replySource == secondEndpoint)
    }

    @Test(.enabled(if: ipv6Available, "IPv6 is not available here"))
    func dualStackSocketSeesIPv4ClientAsIPv4() throws {
        let server = try UDPSocket(binding: Endpoint(.anyIPv6, port: 0))
        let serverEndpoint = try server.localEndpoint
        #expect(serverEndpoint.address == .anyIPv6)
        #expect(server.isIPv6)

        let client = try UDPSocket(family: .loopbackIPv4)
        #expect(!client.isIPv6)
        #expect(try client.send([42], to: Endpoint(.loopbackIPv4, port: serverEndpoint.port)).value == 1)
        let (bytes, source) = try receiveOne(server)
        #expect(bytes == [42])
        #expect(source.address == .loopbackIPv4)  // folded from ::ffff:127.0.0.1
        #expect(source.port == (try client.localEndpoint).port)

        // The reply goes to an IPv4 endpoint from the IPv6 socket (v4-mapped on the wire).
        #expect(try server.send([43], to: source).value == 1)
        let (replyBytes, replySource) = try receiveOne(client)
        #expect(replyBytes == [43])
        #expect(replySource == Endpoint(.loopbackIPv4, port: serverEndpoint.port))
    }

    @Test(arguments: [(100, 3000), (100, 101), (100, 100), (2048, 0)])
    func oversizedDatagramReportsItsRealLength(bufferSize: Int, datagramSize: Int) throws {
        let receiver = try UDPSocket(binding: Endpoint(.loopbackIPv4, port: 0))
        let sender = try UDPSocket(family: .loopbackIPv4)
        let datagram = (0..<datagramSize).map { UInt8(truncatingIfNeeded: $0) }
        #expect(try sender.send(datagram, to: try receiver.localEndpoint).value == datagramSize)
        #expect(try receiver.waitReadable(timeoutMilliseconds: 1000))

        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 1)
        defer { buffer.deallocate() }
        let (count, source) = try #require(try receiver.receive(into: buffer).value)
        #expect(count == datagramSize)
        #expect(source.address == .loopbackIPv4)
        #expect(Array(buffer.prefix(min(count, bufferSize))) == Array(datagram.prefix(bufferSize)))
        // The datagram was consumed whole, truncated or not.
        #expect(try receiver.receive().value == nil)
    }

    @Test func convenienceReceiveCutsOversizedDatagramToMaxSize() throws {
        let receiver = try UDPSocket(binding: Endpoint(.loopbackIPv4, port: 0))
        let sender = try UDPSocket(family: .loopbackIPv4)
        let limit = 512
        for size in [600, limit + 1, limit] {
            _ = try sender.send([UInt8](repeating: 7, count: size), to: try receiver.localEndpoint)
            let (bytes, _) = try receiveOne(receiver, maxSize: limit + 1)
            #expect(bytes.count == min(size, limit + 1))
            #expect((bytes.count > limit) == (size > limit))
        }
    }

    @Test func emptySocketWouldBlock() throws {
        let socket = try UDPSocket(binding: Endpoint(.loopbackIPv4, port: 0))
        #expect(try socket.receive().value == nil)
        var buffer = [UInt8](repeating: 0, count: 64)
        let result = try buffer.withUnsafeMutableBytes { try socket.receive(into: $0) }
        guard case .wouldBlock = result else {
            Issue.record("expected .wouldBlock, got \(result)")
            return
        }
        #expect(try !socket.waitReadable(timeoutMilliseconds: 0))
    }

    @Test func secondBindToSamePortFails() throws {
        let first = try UDPSocket(binding: Endpoint(.loopbackIPv4, port: 0))
        let taken = try first.localEndpoint
        let error = try #require(throws: SystemError.self) { try UDPSocket(binding: taken) }
        #expect(error.errno == EADDRINUSE)
        #expect(error.description.hasPrefix("bind(127.0.0.1:\(taken.port)): Address already in use"))
    }

    @Test func ipv6DestinationFromIPv4SocketThrows() throws {
        let socket = try UDPSocket(family: .loopbackIPv4)
        let error = try #require(throws: SystemError.self) {
            try socket.send([1], to: Endpoint(.loopbackIPv6, port: 9))
        }
        #expect(error.errno == EAFNOSUPPORT)
    }

    @Test func closeIsIdempotent() throws {
        let socket = try UDPSocket(binding: Endpoint(.loopbackIPv4, port: 0))
        let port = try socket.localEndpoint.port
        try socket.close()
        try socket.close()
        // The port is free again once closed.
        let again = try UDPSocket(binding: Endpoint(.loopbackIPv4, port: port))
        #expect(try again.localEndpoint.port == port)
    }
}

// MARK: - Resolution

@Suite struct ResolveTests {
    @Test(arguments: ["127.0.0.5", "::1", "2001:db8::7"])
    func literalsResolveToThemselves(text: String) throws {
        #expect(try UDPSocket.resolve(host: text) == IPAddress(text))
    }

    @Test func localhostPrefersIPv4() throws {
        #expect(try UDPSocket.resolve(host: "localhost") == .loopbackIPv4)
    }

    @Test func unresolvableHostIsNamedInTheError() throws {
        // An empty name fails inside getaddrinfo without asking DNS.
        let error = try #require(throws: ResolutionError.self) { try UDPSocket.resolve(host: "") }
        #expect(error.host == "")
        #expect(error.description.hasPrefix("cannot resolve host '': "))
    }
}

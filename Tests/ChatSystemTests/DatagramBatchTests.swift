import ChatCore
import ChatSystem
import Testing

@Suite struct DatagramBatchTests {
    @Test func receivesManyAndRepliesToEachSource() throws {
        let server = try UDPSocket(binding: Endpoint(.loopbackIPv4, port: 0))
        let serverEndpoint = try server.localEndpoint
        let clients = try (2...6).map { try UDPSocket(binding: Endpoint(.v4(0x7f00_0000 + UInt32($0)), port: 0)) }
        for (index, client) in clients.enumerated() {
            _ = try client.send(Array("request \(index)".utf8), to: serverEndpoint)
        }
        // A datagram longer than the batch's buffers is cut and flagged.
        _ = try clients[0].send([UInt8](repeating: 65, count: 300), to: serverEndpoint)

        let incoming = DatagramBatch(capacity: 8, datagramSize: 256)
        let outgoing = DatagramBatch(capacity: 8, datagramSize: 256)
        #expect(try clients[0].waitReadable(timeoutMilliseconds: 0) == false)
        #expect(try server.waitReadable(timeoutMilliseconds: 2000))
        let count = try server.receive(into: incoming)
        #expect(count == 6)
        for index in 0..<5 {
            #expect(Array(incoming.payload(at: index)) == Array("request \(index)".utf8))
            #expect(incoming.source(at: index) == (try clients[index].localEndpoint))
            #expect(!incoming.isTruncated(at: index))
            let reply = Array("reply \(index)".utf8)
            reply.withUnsafeBytes { #expect(outgoing.append($0, replyingTo: index, of: incoming)) }
        }
        #expect(incoming.isTruncated(at: 5))
        #expect(incoming.payload(at: 5).count == 256)
        let result = server.send(outgoing)
        #expect(result.sent == 5 && result.failed == 0 && result.wouldBlock == 0)
        for (index, client) in clients.enumerated() {
            #expect(try client.waitReadable(timeoutMilliseconds: 2000))
            let received = try #require(try client.receive().value)
            #expect(received.0 == Array("reply \(index)".utf8))
            #expect(received.1 == serverEndpoint)
        }
        // Empty socket: nothing, without blocking; and the batch still works after sending.
        #expect(try server.receive(into: incoming) == 0)
        _ = try clients[1].send(Array("again".utf8), to: serverEndpoint)
        #expect(try server.waitReadable(timeoutMilliseconds: 2000))
        #expect(try server.receive(into: outgoing) == 1)
        #expect(Array(outgoing.payload(at: 0)) == Array("again".utf8))
        #expect(outgoing.source(at: 0) == (try clients[1].localEndpoint))
    }

    @Test func aFullBatchRefusesMore() {
        let source = DatagramBatch(capacity: 1, datagramSize: 16)
        let batch = DatagramBatch(capacity: 2, datagramSize: 16)
        let bytes: [UInt8] = [1, 2, 3]
        bytes.withUnsafeBytes { buffer in
            #expect(batch.append(buffer, replyingTo: 0, of: source))
            #expect(batch.append(buffer, replyingTo: 0, of: source))
            #expect(!batch.append(buffer, replyingTo: 0, of: source))
        }
        #expect(batch.count == 2)
        batch.removeAll()
        #expect(batch.count == 0)
    }

    /// Datagrams that answer no request of the batch (held replies, pushes)
    /// go to any endpoint, IPv4 ones mapped on an IPv6 socket.
    @Test func sendsToAnyEndpointOnBothFamilies() throws {
        let batch = DatagramBatch(capacity: 4, datagramSize: 64)
        for (bind, peer) in [(IPAddress.loopbackIPv4, "127.0.0.71"), (IPAddress.anyIPv6, "127.0.0.72")] {
            let sender = try UDPSocket(binding: Endpoint(bind, port: 0))
            let receivers = try (0..<2).map { _ in try UDPSocket(binding: Endpoint(IPAddress(peer)!, port: 0)) }
            batch.removeAll()
            for (index, receiver) in receivers.enumerated() {
                let bytes = Array("push \(index)".utf8)
                #expect(try bytes.withUnsafeBytes { try batch.append($0, to: try receiver.localEndpoint, on: sender) })
            }
            #expect(sender.send(batch).sent == 2)
            for (index, receiver) in receivers.enumerated() {
                #expect(try receiver.waitReadable(timeoutMilliseconds: 2000))
                #expect(try #require(try receiver.receive().value).0 == Array("push \(index)".utf8))
            }
        }
        let ipv4 = try UDPSocket(binding: Endpoint(.loopbackIPv4, port: 0))
        #expect(throws: SystemError.self) {
            try [UInt8](repeating: 1, count: 3).withUnsafeBytes {
                try batch.append($0, to: Endpoint(.loopbackIPv6, port: 9), on: ipv4)
            }
        }
    }
}

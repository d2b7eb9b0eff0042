// `chatd-bench wait`: send CONNECT every millisecond until the server answers.
//
// chatd binds its socket before it loads its snapshot, and requests that
// arrive meanwhile wait in the socket's buffer, so the first reply comes
// when the server is ready to serve. bench/run.sh uses this both to wait for
// a server it started and to time how long starting took (with a big
// snapshot, minus the same with an empty one). Any CHAT/1 reply counts,
// CLIENT_NOT_FOUND included.

import ArgumentParser
import ChatCore
import ChatSystem

struct WaitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait",
        abstract: "Send CONNECT every --interval-ms until the server answers; print how long it took.",
        discussion: """
            Exit status 0 once any CHAT/1 reply arrives, 1 if none comes within --within-s.

            Example:
              chatd --config test.toml & chatd-bench wait --port 7447 --within-s 30
            """)

    @Option(help: ArgumentHelp("Server IP address (IPv4 or IPv6).", valueName: "addr"))
    var server = "127.0.0.1"

    @Option(help: ArgumentHelp("Server UDP port, 1 to 65535.", valueName: "n"))
    var port = 7447

    @Option(help: ArgumentHelp("Address to send from; the same family as --server.", valueName: "addr"))
    var source = "127.0.0.1"

    @Option(name: .customLong("within-s"), help: ArgumentHelp("Give up after this many seconds, more than 0 and at most 3600.", valueName: "s"))
    var within = 60.0

    @Option(help: ArgumentHelp("Milliseconds between requests, 1 to 1000.", valueName: "ms"))
    var intervalMs = 1

    @Flag(help: "Print one JSON object instead of a sentence.")
    var json = false

    func validate() throws {
        guard IPAddress(server) != nil else { throw ValidationError("--server must be an IP address, got \(server)") }
        guard IPAddress(source) != nil else { throw ValidationError("--source must be an IP address, got \(source)") }
        guard IPAddress(server)!.isIPv4 == IPAddress(source)!.isIPv4 else {
            throw ValidationError("--server and --source must be of the same family")
        }
        guard (1...65535).contains(port) else { throw ValidationError("--port must be 1 to 65535, got \(port)") }
        guard within > 0, within <= 3600 else { throw ValidationError("--within-s must be more than 0 and at most 3600") }
        guard (1...1000).contains(intervalMs) else { throw ValidationError("--interval-ms must be 1 to 1000, got \(intervalMs)") }
    }

    func run() throws {
        let target = Endpoint(IPAddress(server)!, port: UInt16(port))
        let socket: UDPSocket
        do {
            socket = try UDPSocket(binding: Endpoint(IPAddress(source)!, port: 0))
        } catch {
            fail("cannot bind \(source): \(error)")
        }
        let start = SystemClock.monotonicNow()
        let deadline = start + .seconds(within)
        var buffer = [UInt8](repeating: 0, count: 1024)
        var request = [UInt8](repeating: 0, count: 64)
        var id: UInt32 = 0
        while SystemClock.monotonicNow() < deadline {
            id &+= 1
            let length = request.withUnsafeMutableBytes { Wire.writeRequest(id: id, introducing: nil, into: $0) }
            // Refusals (nothing bound yet) and full buffers are expected while the server starts.
            _ = try? request.withUnsafeBytes { try socket.send(UnsafeRawBufferPointer(rebasing: $0[..<length]), to: target) }
            guard (try? socket.waitReadable(timeoutMilliseconds: Int32(intervalMs))) == true else { continue }
            while true {
                guard let received = try? buffer.withUnsafeMutableBytes({ try socket.receive(into: $0) }),
                    case .processed(let (count, from)) = received
                else { break }
                guard from == target, count >= 5, buffer[..<5].elementsEqual("CHAT/".utf8) else { continue }
                let milliseconds = Double((SystemClock.monotonicNow() - start).nanoseconds) / 1e6
                let reply = String(decoding: buffer[..<min(count, 120)], as: UTF8.self)
                if json {
                    print("{\"first_reply_ms\": \(fixed(milliseconds, 1)), \"requests\": \(id), \"reply\": \(jsonString(reply))}")
                } else {
                    print("\(target) answered after \(fixed(milliseconds, 1)) ms (\(id) requests sent): \(reply)")
                }
                return
            }
        }
        fail("no reply from \(target) within \(fixed(within, 1)) s (\(id) requests sent)")
    }
}

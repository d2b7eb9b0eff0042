// chatd's side of the systemd protocols, checked without systemd: a unix
// datagram socket stands in for NOTIFY_SOCKET, and systemd-socket-activate
// (from the systemd package) passes chatd its listening socket. The real
// service manager is exercised by `make system-test`.

import ChatCore
import ChatSystem
import Foundation
import Glibc
import Testing

/// A NOTIFY_SOCKET: collects what chatd sends with sd_notify.
final class NotifySocket {
    let path: String
    let fd: Int32

    init(in folder: URL) throws {
        path = folder.appendingPathComponent("notify.sock").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure(description: "socket(AF_UNIX): errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.prefix(buffer.count - 1).enumerated() { buffer[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else { throw TestFailure(description: "bind(\(path)): errno \(errno)") }
    }

    deinit { Glibc.close(fd) }

    /// The next message, or nil after `timeout`.
    func next(timeout: Duration = .seconds(5)) -> String? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(timeout.components.seconds * 1000)) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        return count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : nil
    }

    /// Messages until one contains `text` (which is returned), or nil after `timeout`.
    func waitFor(_ text: String, timeout: Duration = .seconds(10)) -> String? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let message = next(timeout: .seconds(1)), message.contains(text) { return message }
        }
        return nil
    }
}

@Suite(.serialized, .timeLimit(.minutes(2)))
struct SystemdProtocolTests {
    @Test func notifiesReadyStatusReloadingAndStopping() throws {
        let daemon = try Daemon()
        let notify = try NotifySocket(in: daemon.folder)
        try daemon.start(environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"])

        let ready = try #require(notify.waitFor("READY=1"))
        #expect(ready.contains("STATUS=serving 0 users and 0 room members on 127.0.0.1:\(daemon.port), last snapshot never"))
        // WatchdogSec=0.4s: pings at half that, from the loop.
        #expect(notify.waitFor("WATCHDOG=1") != nil)

        #expect(try daemon.request("CHAT/1 1 INTRODUCE kim", from: "127.0.0.20") == "CHAT/1 1 SUCCESS kim")
        #expect(notify.waitFor("STATUS=serving 1 users") != nil)

        daemon.signal(SIGHUP)
        let reloading = try #require(notify.waitFor("RELOADING=1"))
        let monotonic = reloading.split(separator: "\n").first { $0.hasPrefix("MONOTONIC_USEC=") }
        #expect(monotonic.flatMap { UInt64($0.dropFirst("MONOTONIC_USEC=".count)) } != nil)
        let reloaded = try #require(notify.waitFor("READY=1"))
        #expect(reloaded.contains("config reloaded"))

        try "[server]\nport = \"x\"\n".write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        let refused = try #require(notify.waitFor("READY=1"))
        #expect(refused.contains("reload refused: invalid config"))

        daemon.signal(SIGTERM)
        #expect(notify.waitFor("STOPPING=1") != nil)
        #expect(try daemon.stop() == 0)
    }

    @Test func reloadWaitsForChatdAndReportsTheOutcome() throws {
        let daemon = try Daemon()
        let runtime = daemon.folder.appendingPathComponent("run")
        try FileManager.default.createDirectory(at: runtime, withIntermediateDirectories: true)
        let environment = ["RUNTIME_DIRECTORY": runtime.path]
        try daemon.start(environment: environment)
        let pid = try #require(daemon.process?.pid)

        func reload() throws -> RunningProgram {
            try RunningProgram(Binaries.chatd, ["--reload", "\(pid)"], environment: environment)
        }
        try daemon.writeConfig(logLevel: "debug")
        let applied = try reload().wait(timeout: .seconds(20))
        #expect(applied.status == 0, "\(applied.stderr)")
        #expect(try String(contentsOf: runtime.appendingPathComponent("reload-status"), encoding: .utf8) == "1 applied\n")

        // A stopped chatd cannot have reloaded: --reload must still be waiting.
        kill(pid, SIGSTOP)
        let waiting = try reload()
        Thread.sleep(forTimeInterval: 1.5)
        #expect(waiting.process.isRunning)
        kill(pid, SIGCONT)
        #expect(try waiting.wait(timeout: .seconds(20)).status == 0)

        try "[server]\nport = \"x\"\n".write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        let refused = try reload().wait(timeout: .seconds(20))
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("reload refused: invalid config"))
        #expect(try daemon.request("CHAT/1 1 CONNECT", from: "127.0.0.24") == "CHAT/1 1 ERROR CLIENT_NOT_FOUND")
        #expect(try daemon.stop() == 0)
    }

    @Test func takesItsSocketFromSocketActivation() throws {
        let activate = URL(fileURLWithPath: "/usr/bin/systemd-socket-activate")
        try #require(FileManager.default.isExecutableFile(atPath: activate.path), "needs systemd-socket-activate")
        let daemon = try Daemon(bind: "127.0.0.1")
        // The config names a port nobody listens on: chatd must use the passed socket instead.
        try daemon.writeConfig(port: 1)
        try daemon.start(
            executable: activate,
            arguments: ["--datagram", "--listen=127.0.0.1:\(daemon.port)", "--fdname=chat", Binaries.chatd.path, "--config", daemon.configPath])
        #expect(try daemon.request("CHAT/1 1 INTRODUCE lee", from: "127.0.0.21") == "CHAT/1 1 SUCCESS lee")
        #expect(daemon.log.contains("listening on sockets from systemd"))
        #expect(try daemon.stop() == 0)
    }

    @Test func floodsOfBadDatagramsAreSummarisedNotLoggedOneByOne() throws {
        let daemon = try Daemon()
        try daemon.start()
        let socket = try UDPSocket(binding: Endpoint(IPAddress("127.0.0.22")!, port: 0))
        defer { try? socket.close() }
        for n in 0..<2000 {
            _ = try socket.send(Array("CHAT/1 \(n) BOGUS".utf8), to: Endpoint(.loopbackIPv4, port: daemon.port))
            if n % 200 == 0 { _ = try? socket.receive() }  // keep the socket's buffer from filling up
        }
        // The flood may have filled the socket's buffer, so a client retries, as chat does.
        let answered = try chat(["connect", "--bind", "127.0.0.23"], port: daemon.port)
        #expect(answered.status == 3, "\(answered.stderr)")
        let lines = daemon.log.split(separator: "\n").filter { $0.contains("malformed datagrams received") }
        #expect(lines.count >= 1 && lines.count <= 2, "\(lines)")
        #expect(lines.first?.contains("count=1") == true)
    }
}

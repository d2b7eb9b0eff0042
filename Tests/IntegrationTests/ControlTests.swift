// chatctl against the built chatd over its control socket: every command,
// the exit statuses scripts rely on, durability of a removal across kill -9,
// a large listing that must not stall serving, and clients that misbehave.

import ChatCore
import ChatSystem
import Foundation
import Glibc
import Testing

extension Daemon {
    /// Runs chatctl against this daemon's control socket.
    func chatctl(_ arguments: [String], timeout: Duration = .seconds(30)) throws -> ProcessResult {
        try runProgram(Binaries.chatctl, arguments + ["--socket", controlPath], timeout: timeout)
    }

    /// Registers `name` from `address` with the chat client.
    func join(_ name: String, from address: String) throws {
        let result = try chat(["join", name, "--bind", address], port: port)
        guard result.status == 0 else { throw TestFailure(description: "chat join \(name): \(result.stderr)") }
    }

    /// A snapshot file of `count` users at 10.x.y.z named u<n>, for chatd to load.
    func writeSnapshot(users count: Int) throws {
        var registry = Registry(maxUsers: count)
        registry.reserveCapacity(count)
        for n in 0..<count {
            let address = IPAddress.v4(UInt32(0x0A00_0000 + n))
            _ = registry.introduce(Username("u\(n)")!, from: address)
        }
        let folder = (snapshotPath as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Data(Snapshot.encode(registry, savedAt: 0)).write(to: URL(fileURLWithPath: snapshotPath))
    }
}

/// A control client speaking the protocol by hand.
final class RawControlClient {
    let stream: UnixStream
    private var buffer: [UInt8] = []

    init(_ path: String, timeout: Duration = .seconds(5)) throws {
        stream = try UnixStream(connectingTo: path)
        try stream.setReceiveTimeout(timeout)
    }

    deinit { stream.close() }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            guard case .processed(let count) = try bytes[offset...].withUnsafeBytes({ try stream.write($0) }) else { break }
            offset += count
        }
    }

    /// The next line, or nil at the end of the stream (or a timeout).
    func line() throws -> String? {
        while true {
            if let newline = buffer.firstIndex(of: 0x0a) {
                defer { buffer.removeSubrange(...newline) }
                return String(decoding: buffer[..<newline], as: UTF8.self)
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let result: IOResult<Int>
            do {
                result = try chunk.withUnsafeMutableBytes { try stream.read(into: $0) }
            } catch let error as SystemError where error.errno == ECONNRESET {
                // chatd closed with our bytes unread (after line_too_long, say).
                return nil
            }
            guard case .processed(let count) = result, count > 0 else { return nil }
            buffer += chunk[..<count]
        }
    }

    func object() throws -> ControlObject? {
        try line().flatMap { ControlObject(parsing: Array($0.utf8)) }
    }
}

/// The resident set of process `pid`, in KiB.
func residentKiB(_ pid: Int32) -> Int {
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
}

@Suite(.timeLimit(.minutes(3)))
struct ControlTests {
    @Test func statusUsersLookupAndMetricsDescribeTheRunningServer() throws {
        let daemon = try Daemon()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        try daemon.join("alice", from: "127.0.0.2")
        try daemon.join("Bob", from: "127.0.0.3")
        try daemon.join("carol", from: "127.0.0.4")

        let status = try daemon.chatctl(["status", "--json"])
        #expect(status.status == 0, "\(status.stderr)")
        let object = try #require(ControlObject(parsing: Array(status.stdout.dropLast().utf8)))
        #expect(object["version"] == .string(ChatdVersion.string))
        #expect(object["users"] == .integer(3))
        #expect(object["durability"] == .string("sync"))
        #expect((object["journal_bytes"]?.integer ?? 0) > 0)
        let text = try daemon.chatctl(["status"])
        #expect(text.stdout.contains("users:         3 of at most"))

        let users = try daemon.chatctl(["users"])
        #expect(users.status == 0)
        #expect(Set(users.stdout.split(separator: "\n")) == ["127.0.0.2 alice", "127.0.0.3 Bob", "127.0.0.4 carol"])
        let matching = try daemon.chatctl(["users", "--match", "b*", "--json"])
        #expect(matching.stdout == #"{"address": "127.0.0.3", "username": "Bob"}"# + "\n")

        #expect(try daemon.chatctl(["lookup", "ALICE"]).stdout == "127.0.0.2\n")
        #expect(try daemon.chatctl(["lookup", "127.0.0.3"]).stdout == "Bob\n")
        let missing = try daemon.chatctl(["lookup", "dave"])
        #expect(missing.status == 65)
        #expect(missing.stderr.contains("no address holds the username dave"))
        // 127.0.0.4 is a valid username too: --name says which is meant.
        #expect(try daemon.chatctl(["lookup", "127.0.0.4", "--name"]).status == 65)
        #expect(try daemon.chatctl(["lookup", "bad name"]).status == 64)

        let metrics = try daemon.chatctl(["metrics"])
        #expect(metrics.status == 0)
        #expect(metrics.stdout.contains("# TYPE chatd_users gauge\nchatd_users 3\n"))
        // Every sample follows the HELP and TYPE of its family.
        var typed: Set<String> = []
        for line in metrics.stdout.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") { typed.insert(String(line.split(separator: " ")[2])) }
            if line.hasPrefix("#") { continue }
            let name = String(line.prefix { $0 != "{" && $0 != " " })
            #expect(name.hasPrefix("chatd_") && typed.contains(name), "\(line)")
        }
    }

    @Test func aRemovalIsDurableAcrossKill9AndFreesTheName() throws {
        let daemon = try Daemon()
        try daemon.start()
        try daemon.join("alice", from: "127.0.0.5")
        let removed = try daemon.chatctl(["remove", "alice"])
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(removed.stdout == "removed alice (127.0.0.5)\n")
        #expect(daemon.waitForLog("registration removed by an administrator"))
        #expect(daemon.log.contains("admin.uid=\(getuid())"))
        // OK was said after the sync: the removal survives kill -9.
        try daemon.stop(signal: SIGKILL)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        #expect(try daemon.chatctl(["lookup", "alice"]).status == 65)
        #expect(try daemon.chatctl(["remove", "127.0.0.5"]).status == 65)
        #expect(try daemon.request("CHAT/1 7 CONNECT", from: "127.0.0.5") == "CHAT/1 7 ERROR CLIENT_NOT_FOUND")
        try daemon.join("alice", from: "127.0.0.6")
    }

    @Test func aRemovedMemberLeavesTheRoom() throws {
        let daemon = try Daemon(extraConfig: "durability = \"periodic\"")
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let carol = try RawChatClient(source: "127.0.0.7", port: daemon.port)
        try carol.introduce("carol")
        let joined = try carol.ask(.join(id: 0, cookie: 0))
        guard case .success? = joined else { throw TestFailure(description: "JOIN was answered \(String(describing: joined))") }
        #expect(try daemon.chatctl(["status", "--json"]).stdout.contains(#""members": 1"#))
        #expect(try daemon.chatctl(["remove", "carol"]).status == 0)
        #expect(daemon.waitForLog("reason=removed"))
        #expect(try daemon.chatctl(["status", "--json"]).stdout.contains(#""members": 0"#))
    }

    @Test func snapshotWritesNowAndReloadReportsItsOutcome() throws {
        let daemon = try Daemon(extraConfig: "snapshot_interval_s = 3600")
        try daemon.start()
        defer { _ = try? daemon.stop() }
        try daemon.join("alice", from: "127.0.0.8")
        let snapshot = try daemon.chatctl(["snapshot", "--json"])
        #expect(snapshot.status == 0, "\(snapshot.stderr)")
        #expect(snapshot.stdout.contains(#""users": 1"#))
        let file = try String(contentsOfFile: daemon.snapshotPath, encoding: .utf8)
        #expect(file.contains(#""username": "alice""#))

        let reloaded = try daemon.chatctl(["reload"])
        #expect(reloaded.status == 0)
        #expect(reloaded.stdout == "config reloaded\n")
        #expect(daemon.waitForLog("config reloaded"))
        try daemon.writeConfig(extra: "max_users = 0")
        let refused = try daemon.chatctl(["reload"])
        #expect(refused.status == 78)
        #expect(refused.stderr.contains("registry.max_users"))
    }

    @Test func chatctlSaysWhenChatdIsNotRunning() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("control").path
        let absent = try runProgram(Binaries.chatctl, ["status", "--socket", path])
        #expect(absent.status == 69)
        #expect(absent.stderr.contains("chatd is not running: no control socket at \(path)"))
        // A socket file nobody accepts on, as a killed chatd leaves.
        let stale = try UnixListener(binding: path, mode: 0o600)
        Glibc.close(stale.fd)
        let refused = try runProgram(Binaries.chatctl, ["status", "--socket", path])
        #expect(refused.status == 69)
        #expect(refused.stderr.contains("nothing accepts on \(path)"))

        // chatd replaces such a file, and a second chatd does not steal a live one.
        let daemon = try Daemon()
        try? FileManager.default.moveItem(atPath: path, toPath: daemon.controlPath)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        #expect(try daemon.chatctl(["status"]).status == 0)
        let second = try Daemon()
        try second.writeConfig(extra: "", logLevel: "info")
        let config = try String(contentsOfFile: second.configPath, encoding: .utf8)
            .replacingOccurrences(of: second.controlPath, with: daemon.controlPath)
        try config.write(toFile: second.configPath, atomically: true, encoding: .utf8)
        let clash = try runProgram(Binaries.chatd, ["--config", second.configPath], timeout: .seconds(10))
        #expect(clash.status != 0)
        #expect(clash.stderr.contains("cannot create the control socket \(daemon.controlPath)"))
        #expect(try daemon.chatctl(["status"]).status == 0)
    }

    @Test(.enabled(if: getuid() == 0, "needs root to run chatctl as another user"))
    func onlyRootAndChatdsOwnUserAreAnswered() throws {
        let daemon = try Daemon()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let attributes = try FileManager.default.attributesOfItem(atPath: daemon.controlPath)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        // The folder must let nobody reach the socket for the second gate to be seen.
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: daemon.folder.path)
        func asNobody() throws -> ProcessResult {
            try runProgram(
                URL(fileURLWithPath: "/usr/bin/setpriv"),
                ["--reuid=65534", "--regid=65534", "--clear-groups", Binaries.chatctl.path, "status", "--socket", daemon.controlPath])
        }
        let byMode = try asNobody()
        #expect(byMode.status == 77)
        #expect(byMode.stderr.contains("permission denied: \(daemon.controlPath)"))
        try FileManager.default.setAttributes([.posixPermissions: 0o666], ofItemAtPath: daemon.controlPath)
        let byCredentials = try asNobody()
        #expect(byCredentials.status == 77)
        #expect(byCredentials.stderr.contains("chatd answers only root and its own user"))
    }

    @Test func badControlClientsAreAnsweredAndNeverAffectServing() throws {
        let users = underSanitizer ? 5_000 : 50_000
        let daemon = try Daemon()
        try daemon.writeSnapshot(users: users)
        try daemon.start(timeout: .seconds(60))
        defer { _ = try? daemon.stop() }

        let client = try RawControlClient(daemon.controlPath)
        try client.send("not json\n{\"command\": \"launch\"}\n\n{\"command\": \"lookup\", \"username\": \"u7\"}\n")
        #expect(try client.object()?["error"] == .string("bad_request"))
        #expect(try client.object()?["error"] == .string("unknown_command"))
        #expect(try client.line() == #"{"ok": true, "address": "10.0.0.7", "username": "u7"}"#)
        // chatd answers after 4096 bytes and closes: the rest may meet EPIPE.
        try? client.send(String(repeating: "x", count: 5000))
        #expect(try client.object()?["error"] == .string("line_too_long"))
        #expect(try client.line() == nil)  // closed

        // Sixteen at once are served; the seventeenth is told and closed.
        do {
            let crowd = try (0..<16).map { _ in try RawControlClient(daemon.controlPath) }
            try crowd[15].send("{\"command\": \"status\"}\n")
            #expect(try crowd[15].object()?["ok"] == .bool(true))
            let extra = try RawControlClient(daemon.controlPath)
            #expect(try extra.object()?["error"] == .string("busy"))
        }
        Thread.sleep(forTimeInterval: 0.2)  // chatd sees the crowd leave

        // Clients that vanish in the middle of a listing.
        for _ in 0..<5 {
            let leaver = try RawControlClient(daemon.controlPath)
            try leaver.send("{\"command\": \"users\"}\n")
            #expect(try leaver.line()?.hasPrefix(#"{"address": "#) == true)
        }
        #expect(try daemon.request("CHAT/1 1 CONNECT", from: "127.0.0.9") == "CHAT/1 1 ERROR CLIENT_NOT_FOUND")
        let status = try daemon.chatctl(["status", "--json"])
        #expect(status.status == 0)
        #expect(status.stdout.contains(#""users": \#(users)"#))
    }

    /// A snapshot or removal in flight when chatd stops still gets its
    /// answer (the outcome, or "stopping"), never a silent close.
    @Test func requestsInFlightAtStopAreAnswered() throws {
        let daemon = try Daemon(extraConfig: "snapshot_interval_s = 3600")
        try daemon.writeSnapshot(users: underSanitizer ? 20_000 : 200_000)
        try daemon.start(timeout: .seconds(60))
        let snapshot = try RawControlClient(daemon.controlPath, timeout: .seconds(20))
        let removal = try RawControlClient(daemon.controlPath, timeout: .seconds(20))
        try snapshot.send("{\"command\": \"snapshot\"}\n")
        try removal.send("{\"command\": \"remove\", \"username\": \"u5\"}\n")
        daemon.signal(SIGTERM)
        for (client, ok) in [(snapshot, #"{"ok": true, "saved_at""#), (removal, #"{"ok": true, "address": "10.0.0.5""#)] {
            let answer = try #require(try client.line(), "no answer before the close")
            #expect(answer.hasPrefix(ok) || answer.contains(#""error": "stopping""#), "\(answer)")
        }
        #expect(try daemon.stop() == 0)
    }

    /// Requests sent together on one connection are answered in order, a
    /// listing's end included.
    @Test func pipelinedRequestsAreAnsweredInOrder() throws {
        let daemon = try Daemon()
        try daemon.writeSnapshot(users: 3_000)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let client = try RawControlClient(daemon.controlPath)
        try client.send(
            "{\"command\": \"users\", \"match\": \"u7\"}\n{\"command\": \"remove\", \"username\": \"u7\"}\n"
                + "{\"command\": \"snapshot\"}\n{\"command\": \"lookup\", \"username\": \"u7\"}\n")
        #expect(try client.line() == #"{"address": "10.0.0.7", "username": "u7"}"#)
        #expect(try client.line() == #"{"ok": true, "count": 1}"#)
        #expect(try client.line() == #"{"ok": true, "address": "10.0.0.7", "username": "u7"}"#)
        #expect(try client.object()?["users"] == .integer(2_999))
        #expect(try client.object()?["error"] == .string("not_registered"))
    }

    @Test func aClientThatSaysNothingIsTimedOut() throws {
        let daemon = try Daemon()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let silent = try RawControlClient(daemon.controlPath, timeout: .seconds(15))
        let start = ContinuousClock.now
        #expect(try silent.object()?["error"] == .string("timeout"))
        #expect(try silent.line() == nil)
        #expect(ContinuousClock.now - start >= .seconds(9))
    }

    /// A large listing goes out in slices between datagram batches: chatd
    /// answers datagrams while it lasts, and holds one slice, not the list.
    @Test func aLargeListingNeitherStallsServingNorCopiesTheRegistry() throws {
        let users = heavyFaultTests ? 1_000_000 : underSanitizer ? 40_000 : 300_000
        let daemon = try Daemon()
        try daemon.writeSnapshot(users: users)
        try daemon.start(timeout: .seconds(60))
        defer { _ = try? daemon.stop() }
        let pid = try #require(daemon.process?.pid)
        let before = residentKiB(pid)

        let lister = try RawControlClient(daemon.controlPath)
        try lister.send("{\"command\": \"users\"}\n")
        var listed = 0
        var answeredDuringListing = 0
        var peak = before
        var index = 0
        while let line = try lister.line() {
            if line.hasPrefix("{\"ok\"") {
                #expect(line == "{\"ok\": true, \"count\": \(users)}")
                break
            }
            listed += 1
            // A slow reader: chatd must wait for it, not buffer the rest.
            if listed % (users / 15) == 0 {
                index += 1
                if try daemon.request("CHAT/1 \(index) CONNECT", from: "127.0.0.10") != nil { answeredDuringListing += 1 }
                peak = max(peak, residentKiB(pid))
                Thread.sleep(forTimeInterval: 0.01)
            }
        }
        #expect(listed == users)
        #expect(answeredDuringListing == 15)
        // The list as text is about 30 bytes a user; one copy of it would
        // show (not under ASan, whose quarantine keeps what was freed).
        if !underSanitizer {
            #expect(peak - before < users * 30 / 1024 / 4, "resident set grew from \(before) to \(peak) KiB")
        }
    }
}

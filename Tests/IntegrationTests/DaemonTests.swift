// chatd and chat, as built, over loopback.

import ChatCore
import ChatSystem
import Foundation
import Testing

@Suite(.serialized, .timeLimit(.minutes(2)))
struct DaemonTests {
    @Test func fullJoinFlowWithTheChatTool() throws {
        let daemon = try Daemon()
        try daemon.start()

        let joined = try chat(["join", "alice", "--bind", "127.0.0.2"], port: daemon.port)
        #expect(joined.status == 0, "\(joined.stderr)")
        #expect(joined.lastLine == "alice")

        let connected = try chat(["connect", "--bind", "127.0.0.2"], port: daemon.port)
        #expect(connected.status == 0)
        #expect(connected.lastLine == "alice")

        let unknown = try chat(["connect", "--bind", "127.0.0.3"], port: daemon.port)
        #expect(unknown.status == 3)
        #expect(unknown.stderr.contains("no username"))

        let taken = try chat(["join", "ALICE", "--bind", "127.0.0.3"], port: daemon.port)
        #expect(taken.status == 65)
        #expect(taken.stderr.contains("taken"))

        let invalid = try chat(["join", "al!ce", "--bind", "127.0.0.3"], port: daemon.port)
        #expect(invalid.status == 65)
        #expect(invalid.stderr.contains("letter or digit"))

        let bob = try chat(["join", "bob", "--bind", "127.0.0.3"], port: daemon.port)
        #expect(bob.status == 0)
        #expect(bob.lastLine == "bob")

        let renamed = try chat(["introduce", "bobby", "--bind", "127.0.0.3"], port: daemon.port)
        #expect(renamed.status == 0)
        #expect(renamed.lastLine == "bobby")
        #expect(daemon.log.contains("user registered"))
        #expect(daemon.log.contains("user renamed"))
    }

    @Test func registrationIsKeyedByAddressNotPort() throws {
        let daemon = try Daemon()
        try daemon.start()
        let port1 = try freePort()
        var port2 = try freePort()
        while port2 == port1 { port2 = try freePort() }
        #expect(try daemon.request("CHAT/1 1 INTRODUCE carol", from: "127.0.0.4", sourcePort: port1) == "CHAT/1 1 SUCCESS carol")
        #expect(try daemon.request("CHAT/1 2 CONNECT", from: "127.0.0.4", sourcePort: port2) == "CHAT/1 2 SUCCESS carol")
        #expect(try daemon.request("CHAT/1 3 CONNECT", from: "127.0.0.5", sourcePort: port1) == "CHAT/1 3 ERROR CLIENT_NOT_FOUND")
    }

    @Test func malformedAndRandomDatagramsAreAnsweredOrDroppedAndChangeNothing() throws {
        let daemon = try Daemon()
        try daemon.start()
        #expect(try daemon.request("CHAT/1 1 INTRODUCE dave", from: "127.0.0.6") == "CHAT/1 1 SUCCESS dave")

        let cases: [(String, String?)] = [
            ("CHAT/1 5 HELLO", "CHAT/1 5 ERROR MALFORMED"),
            ("CHAT/1 x CONNECT", "CHAT/1 0 ERROR MALFORMED"),
            ("CHAT/1 6 INTRODUCE  dave", "CHAT/1 6 ERROR MALFORMED"),
            ("CHAT/1 7 INTRODUCE d@ve", "CHAT/1 7 ERROR INVALID_USERNAME SYNTAX"),
            ("CHAT/2 8 CONNECT", "CHAT/1 8 ERROR UNSUPPORTED_VERSION"),
            ("CHAT/1 9 INTRODUCE " + String(repeating: "a", count: 600), "CHAT/1 9 ERROR MALFORMED"),
            ("GET / HTTP/1.0", nil),
            ("", nil),
        ]
        for (request, expected) in cases {
            let timeout: Duration = expected == nil ? .milliseconds(300) : .seconds(2)
            #expect(try daemon.request(request, from: "127.0.0.7", timeout: timeout) == expected, "\(request)")
        }

        // Random bytes, half of them behind a CHAT/1 prefix so they reach the parser's depths.
        let socket = try UDPSocket(binding: Endpoint(IPAddress("127.0.0.8")!, port: 0))
        defer { try? socket.close() }
        var generator = SystemRandomNumberGenerator()
        for round in 0..<2000 {
            var bytes = (0..<Int.random(in: 0...700, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if round % 2 == 0 { bytes = Array("CHAT/1 ".utf8) + bytes }
            _ = try socket.send(bytes, to: Endpoint(.loopbackIPv4, port: daemon.port))
        }
        #expect(try daemon.request("CHAT/1 2 CONNECT", from: "127.0.0.6") == "CHAT/1 2 SUCCESS dave")
        // 127.0.0.8 has spent its rate-limit tokens: a retrying client still gets through.
        let flooder = try chat(["connect", "--bind", "127.0.0.8"], port: daemon.port)
        #expect(flooder.status == 3, "\(flooder.stderr)")
        #expect(try daemon.request("CHAT/1 4 CONNECT", from: "127.0.0.7") == "CHAT/1 4 ERROR CLIENT_NOT_FOUND")
    }

    @Test func sigtermSavesTheRegistryAndARestartKeepsIt() throws {
        let daemon = try Daemon()
        try daemon.start()
        #expect(try daemon.request("CHAT/1 1 INTRODUCE erin", from: "127.0.0.10") == "CHAT/1 1 SUCCESS erin")
        #expect(try daemon.request("CHAT/1 2 INTRODUCE Frank", from: "127.0.0.11") == "CHAT/1 2 SUCCESS Frank")
        #expect(try daemon.stop(signal: SIGTERM) == 0)

        let saved = try String(contentsOfFile: daemon.snapshotPath, encoding: .utf8)
        #expect(saved.contains(#"{"ip": "127.0.0.10", "username": "erin"}"#))
        #expect(saved.hasPrefix(#"{"version": 1, "saved_at": ""#))

        try daemon.start()
        #expect(try daemon.request("CHAT/1 3 CONNECT", from: "127.0.0.10") == "CHAT/1 3 SUCCESS erin")
        #expect(try daemon.request("CHAT/1 4 INTRODUCE frank", from: "127.0.0.12") == "CHAT/1 4 ERROR INVALID_USERNAME TAKEN")
        #expect(try daemon.stop(signal: SIGINT) == 0)
    }

    @Test func periodicSnapshotsAreWrittenWhileServing() throws {
        let daemon = try Daemon(extraConfig: "snapshot_interval_s = 1")
        try daemon.start()
        #expect(try daemon.request("CHAT/1 1 INTRODUCE gina", from: "127.0.0.13") == "CHAT/1 1 SUCCESS gina")
        let deadline = ContinuousClock.now + .seconds(10)
        var saved = ""
        while ContinuousClock.now < deadline && !saved.contains("gina") {
            Thread.sleep(forTimeInterval: 0.1)
            saved = (try? String(contentsOfFile: daemon.snapshotPath, encoding: .utf8)) ?? ""
        }
        #expect(saved.contains(#""username": "gina""#))
    }

    @Test func aFailedSnapshotWriteKeepsServingAndRetries() throws {
        let daemon = try Daemon(extraConfig: "snapshot_interval_s = 1")
        try daemon.start()
        let state = daemon.folder.appendingPathComponent("state")
        let moved = daemon.folder.appendingPathComponent("state-away")
        // Put a plain file where the state folder was: every write must fail.
        try FileManager.default.moveItem(at: state, to: moved)
        _ = FileManager.default.createFile(atPath: state.path, contents: Data("not a folder".utf8))
        #expect(try daemon.request("CHAT/1 1 INTRODUCE hank", from: "127.0.0.14") == "CHAT/1 1 SUCCESS hank")
        #expect(daemon.waitForLog("snapshot failed"))
        #expect(try daemon.request("CHAT/1 2 CONNECT", from: "127.0.0.14") == "CHAT/1 2 SUCCESS hank")
        // Space is back: the next interval writes the registry.
        try FileManager.default.removeItem(at: state)
        try FileManager.default.moveItem(at: moved, to: state)
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline,
            !((try? String(contentsOfFile: daemon.snapshotPath, encoding: .utf8)) ?? "").contains("hank")
        {
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(try String(contentsOfFile: daemon.snapshotPath, encoding: .utf8).contains("hank"))
    }

    @Test(arguments: [
        ("{\"version\": 1, \"users\": [", "not valid JSON"),
        ("{\"version\": 9, \"users\": []}", "version 9"),
        ("{\"version\": 1, \"users\": [{\"ip\": \"1.2.3.4\", \"username\": \"a\"}, {\"ip\": \"1.2.3.4\", \"username\": \"b\"}]}", "appears twice"),
    ])
    func aCorruptSnapshotIsRefusedAndLeftUntouched(content: String, fragment: String) throws {
        let daemon = try Daemon()
        try FileManager.default.createDirectory(atPath: (daemon.snapshotPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try content.write(toFile: daemon.snapshotPath, atomically: false, encoding: .utf8)
        let result = try runProgram(Binaries.chatd, ["--config", daemon.configPath], timeout: .seconds(10))
        #expect(result.status == 1)
        #expect(result.stderr.contains(daemon.snapshotPath))
        #expect(result.stderr.contains(fragment))
        #expect(result.stderr.split(separator: "\n").count == 1)
        #expect(try String(contentsOfFile: daemon.snapshotPath, encoding: .utf8) == content)
    }

    @Test func dualStackServesIPv6AndIPv4ClientsAlike() throws {
        let daemon = try Daemon(bind: "::")
        try daemon.start()
        let v6 = try chat(["join", "ivan", "--bind", "::1"], port: daemon.port, server: "::1")
        #expect(v6.status == 0, "\(v6.stderr)")
        #expect(v6.lastLine == "ivan")
        let v4 = try chat(["join", "judy", "--bind", "127.0.0.15"], port: daemon.port)
        #expect(v4.status == 0, "\(v4.stderr)")
        #expect(try daemon.stop() == 0)
        // The IPv4 client is stored as IPv4, not as ::ffff:127.0.0.15.
        let saved = try String(contentsOfFile: daemon.snapshotPath, encoding: .utf8)
        #expect(saved.contains(#"{"ip": "127.0.0.15", "username": "judy"}"#))
        #expect(saved.contains(#"{"ip": "::1", "username": "ivan"}"#))
    }

    @Test func sighupAppliesTheNewConfigOrRefusesIt() throws {
        let daemon = try Daemon()
        try daemon.start()
        #expect(try daemon.request("CHAT/1 1 CONNECT", from: "127.0.0.16") == "CHAT/1 1 ERROR CLIENT_NOT_FOUND")
        #expect(!daemon.log.contains("request answered"))

        // [chat] and [delivery] are reloadable: changing them with the level is no reason to refuse.
        try daemon.writeConfig(extra: "\n[chat]\nhistory = 10\n\n[delivery]\nwindow = 2", logLevel: "debug")
        daemon.signal(SIGHUP)
        #expect(daemon.waitForLog("config reloaded"))
        #expect(try daemon.request("CHAT/1 2 CONNECT", from: "127.0.0.16") == "CHAT/1 2 ERROR CLIENT_NOT_FOUND")
        #expect(daemon.waitForLog("request answered"))

        try "[server]\nport = \"x\"\n".write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        #expect(daemon.waitForLog("reason=\"invalid config:"))
        #expect(try daemon.request("CHAT/1 3 CONNECT", from: "127.0.0.16") == "CHAT/1 3 ERROR CLIENT_NOT_FOUND")

        try daemon.writeConfig(port: daemon.port &+ 1, logLevel: "debug")
        daemon.signal(SIGHUP)
        #expect(daemon.waitForLog("needs a restart"))
        #expect(try daemon.request("CHAT/1 4 CONNECT", from: "127.0.0.16") == "CHAT/1 4 ERROR CLIENT_NOT_FOUND")
        #expect(try daemon.stop() == 0)
    }

    @Test func checkConfigValidatesAndPrintsTheEffectiveSettings() throws {
        let daemon = try Daemon()
        let valid = try runProgram(Binaries.chatd, ["--check-config", "--config", daemon.configPath])
        #expect(valid.status == 0)
        #expect(valid.stdout.contains("port = \(daemon.port)"))
        #expect(valid.stdout.contains("max_users = 1000000"))
        #expect(valid.stdout.contains("keepalive_s = 25\n"))
        #expect(valid.stdout.contains("[chat]\nhistory = 2048\npresence_ttl_s = 120\nmessages_per_s = 5.0\nmessages_burst = 20\n"))
        #expect(valid.stdout.contains("[delivery]\ntimeout_ms = 1000\nbackoff = 2.0\nmax_attempts = 5\nwindow = 32\n"))

        try "[registry]\nmax_users = 0\n".write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        let invalid = try runProgram(Binaries.chatd, ["--check-config", "--config", daemon.configPath])
        #expect(invalid.status == 1)
        #expect(invalid.stderr.contains(daemon.configPath))
        #expect(invalid.stderr.contains("registry.max_users"))
        #expect(invalid.stderr.split(separator: "\n").count == 1)

        let missing = try runProgram(Binaries.chatd, ["--check-config", "--config", daemon.folder.appendingPathComponent("nope.toml").path])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("nope.toml"))
    }

    @Test func eachAddressIsRateLimitedOnItsOwn() throws {
        let daemon = try Daemon(extraConfig: "[limits]\nrate_per_ip = 5\nburst_per_ip = 10")
        try daemon.start()
        let socket = try UDPSocket(binding: Endpoint(IPAddress("127.0.0.50")!, port: 0))
        defer { try? socket.close() }
        for i in 0..<60 {
            _ = try socket.send(Array("CHAT/1 \(i + 10) CONNECT".utf8), to: Endpoint(.loopbackIPv4, port: daemon.port))
        }
        var answered = 0
        while try socket.waitReadable(timeoutMilliseconds: 500), case .processed = try socket.receive() { answered += 1 }
        #expect(answered >= 10 && answered <= 14, "answered \(answered) of 60")
        // Another address is not affected; the limited one is logged in a summary.
        #expect(try daemon.request("CHAT/1 1 CONNECT", from: "127.0.0.51") == "CHAT/1 1 ERROR CLIENT_NOT_FOUND")
        #expect(daemon.waitForLog("over the per-address rate limit"))
    }

    @Test func noReplyIsMoreThanThreeTimesItsRequest() throws {
        let daemon = try Daemon()
        try daemon.start()
        let long = String(repeating: "w", count: 32)
        #expect(try daemon.request("CHAT/1 1234 INTRODUCE \(long)", from: "127.0.0.52") == "CHAT/1 1234 SUCCESS \(long)")
        // 16 bytes asking for a 49-byte answer: dropped. With a 2-digit id it is 50 for 17.
        #expect(try daemon.request("CHAT/1 7 CONNECT", from: "127.0.0.52", timeout: .milliseconds(300)) == nil)
        #expect(try daemon.request("CHAT/1 77 CONNECT", from: "127.0.0.52") == "CHAT/1 77 SUCCESS \(long)")
        // The 5-byte "CHAT/" would earn a 34-byte UNSUPPORTED_VERSION.
        #expect(try daemon.request("CHAT/", from: "127.0.0.53", timeout: .milliseconds(300)) == nil)
        #expect(try daemon.request("CHAT/2 5 CONNECT", from: "127.0.0.53") == "CHAT/1 5 ERROR UNSUPPORTED_VERSION")
        // chat's ids always have 10 digits, so its answers always come.
        let joined = try chat(["connect", "--bind", "127.0.0.52"], port: daemon.port)
        #expect(joined.lastLine == long)
    }

    @Test func aPortInUseIsAClearError() throws {
        let daemon = try Daemon()
        try daemon.start()
        let second = try runProgram(Binaries.chatd, ["--config", daemon.configPath], timeout: .seconds(10))
        #expect(second.status == 1)
        #expect(second.stderr.contains("cannot listen on 127.0.0.1:\(daemon.port)"))
    }
}

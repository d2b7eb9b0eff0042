// The promise of durability "sync": a registration that got SUCCESS is never
// lost, whatever happens to chatd afterwards, and a registration that cannot
// be stored is refused with UNAVAILABLE and changes nothing.

import ChatCore
import ChatSystem
import Foundation
import Glibc
import Testing

@Suite(.serialized, .timeLimit(.minutes(5)))
struct DurabilityTests {
    var journalPath: (Daemon) -> String = { $0.folder.appendingPathComponent("state/registry.journal").path }

    @Test func aConfirmedRegistrationSurvivesKill9WithoutASnapshot() throws {
        let daemon = try Daemon(extraConfig: "snapshot_interval_s = 3600")
        try daemon.start()
        #expect(try daemon.request("CHAT/1 1 INTRODUCE nora", from: "127.0.0.30") == "CHAT/1 1 SUCCESS nora")
        #expect(try daemon.request("CHAT/1 2 INTRODUCE nora2", from: "127.0.0.30") == "CHAT/1 2 SUCCESS nora2")
        let journal = try String(contentsOfFile: journalPath(daemon), encoding: .utf8)
        #expect(journal.split(separator: "\n").count == 3)  // the header and two records
        #expect(journal.hasPrefix(String(decoding: Journal.header, as: UTF8.self)))
        #expect(journal.contains(#""username": "nora2""#))
        try daemon.stop(signal: SIGKILL)
        #expect(!FileManager.default.fileExists(atPath: daemon.snapshotPath))

        try daemon.start()
        #expect(try daemon.request("CHAT/1 3 CONNECT", from: "127.0.0.30") == "CHAT/1 3 SUCCESS nora2")
        #expect(try daemon.request("CHAT/1 4 INTRODUCE nora", from: "127.0.0.31") == "CHAT/1 4 SUCCESS nora")
        #expect(daemon.log.contains("journal.replayed=2"))
        // A clean stop writes the snapshot and drops the records it covers.
        #expect(try daemon.stop() == 0)
        #expect(try FileSystem.readFile(atPath: journalPath(daemon)) == Journal.header)
        #expect(try String(contentsOfFile: daemon.snapshotPath, encoding: .utf8).contains(#""username": "nora""#))
    }

    @Test func aTornLastLineIsDroppedAndTheRestLoads() throws {
        let daemon = try Daemon()
        try FileManager.default.createDirectory(atPath: daemon.folder.appendingPathComponent("state").path, withIntermediateDirectories: true)
        let good = Journal.header + Journal.line(.registration(IPAddress("127.0.0.32")!, Username("olga")!))
        let torn = Array(Journal.line(.registration(IPAddress("127.0.0.33")!, Username("pete")!)).prefix(20))
        _ = FileManager.default.createFile(atPath: journalPath(daemon), contents: Data(good + torn))
        try daemon.start()
        #expect(try daemon.request("CHAT/1 1 CONNECT", from: "127.0.0.32") == "CHAT/1 1 SUCCESS olga")
        #expect(try daemon.request("CHAT/1 2 CONNECT", from: "127.0.0.33") == "CHAT/1 2 ERROR CLIENT_NOT_FOUND")
        #expect(daemon.log.contains("journal ended in a torn line"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: journalPath(daemon))) == Data(good))
    }

    @Test func aDamagedJournalIsRefusedAndLeftUntouched() throws {
        let daemon = try Daemon()
        try FileManager.default.createDirectory(atPath: daemon.folder.appendingPathComponent("state").path, withIntermediateDirectories: true)
        var middle = Journal.line(.registration(IPAddress("127.0.0.34")!, Username("quinn")!))
        middle[12] ^= 0x02
        let content =
            Journal.header + Journal.line(.registration(.v4(1), Username("a")!)) + middle
            + Journal.line(.registration(.v4(2), Username("b")!))
        _ = FileManager.default.createFile(atPath: journalPath(daemon), contents: Data(content))
        let result = try runProgram(Binaries.chatd, ["--config", daemon.configPath], timeout: .seconds(10))
        #expect(result.status == 1)
        #expect(result.stderr.contains("registry.journal"))
        #expect(result.stderr.contains("journal line 3 is damaged"), "the header is line 1")
        #expect(result.stderr.contains("sed -i '3d' \(journalPath(daemon))"), "says how to get going again")
        #expect(try Data(contentsOf: URL(fileURLWithPath: journalPath(daemon))) == Data(content))
    }

    @Test func periodicSnapshotsCompactTheJournal() throws {
        let daemon = try Daemon(extraConfig: "snapshot_interval_s = 1")
        try daemon.start()
        for i in 0..<5 {
            #expect(try daemon.request("CHAT/1 \(i) INTRODUCE rita\(i)", from: "127.0.1.\(i + 1)") == "CHAT/1 \(i) SUCCESS rita\(i)")
        }
        let deadline = ContinuousClock.now + .seconds(10)
        var journal: [UInt8]?
        while ContinuousClock.now < deadline && journal != Journal.header {
            Thread.sleep(forTimeInterval: 0.1)
            journal = try? FileSystem.readFile(atPath: journalPath(daemon))
        }
        #expect(journal == Journal.header, "compaction keeps the header and nothing else")
        #expect(try String(contentsOfFile: daemon.snapshotPath, encoding: .utf8).contains("rita4"))
    }

    /// Switching to "periodic" with a journal left by "sync": periodic mode
    /// journals nothing, so the journal is folded into the snapshot at start.
    /// Kept, it would be replayed over later changes after a crash: here
    /// .41 gives alice up and .42 takes her, a snapshot holds that, and the
    /// old line "alice is .41" must not come back.
    @Test func periodicModeFoldsALeftoverJournalIntoTheSnapshot() throws {
        let daemon = try Daemon(extraConfig: "durability = \"periodic\"\nsnapshot_interval_s = 1")
        try FileManager.default.createDirectory(atPath: daemon.folder.appendingPathComponent("state").path, withIntermediateDirectories: true)
        let leftover = Journal.header + Journal.line(.registration(IPAddress("127.0.0.41")!, Username("alice")!))
        _ = FileManager.default.createFile(atPath: journalPath(daemon), contents: Data(leftover))
        try daemon.start()
        #expect(!FileManager.default.fileExists(atPath: journalPath(daemon)))
        #expect(try String(contentsOfFile: daemon.snapshotPath, encoding: .utf8).contains(#""ip": "127.0.0.41", "username": "alice""#))
        #expect(daemon.log.contains("folded the journal into the snapshot"))

        #expect(try daemon.request("CHAT/1 1 INTRODUCE bob", from: "127.0.0.41") == "CHAT/1 1 SUCCESS bob")
        #expect(try daemon.request("CHAT/1 2 INTRODUCE alice", from: "127.0.0.42") == "CHAT/1 2 SUCCESS alice")
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline,
            (try? String(contentsOfFile: daemon.snapshotPath, encoding: .utf8))?.contains(#""ip": "127.0.0.42""#) != true
        {
            Thread.sleep(forTimeInterval: 0.1)
        }
        try daemon.stop(signal: SIGKILL)
        try daemon.start()
        #expect(try daemon.request("CHAT/1 3 CONNECT", from: "127.0.0.42") == "CHAT/1 3 SUCCESS alice")
        #expect(try daemon.request("CHAT/1 4 CONNECT", from: "127.0.0.41") == "CHAT/1 4 SUCCESS bob")
    }

    /// A journal left by a chatd from before the header (version 1) still
    /// replays, with its torn tail dropped, and is upgraded: folded into the
    /// snapshot, then replaced by an empty version-2 journal, since new
    /// records cannot be appended to a version-1 file.
    @Test func aVersion1JournalFromAnOlderChatdReplaysAndIsUpgraded() throws {
        let daemon = try Daemon(extraConfig: "snapshot_interval_s = 3600")
        try FileManager.default.createDirectory(atPath: daemon.folder.appendingPathComponent("state").path, withIntermediateDirectories: true)
        func version1Line(_ body: String) -> String {
            body + #", "crc32": \#(CRC32.checksum(Array(body.utf8)))}"# + "\n"
        }
        // As the older chatd wrote them: literal, since chatd writes them no more.
        let old =
            version1Line(#"{"ip": "127.0.0.50", "username": "uma""#)
            + version1Line(#"{"ip": "127.0.0.51", "username": "vic""#)
            + version1Line(#"{"ip": "127.0.0.50", "username": "ulla""#)  // a rename frees uma
            + version1Line(#"{"ip": "127.0.0.52", "username": "uma""#)
        let torn = String(version1Line(#"{"ip": "127.0.0.53", "username": "wes""#).prefix(25))
        _ = FileManager.default.createFile(atPath: journalPath(daemon), contents: Data((old + torn).utf8))
        func expectUpgraded() throws {
            #expect(try daemon.request("CHAT/1 1 CONNECT", from: "127.0.0.50") == "CHAT/1 1 SUCCESS ulla")
            #expect(try daemon.request("CHAT/1 2 CONNECT", from: "127.0.0.51") == "CHAT/1 2 SUCCESS vic")
            #expect(try daemon.request("CHAT/1 3 CONNECT", from: "127.0.0.52") == "CHAT/1 3 SUCCESS uma")
            #expect(try daemon.request("CHAT/1 4 CONNECT", from: "127.0.0.53") == "CHAT/1 4 ERROR CLIENT_NOT_FOUND")
            #expect(daemon.log.contains("journal.replayed=4"))
            #expect(try FileSystem.readFile(atPath: journalPath(daemon)) == Journal.header)
            #expect(try String(contentsOfFile: daemon.snapshotPath, encoding: .utf8).contains(#""ip": "127.0.0.50", "username": "ulla""#))
        }
        try daemon.start()
        try expectUpgraded()

        // A crash after the snapshot but before the journal was replaced
        // leaves the old file beside the new snapshot: it replays onto it
        // harmlessly, and is upgraded again.
        try daemon.stop(signal: SIGKILL)
        _ = FileManager.default.createFile(atPath: journalPath(daemon), contents: Data(old.utf8))
        try daemon.start()
        try expectUpgraded()

        // The new journal takes records, and they survive kill -9.
        #expect(try daemon.request("CHAT/1 5 INTRODUCE wes", from: "127.0.0.53") == "CHAT/1 5 SUCCESS wes")
        try daemon.stop(signal: SIGKILL)
        try daemon.start()
        #expect(try daemon.request("CHAT/1 6 CONNECT", from: "127.0.0.53") == "CHAT/1 6 SUCCESS wes")
        #expect(try daemon.request("CHAT/1 7 CONNECT", from: "127.0.0.50") == "CHAT/1 7 SUCCESS ulla")
        #expect(try daemon.stop() == 0)
    }

    /// SIGKILL at random moments while 40 clients register, 50 times over:
    /// after every restart, every registration that got a SUCCESS is there.
    @Test func noConfirmedRegistrationIsLostToKill9AtRandomMoments() throws {
        let daemon = try Daemon(extraConfig: "snapshot_interval_s = 1")
        var confirmed: [(address: String, name: String)] = []
        var sent = 0
        var generator = SystemRandomNumberGenerator()
        for round in 0..<50 {
            try daemon.start()  // fails the test if the files do not load
            let clients = try (0..<40).map { i in
                try UDPSocket(binding: Endpoint(IPAddress("127.100.\(round).\(i + 1)")!, port: 0))
            }
            for (i, client) in clients.enumerated() {
                _ = try client.send(Array("CHAT/1 \(i) INTRODUCE k\(round)x\(i)".utf8), to: Endpoint(.loopbackIPv4, port: daemon.port))
                sent += 1
            }
            Thread.sleep(forTimeInterval: Double.random(in: 0...0.015, using: &generator))
            try daemon.stop(signal: SIGKILL)
            for (i, client) in clients.enumerated() {
                if case .processed(let (bytes, _)) = try client.receive(),
                    String(decoding: bytes, as: UTF8.self) == "CHAT/1 \(i) SUCCESS k\(round)x\(i)"
                {
                    confirmed.append(("127.100.\(round).\(i + 1)", "k\(round)x\(i)"))
                }
                try client.close()
            }
        }
        try daemon.start()
        var missing: [String] = []
        for (address, name) in confirmed {
            if try daemon.request("CHAT/1 7 CONNECT", from: address) != "CHAT/1 7 SUCCESS \(name)" { missing.append(name) }
        }
        #expect(missing.isEmpty, "lost: \(missing.prefix(10))")
        #expect(confirmed.count > 0)
        print("kill -9 rounds: 50, registrations sent: \(sent), confirmed and checked: \(confirmed.count), lost: \(missing.count)")
        #expect(try daemon.stop() == 0)
    }

    /// A tmpfs of 256 KiB in chatd's own mount namespace stands in for a full
    /// disk (root only: it mounts).
    @Test(.enabled(if: getuid() == 0, "mounting a tmpfs needs root"))
    func aFullDiskAnswersUnavailableAndRecovers() throws {
        let daemon = try Daemon(extraConfig: "snapshot_interval_s = 3600")
        let state = daemon.folder.appendingPathComponent("state").path
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        try daemon.start(
            executable: URL(fileURLWithPath: "/usr/bin/unshare"),
            arguments: [
                "--mount", "--propagation", "private", "sh", "-c",
                "mount -t tmpfs -o size=256k tmpfs '\(state)' && exec '\(Binaries.chatd.path)' --config '\(daemon.configPath)'",
            ])
        let pid = try #require(daemon.process?.pid)
        func inside(_ command: String) throws -> ProcessResult {
            try runProgram(URL(fileURLWithPath: "/usr/bin/nsenter"), ["-t", "\(pid)", "-m", "sh", "-c", command])
        }
        #expect(try daemon.request("CHAT/1 1 INTRODUCE sam", from: "127.0.0.40") == "CHAT/1 1 SUCCESS sam")

        _ = try inside("dd if=/dev/zero of='\(state)/fill' bs=4k count=1000 2>/dev/null; sync")
        // Appends fill the journal's last allocated block first; the first
        // one that needs a new block meets the full disk.
        var refused: (index: Int, address: String)?
        for i in 0..<300 {
            let address = "127.0.\(2 + i / 200).\(i % 200 + 1)"
            let reply = try daemon.request("CHAT/1 \(i) INTRODUCE f\(i)", from: address)
            if reply == "CHAT/1 \(i) ERROR UNAVAILABLE" {
                refused = (i, address)
                break
            }
            try #require(reply == "CHAT/1 \(i) SUCCESS f\(i)")
        }
        let (index, address) = try #require(refused, "the journal never met the full disk")
        // Nothing changed for the refused client; others are still answered.
        #expect(try daemon.request("CHAT/1 1000 CONNECT", from: address) == "CHAT/1 1000 ERROR CLIENT_NOT_FOUND")
        #expect(try daemon.request("CHAT/1 1001 CONNECT", from: "127.0.0.40") == "CHAT/1 1001 SUCCESS sam")
        #expect(try daemon.request("CHAT/1 1002 INTRODUCE samuel", from: "127.0.0.40") == "CHAT/1 1002 ERROR UNAVAILABLE")
        #expect(try daemon.request("CHAT/1 1003 CONNECT", from: "127.0.0.40") == "CHAT/1 1003 SUCCESS sam")
        #expect(daemon.waitForLog("registrations and messages not saved"))
        let unavailable = try chat(["join", "tess", "--bind", "127.0.0.41"], port: daemon.port)
        #expect(unavailable.status == 75)
        #expect(unavailable.stderr.contains("UNAVAILABLE"))

        // Space is back: registrations resume by themselves.
        _ = try inside("rm -f '\(state)/fill'")
        #expect(try daemon.request("CHAT/1 1004 INTRODUCE f\(index)", from: address) == "CHAT/1 1004 SUCCESS f\(index)")
        #expect(try daemon.request("CHAT/1 1005 INTRODUCE tess", from: "127.0.0.41") == "CHAT/1 1005 SUCCESS tess")
        let journal = try inside("cat '\(state)/registry.journal'").stdout
        #expect(journal.contains(#""username": "sam""#) && journal.contains(#""username": "tess""#))
        #expect(journal.contains(#""username": "f\#(index)""#))
        #expect(!journal.contains("samuel"))
        // Every line on disk is whole: the failed appends left nothing behind.
        var replayed = Registry(maxUsers: 1000)
        let replay = try Journal.replay(Array(journal.utf8), into: &replayed)
        #expect(!replay.tornTail && replay.lines == replayed.count)
        #expect(try daemon.stop() == 0)
    }
}

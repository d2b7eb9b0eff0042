import ChatSystem
import Glibc
import Logging
import Testing

@Suite struct JournalLogHandlerTests {
    @Test func entryCarriesTheStandardFieldsAndMetadataAsChatdFields() {
        let fields = JournalLogHandler.fields(
            identifier: "chatd", level: .info, message: "user registered",
            metadata: ["client.ip": "127.0.0.2", "username": "alice", "request.id": "7", "message.id": "9087fbe303834dc0b5dcf7d797fed52c"],
            file: "ChatServer/Server.swift", function: "record(_:from:)", line: 42)
        #expect(fields == [
            "MESSAGE=user registered", "PRIORITY=6", "SYSLOG_IDENTIFIER=chatd",
            "CODE_FILE=ChatServer/Server.swift", "CODE_LINE=42", "CODE_FUNC=record(_:from:)",
            "CHATD_CLIENT_IP=127.0.0.2", "MESSAGE_ID=9087fbe303834dc0b5dcf7d797fed52c",
            "CHATD_REQUEST_ID=7", "CHATD_USERNAME=alice",
        ])
    }

    @Test(arguments: [
        ("client.ip", "CHATD_CLIENT_IP"), ("username", "CHATD_USERNAME"), ("request.id", "CHATD_REQUEST_ID"),
        ("snapshot-path", "CHATD_SNAPSHOT_PATH"), ("é", "CHATD__"), (String(repeating: "x", count: 80), "CHATD_" + String(repeating: "X", count: 58)),
    ])
    func fieldNamesAreWhatJournaldAccepts(key: String, expected: String) {
        let name = JournalLogHandler.fieldName(for: key)
        #expect(name == expected)
        #expect(name.count <= 64)
        #expect(name.allSatisfy { ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" })
    }

    @Test(arguments: [(Logger.Level.debug, "PRIORITY=7"), (.notice, "PRIORITY=5"), (.warning, "PRIORITY=4"), (.error, "PRIORITY=3")])
    func priorityFollowsLevel(level: Logger.Level, expected: String) {
        let fields = JournalLogHandler.fields(identifier: "chatd", level: level, message: "m", metadata: [:], file: "f", function: "g", line: 1)
        #expect(fields.contains(expected))
    }

    // Neither test changes the environment: the loopback tests beside them
    // start processes, which reads it, and setenv may free what they read.
    @Test func journalStreamMustMatchStderrItself() {
        var status = stat()
        #expect(fstat(2, &status) == 0)
        #expect(Systemd.standardErrorIsJournal(journalStream: "\(status.st_dev):\(status.st_ino)"))
        #expect(!Systemd.standardErrorIsJournal(journalStream: "\(status.st_dev):\(status.st_ino + 1)"))
        #expect(!Systemd.standardErrorIsJournal(journalStream: "garbage"))
        #expect(!Systemd.standardErrorIsJournal(journalStream: nil))
    }

    @Test(.enabled(if: getenv("NOTIFY_SOCKET") == nil, "run outside systemd"))
    func outsideSystemdNotifyAndActivationAreHarmless() throws {
        #expect(Systemd.notify("READY=1") == false)
        #expect(try Systemd.listenedSockets().isEmpty)
    }
}

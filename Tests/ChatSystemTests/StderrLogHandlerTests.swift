// Tests for the stderr log handler: the exact line formats, and one real write.
//
// The formats are what operators grep and what journald parses for the
// priority, so they are pinned character for character.

import ChatSystem
import Logging
import Testing

// MARK: - Formatting

@Suite struct LogFormatTests {
    /// 2026-11-27T11:00:00.123Z
    let time: (seconds: Int64, nanoseconds: Int32) = (1_795_777_200, 123_456_789)
    let metadata: Logger.Metadata = ["username": "alice", "client.ip": "127.0.0.5"]

    @Test func humanLine() {
        let line = StderrLogHandler.format(
            style: .human, label: "chatd", level: .info, message: "user registered",
            metadata: metadata, time: time)
        #expect(line == "2026-11-27T11:00:00.123Z info [chatd] user registered client.ip=127.0.0.5 username=alice")
    }

    @Test func syslogLine() {
        let line = StderrLogHandler.format(
            style: .syslogPrefix, label: "chatd", level: .info, message: "user registered",
            metadata: metadata, time: time)
        #expect(line == "<6>user registered client.ip=127.0.0.5 username=alice")
    }

    @Test(arguments: [
        (Logger.Level.trace, 7), (.debug, 7), (.info, 6), (.notice, 5), (.warning, 4), (.error, 3), (.critical, 2),
    ])
    func priorityFollowsLevel(level: Logger.Level, priority: Int) {
        #expect(StderrLogHandler.syslogPriority(level) == priority)
        let line = StderrLogHandler.format(
            style: .syslogPrefix, label: "x", level: level, message: "m", metadata: [:], time: time)
        #expect(line == "<\(priority)>m")
    }

    @Test(arguments: [
        ("plain", "plain"),
        ("two words", "\"two words\""),
        ("", "\"\""),
        ("say \"hi\"", "\"say \\\"hi\\\"\""),
        ("a=b", "\"a=b\""),
        ("back\\slash", "\"back\\\\slash\""),
        ("line\nbreak", "\"line\\nbreak\""),
        ("[::1]:7447", "[::1]:7447"),
    ])
    func valuesAreQuotedOnlyWhenNeeded(value: String, expected: String) {
        let line = StderrLogHandler.format(
            style: .syslogPrefix, label: "x", level: .info, message: "m", metadata: ["k": .string(value)], time: time)
        #expect(line == "<6>m k=\(expected)")
    }

    @Test func messageStaysOnOneLine() {
        let line = StderrLogHandler.format(
            style: .human, label: "chatd", level: .warning, message: "first\nsecond\r", metadata: [:], time: time)
        #expect(line == "2026-11-27T11:00:00.123Z warning [chatd] first\\nsecond\\r")
    }

    @Test func nonStringValuesUseTheirDescription() {
        let line = StderrLogHandler.format(
            style: .syslogPrefix, label: "x", level: .info, message: "m",
            metadata: ["count": .stringConvertible(42), "list": ["a", "b"]], time: time)
        #expect(line == #"<6>m count=42 list="[\"a\", \"b\"]""#)
    }

    @Test(arguments: [
        (Int64(0), Int32(0), "1970-01-01T00:00:00.000Z"),
        (-1, 999_999_999, "1969-12-31T23:59:59.999Z"),
        (951_782_400, 0, "2000-02-29T00:00:00.000Z"),
        (1_709_251_199, 1_000_000, "2024-02-29T23:59:59.001Z"),
        (4_102_444_800, 0, "2100-01-01T00:00:00.000Z"),
        (253_402_300_799, 0, "9999-12-31T23:59:59.000Z"),
    ])
    func timestamps(seconds: Int64, nanoseconds: Int32, expected: String) {
        #expect(StderrLogHandler.timestamp(seconds: seconds, nanoseconds: nanoseconds) == expected)
    }
}

// MARK: - Handler

@Suite struct LogHandlerTests {
    @Test func writesOneMergedLinePerEvent() throws {
        let (readEnd, writeEnd) = try Posix.pipe(nonblocking: true)
        defer {
            try? Posix.close(fd: readEnd)
            try? Posix.close(fd: writeEnd)
        }
        var handler = StderrLogHandler(
            label: "chatd", style: .syslogPrefix,
            metadataProvider: Logger.MetadataProvider { ["request.id": "7", "username": "provided"] },
            fileDescriptor: writeEnd)
        handler[metadataKey: "username"] = "handler"
        handler[metadataKey: "component"] = "server"
        #expect(handler[metadataKey: "component"] == "server")

        let logger = Logger(label: "chatd") { _ in handler }
        logger.info("user registered", metadata: ["username": "alice"])
        logger.debug("below the level, dropped")
        logger.error("snapshot failed", metadata: ["path": "/var/lib/chatd/registry.json"])

        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = try #require(try buffer.withUnsafeMutableBytes { try Posix.read(fd: readEnd, into: $0) }.value)
        let text = String(decoding: buffer[..<count], as: UTF8.self)
        #expect(
            text == """
                <6>user registered component=server request.id=7 username=alice
                <3>snapshot failed component=server path=/var/lib/chatd/registry.json request.id=7 username=provided

                """)
    }

    @Test func levelAndMetadataAreValues() {
        var first = StderrLogHandler(label: "a", style: .human)
        let second = first
        first.logLevel = .debug
        first.metadata["k"] = "v"
        #expect(second.logLevel == .info)
        #expect(second.metadata.isEmpty)
        #expect(first.label == "a")
        #expect(first.style == .human)
    }
}

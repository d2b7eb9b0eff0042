// The control protocol's pure parts: flat JSON both ways, requests, the
// username pattern, line framing, and the metrics text.

import ChatCore
import Testing

struct ControlProtocolTests {
    @Test func objectsRoundTripThroughOneLine() throws {
        let object: ControlObject = [
            "ok": .bool(true), "text": .string("a \"quoted\" line\nand a tab\t, \\ and é and \u{1F600}"),
            "count": .integer(-42), "rate": .number(12.5), "none": .null,
        ]
        let line = object.line
        #expect(line.last == 0x0a)
        #expect(line.dropLast().firstIndex(of: 0x0a) == nil, "one line whatever the text")
        #expect(ControlObject(parsing: line.dropLast()) == object)
    }

    @Test func theParserTakesFlatObjectsOnly() {
        #expect(ControlObject(parsing: Array(#" { "a" : 1 , "b":"x\u00e9\ud83d\ude00" } "#.utf8))?["b"] == .string("xé😀"))
        #expect(ControlObject(parsing: Array("{}".utf8)) == ControlObject([]))
        for bad in [
            #"{"a": {"b": 1}}"#, #"{"a": [1]}"#, #"{"a": 1} x"#, #"{"a": 1,}"#, #"{"a" 1}"#, #"{"a": 1, "a": 2}"#,
            #"["a"]"#, #"{"a": "\x"}"#, #"{"a": "\ud83d"}"#, "{\"a\": \"tab\there\"}", #"{"a": -}"#, #"{"a": tru}"#, "",
        ] {
            #expect(ControlObject(parsing: Array(bad.utf8)) == nil, "\(bad)")
        }
        #expect(ControlObject(parsing: [0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]) == nil, "not UTF-8")
    }

    @Test func requestsParseAndEncodeBothWays() throws {
        let requests: [ControlRequest] = [
            .status, .users(match: nil), .users(match: ControlPattern("al*")), .lookup(.username(Username("alice")!)),
            .lookup(.address(IPAddress("2001:db8::1")!)), .remove(.address(IPAddress("127.0.0.5")!)), .snapshot, .reload,
            .metrics,
        ]
        for request in requests {
            #expect(try ControlRequest(parsing: request.object.line.dropLast()) == request)
        }
    }

    @Test func badRequestsSayWhatIsWrong() {
        func error(_ text: String) -> ControlError? {
            do {
                _ = try ControlRequest(parsing: Array(text.utf8))
                return nil
            } catch {
                return error
            }
        }
        #expect(error("status")?.code == .badRequest)
        #expect(error(#"{"cmd": "status"}"#)?.message == #"the request has no "command" string"#)
        #expect(error(#"{"command": "halt"}"#)?.code == .unknownCommand)
        #expect(error(#"{"command": "status", "verbose": true}"#)?.message == #"status takes no "verbose""#)
        #expect(error(#"{"command": "lookup"}"#)?.code == .badRequest)
        #expect(error(#"{"command": "lookup", "username": "a", "address": "127.0.0.1"}"#)?.code == .badRequest)
        #expect(error(#"{"command": "remove", "username": "no spaces"}"#)?.message.contains("is not a username") == true)
        #expect(error(#"{"command": "remove", "address": "300.0.0.1"}"#)?.code == .badRequest)
        #expect(error(#"{"command": "users", "match": ""}"#)?.code == .badRequest)
        #expect(error(#"{"command": "users", "match": 3}"#)?.code == .badRequest)
        #expect(error(#"{"command": "users", "match": null}"#) == nil)
    }

    @Test func patternsMatchUsernamesWithoutRegardToCase() throws {
        func matches(_ pattern: String, _ name: String) -> Bool { ControlPattern(pattern)!.matches(Username(name)!) }
        #expect(matches("al*", "Alice"))
        #expect(matches("*ICE", "alice"))
        #expect(matches("a?ice", "alice"))
        #expect(matches("*", "x"))
        #expect(matches("a*b*c", "aXXbYYc"))
        #expect(!matches("a*b*c", "aXXbYY"))
        #expect(!matches("al", "alice"))
        #expect(!matches("?", "ab"))
        // Many stars against a near miss stays linear, not exponential.
        let name = String(repeating: "a", count: 32)
        #expect(!matches(String(repeating: "*a", count: 60) + "b", name))
        #expect(ControlPattern("") == nil)
        #expect(ControlPattern(String(repeating: "x", count: 129)) == nil)
    }

    @Test func theLineReaderCutsLinesAndCapsThem() {
        var reader = ControlLineReader()
        func feed(_ text: String) { Array(text.utf8).withUnsafeBytes { reader.append($0) } }
        feed("{\"a\"")
        #expect(reader.nextLine() == nil)
        feed(": 1}\r\n{}\nrest")
        #expect(reader.nextLine() == .line(Array(#"{"a": 1}"#.utf8)))
        #expect(reader.nextLine() == .line(Array("{}".utf8)))
        #expect(reader.nextLine() == nil)
        #expect(reader.pending == 4)

        var long = ControlLineReader()
        Array(repeating: UInt8(ascii: "x"), count: ControlLineReader.maxLineLength).withUnsafeBytes { long.append($0) }
        #expect(long.room == 0)
        #expect(long.nextLine() == .tooLong)
        var exact = ControlLineReader()
        (Array(repeating: UInt8(ascii: "x"), count: ControlLineReader.maxLineLength - 1) + [0x0a]).withUnsafeBytes {
            exact.append($0)
        }
        #expect(exact.nextLine() == .line(Array(repeating: UInt8(ascii: "x"), count: ControlLineReader.maxLineLength - 1)))
    }

    @Test func metricsTextHasHelpAndTypeBeforeSamples() {
        var metrics = MetricsText()
        metrics.add("chatd_users", .gauge, help: "Registered\naddresses \\ here.", 3)
        metrics.add("chatd_dropped_total", .counter, help: "Dropped.", [("reason=\"a\"", 1), ("reason=\"b\"", 2.5)])
        #expect(
            metrics.text == """
                # HELP chatd_users Registered\\naddresses \\\\ here.
                # TYPE chatd_users gauge
                chatd_users 3
                # HELP chatd_dropped_total Dropped.
                # TYPE chatd_dropped_total counter
                chatd_dropped_total{reason="a"} 1
                chatd_dropped_total{reason="b"} 2.5

                """)
    }
}

// `chatd-bench selftest`: checks of the tool's own pure pieces.
//
// The package has no test target for chatd-bench (it is a tool, and adding
// one would change Package.swift), so the few pieces a wrong benchmark
// figure could hide in are checked here: the request writer and reply reader
// against ChatCore's codec, the /proc parsers (on fixed text and on this
// process's own files), the source addresses and names, and the number and
// JSON formatting. Prints one line per failure and a summary; exits 1 on any
// failure.

import ArgumentParser
import ChatCore
import ChatSystem

struct SelfTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Check the tool's own parsers and formatters; exit 1 on a failure.")

    func run() throws {
        var checks = Checks()

        // Requests: byte for byte what ChatCore writes.
        for id: UInt32 in [0, 7, 10, 4_294_967_295] {
            for name in [nil, "u0", "u12345b"] as [String?] {
                var buffer = [UInt8](repeating: 0, count: 128)
                let length = buffer.withUnsafeMutableBytes {
                    Wire.writeRequest(id: id, introducing: name.map { Array($0.utf8) }, into: $0)
                }
                let expected =
                    name.map { Request.introduce(id: id, username: Username($0)!) } ?? Request.connect(id: id)
                checks.expect(Array(buffer[..<length]) == expected.bytes, "request \(expected)")
            }
        }

        // Replies: the id and the rest, for what the server sends.
        let success = Response.success(id: 4_294_967_295, username: Username("u7")!).bytes
        success.withUnsafeBytes { reply in
            let header = Wire.readReplyHeader(reply)
            checks.expect(header?.id == 4_294_967_295, "reply id")
            if let header {
                checks.expect(Wire.rest(reply, from: header.rest, is: Wire.success, Array("u7".utf8)), "SUCCESS u7 matches")
                checks.expect(!Wire.rest(reply, from: header.rest, is: Wire.success, Array("u7b".utf8)), "SUCCESS u7 is not u7b")
                checks.expect(!Wire.rest(reply, from: header.rest, is: Wire.notFound), "SUCCESS is not CLIENT_NOT_FOUND")
            }
        }
        Response.error(id: 12, reason: .clientNotFound).bytes.withUnsafeBytes { reply in
            let header = Wire.readReplyHeader(reply)
            checks.expect(header?.id == 12, "error reply id")
            if let header { checks.expect(Wire.rest(reply, from: header.rest, is: Wire.notFound), "CLIENT_NOT_FOUND matches") }
        }
        for bad in ["", "CHAT/1 ", "CHAT/1 x SUCCESS a", "CHAT/1 4294967296 SUCCESS a", "CHAT/2 1 SUCCESS a", "CHAT/1 12345678901 X"] {
            Array(bad.utf8).withUnsafeBytes { checks.expect(Wire.readReplyHeader($0) == nil, "reject \"\(bad)\"") }
        }

        // /proc parsers.
        let stat = "4242 (chat d) (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 1 0 100 0 0\n"
        checks.expect(ProcFS.cpuTicks(statText: Array(stat.utf8)) == 325, "utime + stime after a ')' in the name")
        checks.expect(ProcFS.cpuTicks(statText: Array("12 (x) S 1 2".utf8)) == nil, "short stat line rejected")
        let status = "Name:\tchatd\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t1\n"
        checks.expect(ProcFS.residentKiB(statusText: Array(status.utf8)) == 12345, "VmRSS")
        do {
            let own = try ProcFS.cpuSeconds(pid: nil)
            checks.expect(own >= 0 && own < 1e7, "/proc/self/stat parses (\(own) s)")
            let text = try FileSystem.readFile(atPath: "/proc/self/status") ?? []
            checks.expect((ProcFS.residentKiB(statusText: text) ?? 0) > 0, "/proc/self/status has VmRSS")
        } catch {
            checks.expect(false, "reading /proc/self: \(error)")
        }

        // Source addresses and the names that go with them.
        let base = ClientAddresses.loadgenBase
        checks.expect(ClientAddresses.range(from: base, count: 3) == [base, base + 1, base + 2], "three addresses from 127.1.0.1")
        checks.expect(ClientAddresses.range(from: 0x7fff_fffe, count: 1) != nil, "127.255.255.254 is the last")
        checks.expect(ClientAddresses.range(from: 0x7fff_fffe, count: 2) == nil, "past 127.255.255.254 is refused")
        checks.expect(ClientAddresses.range(from: 0x7f00_0000, count: 1) == nil, "127.0.0.0 is refused")
        checks.expect(ClientAddresses.range(from: 0x0a00_0001, count: 1) == nil, "10.0.0.1 is refused")
        checks.expect(ClientAddresses.name(for: base) == Array("u0".utf8), "127.1.0.1 is u0, as in loadgen.c")
        checks.expect(ClientAddresses.name(for: base + 63) == Array("u63".utf8), "127.1.0.64 is u63")
        checks.expect(ClientAddresses.alternateName(for: base + 5) == Array("u5b".utf8), "second name u5b")
        let below = ClientAddresses.name(for: 0x7f00_0002)
        checks.expect(Username(bytes: below) != nil && below != ClientAddresses.name(for: base), "addresses below 127.1.0.1 get valid, distinct names")

        // Formatting.
        checks.expect(fixed(1234.5678, 2) == "1234.57", "fixed 2 decimals")
        checks.expect(fixed(3, 0) == "3", "fixed 0 decimals")
        checks.expect(fixed(0.04, 1) == "0.0", "fixed rounds down")
        checks.expect(fixed(-2.5, 1) == "-2.5", "fixed negative")
        checks.expect(fixed(1.05, 3) == "1.050", "fixed pads")
        checks.expect(jsonString("a\"b\\c\n\u{1}") == "\"a\\\"b\\\\c\\n\\u0001\"", "JSON string escapes")

        print("selftest: \(checks.passed) checks passed, \(checks.failed) failed")
        if checks.failed > 0 { throw ExitCode.failure }
    }
}

private struct Checks {
    var passed = 0
    var failed = 0

    mutating func expect(_ condition: Bool, _ what: String) {
        if condition {
            passed += 1
        } else {
            failed += 1
            print("FAIL: \(what)")
        }
    }
}

// `chatd-bench selftest`: checks of the tool's own pure pieces.
//
// The package has no test target for chatd-bench (it is a tool, and adding
// one would change Package.swift), so the few pieces a wrong benchmark
// figure could hide in are checked here: the request writers and reply
// readers (the handshake's and the chat room's) against ChatCore's codec,
// the /proc parsers (on fixed text and on this process's own files), the
// source addresses and names, and the number and JSON formatting. Prints
// one line per failure and a summary; exits 1 on any failure.

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

        // The chat room's requests: byte for byte what ChatCore writes, and parsed back by the server's parser.
        func written(_ write: (UnsafeMutableRawBufferPointer) -> Int) -> [UInt8] {
            var buffer = [UInt8](repeating: 0, count: 1024)
            let length = buffer.withUnsafeMutableBytes { write($0) }
            return Array(buffer[..<length])
        }
        func parsed(_ bytes: [UInt8]) -> RequestParse? { bytes.withUnsafeBytes { RequestParse($0) } }
        for id: UInt32 in [0, 9, 0x8000_0000, 4_294_967_295] {
            for cookie: UInt64 in [0, 1, 0x0123_4567_89ab_cdef, UInt64.max] {
                let join = written { Wire.writeJoin(id: id, cookie: cookie, batch: false, into: $0) }
                checks.expect(join == ChatRequest.join(id: id, cookie: cookie).bytes, "JOIN \(id) \(cookie)")
                let leave = written { Wire.writeLeave(id: id, cookie: cookie, into: $0) }
                checks.expect(leave == ChatRequest.leave(id: id, cookie: cookie).bytes, "LEAVE \(id) \(cookie)")
            }
            checks.expect(written { Wire.writeAck(id: id, through: nil, into: $0) } == ChatRequest.ack(id: id).bytes, "ACK \(id)")
        }
        // The BATCH format's two requests.
        for (id, cookie) in [(UInt32(5), UInt64(0)), (0x8000_0001, 0xabc), (4_294_967_295, UInt64.max)] {
            let join = written { Wire.writeJoin(id: id, cookie: cookie, batch: true, into: $0) }
            checks.expect(join == ChatRequest.join(id: id, cookie: cookie, batch: true).bytes, "JOIN \(id) \(cookie) BATCH")
            checks.expect(parsed(join) == .chat(.join(id: id, cookie: cookie, batch: true)), "JOIN \(id) BATCH parses")
        }
        for (id, through) in [(UInt32(7), UInt64(0)), (3_735_928_559, 42), (1, maxSeq)] {
            let ack = written { Wire.writeAck(id: id, through: through, into: $0) }
            checks.expect(ack == ChatRequest.ack(id: id, through: through).bytes, "ACK \(id) \(through)")
            checks.expect(parsed(ack) == .chat(.ack(id: id, through: through)), "ACK \(id) \(through) parses")
        }
        for textBytes in [1, 20, 60, 400] {
            for (sender, token, sentAt) in [(0, UInt64(1), Int64(0)), (999, UInt64.max, Int64.max), (3, 4_611_686_018_427_387_904, 123_456_789_012)] {
                let say = written {
                    Wire.writeSay(id: 77, cookie: 0xfeed, token: token, sender: sender, sentAt: sentAt, textBytes: textBytes, into: $0)
                }
                let stampText = Array("\(sender) \(token) \(sentAt)".utf8)
                let text = stampText.count + 1 < textBytes
                    ? stampText + [UInt8(ascii: " ")] + [UInt8](repeating: UInt8(ascii: "x"), count: textBytes - stampText.count - 1) : stampText
                let what = "SAY of \(textBytes) bytes from sender \(sender)"
                checks.expect(say == ChatRequest.say(id: 77, cookie: 0xfeed, token: token, text: text).bytes, what)
                checks.expect(parsed(say) == .chat(.say(id: 77, cookie: 0xfeed, token: token, text: text)), what + " parses")
                checks.expect(text.count == max(textBytes, stampText.count), what + " is padded to its length")
                text.withUnsafeBytes { bytes in
                    checks.expect(
                        Wire.readStamp(bytes, from: 0, to: bytes.count) == Stamp(sender: sender, token: token, sentAt: sentAt),
                        what + ": stamp read back")
                }
            }
        }
        for (digits, value) in [("0", UInt64(0)), ("1234567890123456789", 1_234_567_890_123_456_789), ("18446744073709551615", UInt64.max), ("007 ", 7)] {
            Array(digits.utf8).withUnsafeBytes { checks.expect(Wire.decimal($0, from: 0)?.0 == value, "decimal \(digits)") }
        }
        for digits in ["18446744073709551616", "99999999999999999999", "100000000000000000000", "", "x"] {
            Array(digits.utf8).withUnsafeBytes { checks.expect(Wire.decimal($0, from: 0) == nil, "decimal \"\(digits)\" refused") }
        }
        for foreign in ["hello", "1 2", "1 2 3x", "x 2 3", "1 2 99999999999999999999", "1  2 3"] {
            Array(foreign.utf8).withUnsafeBytes { checks.expect(Wire.readStamp($0, from: 0, to: $0.count) == nil, "no stamp in \"\(foreign)\"") }
        }

        // The chat room's replies and pushes, as ChatCore writes them.
        func reply(_ write: (inout [UInt8]) -> Void) -> [UInt8] {
            var bytes: [UInt8] = []
            write(&bytes)
            return bytes
        }
        func kind(_ bytes: [UInt8]) -> (UInt32, ChatReplyKind)? {
            bytes.withUnsafeBytes { raw in Wire.readReplyHeader(raw).map { ($0.id, Wire.replyKind(raw, from: $0.rest)) } }
        }
        let joined = reply { ChatReply.success(id: 41, into: &$0) { ChatReply.field(Username("u131072")!, to: &$0); ChatReply.field(9_000_000_000, to: &$0) } }
        if let (id, answer) = kind(joined), case .success(let fields) = answer {
            checks.expect(id == 41, "JOIN answer id")
            joined.withUnsafeBytes { raw in
                let read = Wire.readJoinSuccess(raw, fields: fields)
                checks.expect(read?.lastSeq == 9_000_000_000 && read?.window == nil, "JOIN answer: last seq, no BATCH")
            }
        } else {
            checks.expect(false, "JOIN answer is SUCCESS")
        }
        // The server's BATCH answer: ChatReply's fields, " BATCH" and the window.
        let batchJoined = reply {
            ChatReply.success(id: 42, into: &$0) {
                ChatReply.field(Username("u7")!, to: &$0)
                ChatReply.field(77, to: &$0)
                $0 += Array(" BATCH".utf8)
                ChatReply.field(8, to: &$0)
            }
        }
        if let (_, answer) = kind(batchJoined), case .success(let fields) = answer {
            batchJoined.withUnsafeBytes { raw in
                let read = Wire.readJoinSuccess(raw, fields: fields)
                checks.expect(read?.lastSeq == 77 && read?.window == 8, "JOIN answer with BATCH 8")
            }
        } else {
            checks.expect(false, "BATCH JOIN answer is SUCCESS")
        }
        for (text, lastSeq, window) in [("CHAT/1 3 SUCCESS m 0", UInt64(0), nil), ("CHAT/1 3 SUCCESS u1 12 BATCH 8", 12, 8)] as [(String, UInt64, Int?)] {
            let bytes = Array(text.utf8)
            if let (_, answer) = kind(bytes), case .success(let fields) = answer {
                bytes.withUnsafeBytes { raw in
                    let read = Wire.readJoinSuccess(raw, fields: fields)
                    checks.expect(read?.lastSeq == lastSeq && read?.window == window, "JOIN answer \"\(text)\"")
                }
            } else {
                checks.expect(false, "\"\(text)\" is SUCCESS")
            }
        }
        for bad in ["CHAT/1 3 SUCCESS u1", "CHAT/1 3 SUCCESS u1 12 BATCH", "CHAT/1 3 SUCCESS u1 12 BATCH 0", "CHAT/1 3 SUCCESS u1 x"] {
            let bytes = Array(bad.utf8)
            if let (_, answer) = kind(bytes), case .success(let fields) = answer {
                bytes.withUnsafeBytes { checks.expect(Wire.readJoinSuccess($0, fields: fields) == nil, "reject JOIN answer \"\(bad)\"") }
            }
        }
        let said = reply { ChatReply.success(id: 8, into: &$0) { ChatReply.field(42, to: &$0) } }
        if let (_, answer) = kind(said), case .success(let fields) = answer {
            said.withUnsafeBytes { checks.expect(Wire.readSaySuccess($0, fields: fields) == 42, "SAY answer seq") }
        } else {
            checks.expect(false, "SAY answer is SUCCESS")
        }
        let cookieReply = reply { ChatReply.cookie(id: 9, cookie: 0x5f0c_1e2d_3a4b_5c6d, into: &$0) }
        checks.expect(kind(cookieReply).map { $0.1 } == .cookie(0x5f0c_1e2d_3a4b_5c6d), "COOKIE answer")
        let notJoined = Response.error(id: 10, reason: .notJoined).bytes
        if let (_, answer) = kind(notJoined), case .error(let reason) = answer {
            notJoined.withUnsafeBytes { checks.expect(Wire.starts($0, at: reason, with: Wire.notJoined), "ERROR NOT_JOINED") }
        } else {
            checks.expect(false, "NOT_JOINED is an ERROR")
        }
        let stampText = Array("2 99 1234 xxxx".utf8)
        let message = ChatMessage(seq: 4_611_686_018_427_387_903, timeMilliseconds: 1_796_205_721_000, from: Username("u7")!, text: stampText)
        let push = reply { ChatReply.push(id: 3_735_928_559, [message], into: &$0) }
        if let (id, answer) = kind(push), case .message(let entries) = answer {
            checks.expect(id == 3_735_928_559, "push id")
            push.withUnsafeBytes { raw in
                let entry = Wire.nextEntry(raw, from: entries)
                checks.expect(entry?.seq == message.seq && entry?.next == raw.count, "push entry seq")
                if let entry {
                    checks.expect(Array(raw[entry.textStart..<entry.textEnd]) == stampText, "push entry text")
                    checks.expect(Wire.readStamp(raw, from: entry.textStart, to: entry.textEnd) == Stamp(sender: 2, token: 99, sentAt: 1234), "push stamp")
                }
            }
        } else {
            checks.expect(false, "a push is MESSAGE")
        }
        // Several entries, one per line (the BATCH format) as ChatReply writes them.
        let several = (0..<5).map { index in
            ChatMessage(seq: 100 + UInt64(index), timeMilliseconds: 1_796_205_721_000 + Int64(index), from: Username("u\(index)")!,
                text: Array("\(index) \(900 + index) \(123_000 + index) xxx".utf8))
        }
        let batchPush = reply { ChatReply.push(id: 12, several, into: &$0) }
        checks.expect(batchPush.withUnsafeBytes { ChatInbound($0) } == .message(id: 12, several), "ChatCore reads its own BATCH push")
        if let (_, answer) = kind(batchPush), case .message(let first) = answer {
            batchPush.withUnsafeBytes { raw in
                var read: [(UInt64, Stamp?)] = []
                var position = first
                while position < raw.count, let entry = Wire.nextEntry(raw, from: position) {
                    read.append((entry.seq, Wire.readStamp(raw, from: entry.textStart, to: entry.textEnd)))
                    position = entry.next
                }
                checks.expect(read.map(\.0) == several.map(\.seq) && position == raw.count, "the entries of ChatReply's BATCH push")
                checks.expect(read.map(\.1) == (0..<5).map { Stamp(sender: $0, token: UInt64(900 + $0), sentAt: Int64(123_000 + $0)) }, "the stamps in a BATCH push")
            }
        } else {
            checks.expect(false, "a BATCH push is MESSAGE")
        }
        // Texts with spaces at their ends, and chatfloor's push.
        let batch = Array("CHAT/1 1 MESSAGE 5 1700000000000 m 0 1 2\n6 1700000000001 u2 a b \n7 1 x y".utf8)
        if let (_, answer) = kind(batch), case .message(let first) = answer {
            batch.withUnsafeBytes { raw in
                var seqs: [UInt64] = []
                var texts: [String] = []
                var position = first
                while position < raw.count, let entry = Wire.nextEntry(raw, from: position) {
                    seqs.append(entry.seq)
                    texts.append(String(decoding: raw[entry.textStart..<entry.textEnd], as: UTF8.self))
                    position = entry.next
                }
                checks.expect(seqs == [5, 6, 7] && texts == ["0 1 2", "a b ", "y"] && position == raw.count, "entries of a BATCH push")
            }
        }
        for bad in ["CHAT/1 1 MESSAGE 5 17 m", "CHAT/1 1 MESSAGE 5 17 m ", "CHAT/1 1 MESSAGE x 17 m t", "CHAT/1 1 MESSAGE 5 17  t"] {
            let bytes = Array(bad.utf8)
            if let (_, answer) = kind(bytes), case .message(let first) = answer {
                bytes.withUnsafeBytes { checks.expect(Wire.nextEntry($0, from: first) == nil, "reject push \"\(bad)\"") }
            } else {
                checks.expect(false, "\"\(bad)\" is MESSAGE")
            }
        }

        // /proc parsers.
        let stat = "4242 (chat d) (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 1 0 100 0 0\n"
        checks.expect(ProcFS.cpuTicks(statText: Array(stat.utf8)) == 325, "utime + stime after a ')' in the name")
        checks.expect(ProcFS.cpuTicks(statText: Array("12 (x) S 1 2".utf8)) == nil, "short stat line rejected")
        let status = "Name:\tchatd\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t1\n"
        checks.expect(ProcFS.residentKiB(statusText: Array(status.utf8)) == 12345, "VmRSS")
        let machine = "cpu  100 2 30 5000 7 1 4 0 0 0\ncpu0 50 1 15 2500 3 1 2 0 0 0\n"
        checks.expect(ProcFS.busyTicks(statText: Array(machine.utf8)) == 137, "busy ticks of /proc/stat's cpu line")
        checks.expect(ProcFS.busyTicks(statText: Array("cpu0 1 2 3\n".utf8)) == nil, "no cpu line rejected")
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

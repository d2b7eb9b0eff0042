// The chat room's datagrams as `chatd-bench chat` writes and reads them.
//
// The same reasoning as Wire.swift: ChatCore's codec builds enum values and
// arrays per datagram (a push's entries become `ChatMessage`s with a String
// username), which is right for `chat talk` but would put several
// allocations on every delivery of a generator that handles hundreds of
// thousands a second. So requests are written straight into a reused
// buffer, and a push is walked in place: the generator needs each entry's
// seq and the start of its text (where it finds the stamp it wrote), and
// nothing else. Every function is pure on raw memory and checked by
// `chatd-bench selftest` against ChatCore's codec.
//
// The text of every message the generator posts starts with a stamp,
//     <sender> SP <token> SP <sent-ns>
// (the sending member's index, the SAY's token, and its send time on this
// process's monotonic clock in nanoseconds), then a space and `x`s up to
// the asked length, like ircload.c's `<sender> <seq> <send_time_us> xxx…`.
// The stamp lets any member that receives the message tell whose it is and
// how long it took, without a table lookup.

import ChatCore
import Glibc  // memchr: finding each entry's end is most of a push's parse

/// Writes ASCII into a raw buffer the caller made large enough.
struct WireWriter {
    let buffer: UnsafeMutableRawBufferPointer
    private(set) var length = 0

    init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }

    @inline(__always)
    mutating func put(_ bytes: [UInt8]) {
        for byte in bytes {
            buffer[length] = byte
            length += 1
        }
    }

    @inline(__always)
    mutating func put(byte: UInt8) {
        buffer[length] = byte
        length += 1
    }

    /// `value` in decimal, without leading zeros.
    mutating func putDecimal(_ value: UInt64) {
        var digits = 1
        var rest = value
        while rest >= 10 {
            rest /= 10
            digits += 1
        }
        rest = value
        for index in stride(from: length + digits - 1, through: length, by: -1) {
            buffer[index] = UInt8(ascii: "0") + UInt8(rest % 10)
            rest /= 10
        }
        length += digits
    }

    /// A cookie as CHAT/1 writes it: 16 lowercase hex digits, or `0` for none.
    mutating func putCookie(_ cookie: UInt64) {
        guard cookie != 0 else { return put(byte: UInt8(ascii: "0")) }
        for shift in stride(from: 60, through: 0, by: -4) {
            let digit = UInt8(truncatingIfNeeded: cookie >> UInt64(shift)) & 0xf
            put(byte: digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") + digit - 10)
        }
    }

    mutating func putHeader(id: UInt32) {
        put(Wire.header)
        putDecimal(UInt64(id))
    }
}

/// What a reply to a request says, once its id is read.
enum ChatReplyKind: Equatable {
    /// `SUCCESS …`; the fields start at `fields` (past "SUCCESS").
    case success(fields: Int)
    case cookie(UInt64)
    /// `ERROR …`; the reason starts at `reason`.
    case error(reason: Int)
    /// A push (`MESSAGE <entry>[LF <entry>…]`); the first entry starts at `entries`.
    case message(entries: Int)
    /// Anything else: not a CHAT/1 reply the generator knows.
    case other
}

/// One entry of a push, as `Wire.nextEntry` finds it.
struct PushEntry: Equatable {
    var seq: UInt64
    /// Where the text starts and ends (exclusive) in the push.
    var textStart: Int
    var textEnd: Int
    /// Where the next entry starts, or the push's length after the last.
    var next: Int
}

/// A stamp read back from a message's text.
struct Stamp: Equatable {
    var sender: Int
    var token: UInt64
    var sentAt: Int64
}

extension Wire {
    static let joinVerb = Array(" JOIN ".utf8)
    static let leaveVerb = Array(" LEAVE ".utf8)
    static let sayVerb = Array(" SAY ".utf8)
    static let ackVerb = Array(" ACK".utf8)
    static let batchField = Array(" BATCH".utf8)
    static let batchWord = Array("BATCH".utf8)
    static let cookieWord = Array("COOKIE ".utf8)
    static let errorWord = Array("ERROR ".utf8)
    static let messageWord = Array("MESSAGE ".utf8)
    static let successWord = Array("SUCCESS".utf8)
    static let notJoined = Array("NOT_JOINED".utf8)
    static let rateLimited = Array("RATE_LIMITED".utf8)
    static let unavailable = Array("UNAVAILABLE".utf8)

    // MARK: - Requests

    /// `CHAT/1 <id> JOIN <cookie>[ BATCH]`; returns its length.
    static func writeJoin(id: UInt32, cookie: UInt64, batch: Bool, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var writer = WireWriter(buffer)
        writer.putHeader(id: id)
        writer.put(joinVerb)
        writer.putCookie(cookie)
        if batch { writer.put(batchField) }
        return writer.length
    }

    /// `CHAT/1 <id> LEAVE <cookie>`.
    static func writeLeave(id: UInt32, cookie: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var writer = WireWriter(buffer)
        writer.putHeader(id: id)
        writer.put(leaveVerb)
        writer.putCookie(cookie)
        return writer.length
    }

    /// `CHAT/1 <sid> ACK`, or in the BATCH format `CHAT/1 <sid> ACK <through>`.
    static func writeAck(id: UInt32, through: UInt64?, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var writer = WireWriter(buffer)
        writer.putHeader(id: id)
        writer.put(ackVerb)
        if let through {
            writer.put(byte: UInt8(ascii: " "))
            writer.putDecimal(through)
        }
        return writer.length
    }

    /// `CHAT/1 <id> SAY <cookie> <token> <text>`, the text being the stamp
    /// `<sender> <token> <sentAt>` padded with a space and `x`s to
    /// `textBytes` (a text shorter than its stamp is just the stamp). The
    /// buffer needs 64 + max(textBytes, 60) bytes.
    static func writeSay(
        id: UInt32, cookie: UInt64, token: UInt64, sender: Int, sentAt: Int64, textBytes: Int,
        into buffer: UnsafeMutableRawBufferPointer
    ) -> Int {
        var writer = WireWriter(buffer)
        writer.putHeader(id: id)
        writer.put(sayVerb)
        writer.putCookie(cookie)
        writer.put(byte: UInt8(ascii: " "))
        writer.putDecimal(token)
        writer.put(byte: UInt8(ascii: " "))
        let textStart = writer.length
        writer.putDecimal(UInt64(sender))
        writer.put(byte: UInt8(ascii: " "))
        writer.putDecimal(token)
        writer.put(byte: UInt8(ascii: " "))
        writer.putDecimal(UInt64(max(0, sentAt)))
        if writer.length - textStart + 1 < textBytes {
            writer.put(byte: UInt8(ascii: " "))
            while writer.length - textStart < textBytes { writer.put(byte: UInt8(ascii: "x")) }
        }
        return writer.length
    }

    // MARK: - Replies and pushes

    /// What `reply[rest...]` is (`rest` from `readReplyHeader`).
    static func replyKind(_ reply: UnsafeRawBufferPointer, from rest: Int) -> ChatReplyKind {
        if starts(reply, at: rest, with: messageWord) { return .message(entries: rest + messageWord.count) }
        if starts(reply, at: rest, with: successWord) {
            let end = rest + successWord.count
            // "SUCCESS" alone, or followed by a space and its fields.
            guard end == reply.count || reply[end] == UInt8(ascii: " ") else { return .other }
            return .success(fields: end)
        }
        if starts(reply, at: rest, with: errorWord) { return .error(reason: rest + errorWord.count) }
        if starts(reply, at: rest, with: cookieWord) {
            let start = rest + cookieWord.count
            guard reply.count - start == 16, let cookie = hex64(reply, from: start) else { return .other }
            return .cookie(cookie)
        }
        return .other
    }

    /// A JOIN's `SUCCESS <name> <last_seq>[ BATCH <window>]`, from the fields
    /// `replyKind` found: the last seq and, when the server speaks BATCH to
    /// this member, its window. nil when the fields are off that shape.
    static func readJoinSuccess(_ reply: UnsafeRawBufferPointer, fields start: Int) -> (lastSeq: UInt64, window: Int?)? {
        // " <name>": any non-empty run of non-spaces (chatfloor answers "m").
        guard start < reply.count, reply[start] == UInt8(ascii: " ") else { return nil }
        var index = start + 1
        let nameStart = index
        while index < reply.count, reply[index] != UInt8(ascii: " ") { index += 1 }
        guard index > nameStart, index < reply.count else { return nil }
        index += 1
        guard let (lastSeq, afterSeq) = decimal(reply, from: index) else { return nil }
        if afterSeq == reply.count { return (lastSeq, nil) }
        index = afterSeq
        guard starts(reply, at: index, with: batchField) else { return nil }
        index += batchField.count
        guard index < reply.count, reply[index] == UInt8(ascii: " "),
            let (window, end) = decimal(reply, from: index + 1), end == reply.count, (1...999).contains(window)
        else { return nil }
        return (lastSeq, Int(window))
    }

    /// A SAY's `SUCCESS <seq>`: the seq, or nil off that shape.
    static func readSaySuccess(_ reply: UnsafeRawBufferPointer, fields start: Int) -> UInt64? {
        guard start < reply.count, reply[start] == UInt8(ascii: " "),
            let (seq, end) = decimal(reply, from: start + 1), end == reply.count
        else { return nil }
        return seq
    }

    /// The entry of a push that starts at `start` (the `entries` of
    /// `.message`, then each entry's `next` while it is below the push's
    /// length): `<seq> <time-ms> <username> <text>`, up to a LF or the end.
    /// nil when it is off that shape (a truncated or foreign datagram).
    static func nextEntry(_ push: UnsafeRawBufferPointer, from start: Int) -> PushEntry? {
        guard let (seq, afterSeq) = decimal(push, from: start), afterSeq < push.count,
            push[afterSeq] == UInt8(ascii: " ")
        else { return nil }
        // The time is not needed: only its digits are checked.
        var index = afterSeq + 1
        while index < push.count, push[index] &- UInt8(ascii: "0") < 10 { index += 1 }
        guard index > afterSeq + 1, index - afterSeq - 1 <= 20, index < push.count, push[index] == UInt8(ascii: " ") else {
            return nil
        }
        index += 1
        let nameStart = index
        while index < push.count, push[index] != UInt8(ascii: " "), push[index] != UInt8(ascii: "\n") { index += 1 }
        guard index > nameStart, index < push.count, push[index] == UInt8(ascii: " ") else { return nil }
        let textStart = index + 1
        let textEnd: Int
        if let newline = memchr(push.baseAddress! + textStart, Int32(UInt8(ascii: "\n")), push.count - textStart) {
            textEnd = UnsafeRawPointer(newline) - push.baseAddress!
        } else {
            textEnd = push.count
        }
        guard textEnd > textStart else { return nil }
        return PushEntry(seq: seq, textStart: textStart, textEnd: textEnd, next: textEnd == push.count ? textEnd : textEnd + 1)
    }

    /// The stamp at the start of `text` (`<sender> <token> <sent-ns>`, then
    /// the end or a space), or nil for a text this generator did not write.
    static func readStamp(_ bytes: UnsafeRawBufferPointer, from start: Int, to end: Int) -> Stamp? {
        guard let (sender, afterSender) = decimal(bytes, from: start, end: end), sender < 1_000_000,
            afterSender < end, bytes[afterSender] == UInt8(ascii: " "),
            let (token, afterToken) = decimal(bytes, from: afterSender + 1, end: end), afterToken < end,
            bytes[afterToken] == UInt8(ascii: " "),
            let (sentAt, afterTime) = decimal(bytes, from: afterToken + 1, end: end), sentAt <= UInt64(Int64.max),
            afterTime == end || bytes[afterTime] == UInt8(ascii: " ")
        else { return nil }
        return Stamp(sender: Int(sender), token: token, sentAt: Int64(sentAt))
    }

    /// Whether `reply[start...]` begins with `word`.
    @inline(__always)
    static func starts(_ reply: UnsafeRawBufferPointer, at start: Int, with word: [UInt8]) -> Bool {
        guard reply.count - start >= word.count else { return false }
        var index = start
        for byte in word {
            if reply[index] != byte { return false }
            index += 1
        }
        return true
    }

    /// 1 to 20 decimal digits from `start` that fit in 64 bits, and where they
    /// end; nil when there is no digit there or the value overflows.
    @inline(__always)
    static func decimal(_ bytes: UnsafeRawBufferPointer, from start: Int, end: Int? = nil) -> (UInt64, Int)? {
        let limit = end ?? bytes.count
        var index = start
        var value: UInt64 = 0
        // 19 digits cannot overflow 64 bits, so they need no check.
        let fast = min(limit, start + 19)
        while index < fast {
            let digit = bytes[index] &- UInt8(ascii: "0")
            guard digit < 10 else { break }
            value = value &* 10 &+ UInt64(digit)
            index += 1
        }
        if index == start + 19, index < limit, bytes[index] &- UInt8(ascii: "0") < 10 {
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(bytes[index] &- UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { return nil }
            value = sum
            index += 1
            // A 21st digit is more than 64 bits.
            if index < limit, bytes[index] &- UInt8(ascii: "0") < 10 { return nil }
        }
        guard index > start else { return nil }
        return (value, index)
    }

    /// 16 lowercase hex digits from `start`.
    private static func hex64(_ bytes: UnsafeRawBufferPointer, from start: Int) -> UInt64? {
        CookieText.parse(bytes[start..<(start + 16)])
    }
}

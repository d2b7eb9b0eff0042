// The chat room's verbs on the wire: every request written by the client's
// codec and read back by the server's, every reply and push written by the
// server's and read back by the client's, and the rejections the grammar
// and the text rule make.

import ChatCore
import Testing

private func parse(_ bytes: [UInt8]) -> RequestParse { RequestParse(bytes) }
private func parse(_ text: String) -> RequestParse { RequestParse(Array(text.utf8)) }
private func name(_ text: String) -> Username { Username(text)! }
private func utf8(_ text: String) -> [UInt8] { Array(text.utf8) }

private let cookie: UInt64 = 0x0123_4567_89ab_cdef
private let cookieText = "0123456789abcdef"

/// `CHAT/1 1 SAY <cookie> 5 ` followed by `text`.
private func say(_ text: [UInt8]) -> [UInt8] { utf8("CHAT/1 1 SAY \(cookieText) 5 ") + text }

@Suite struct ChatRequestCodecTests {
    @Test(arguments: [
        (ChatRequest.join(id: 5, cookie: cookie), "CHAT/1 5 JOIN 0123456789abcdef"),
        (.join(id: 0, cookie: 0), "CHAT/1 0 JOIN 0"),
        (.join(id: 4_294_967_295, cookie: 1), "CHAT/1 4294967295 JOIN 0000000000000001"),
        (.join(id: 1, cookie: .max), "CHAT/1 1 JOIN ffffffffffffffff"),
        (.leave(id: 6, cookie: cookie), "CHAT/1 6 LEAVE 0123456789abcdef"),
        (.say(id: 7, cookie: cookie, token: 0, text: utf8("hi")), "CHAT/1 7 SAY 0123456789abcdef 0 hi"),
        (
            .say(id: 7, cookie: cookie, token: .max, text: utf8("héllo wörld ✓")),
            "CHAT/1 7 SAY 0123456789abcdef 18446744073709551615 héllo wörld ✓"
        ),
        (.say(id: 7, cookie: 0, token: 42, text: utf8("  two  spaces ")), "CHAT/1 7 SAY 0 42   two  spaces "),
        (.who(id: 8, cookie: cookie, after: nil), "CHAT/1 8 WHO 0123456789abcdef"),
        (.who(id: 8, cookie: cookie, after: name("Bob.x")), "CHAT/1 8 WHO 0123456789abcdef Bob.x"),
        (.history(id: 9, cookie: cookie, afterSeq: 0), "CHAT/1 9 HISTORY 0123456789abcdef 0"),
        (.history(id: 9, cookie: cookie, afterSeq: .max), "CHAT/1 9 HISTORY 0123456789abcdef 18446744073709551615"),
        (.ack(id: 10), "CHAT/1 10 ACK"),
    ])
    func everyRequestRoundTrips(request: ChatRequest, text: String) {
        #expect(String(decoding: request.bytes, as: UTF8.self) == text)
        #expect(parse(request.bytes) == .chat(request))
        #expect(parse(request.bytes + utf8("\n")) == .chat(request))
        #expect(parse(request.bytes + utf8("\r\n")) == .chat(request))
    }

    @Test func withCookieAndWithIDChangeOnlyTheirField() {
        let say = ChatRequest.say(id: 1, cookie: 0, token: 9, text: utf8("x"))
        #expect(say.with(cookie: cookie) == .say(id: 1, cookie: cookie, token: 9, text: utf8("x")))
        #expect(say.with(id: 2) == .say(id: 2, cookie: 0, token: 9, text: utf8("x")))
        #expect(say.with(cookie: cookie).cookie == cookie)
        #expect(ChatRequest.ack(id: 3).cookie == nil)
        #expect(ChatRequest.ack(id: 3).with(cookie: cookie) == .ack(id: 3))
    }

    // MARK: Cookies and numbers

    @Test(arguments: [
        "CHAT/1 1 JOIN 0123456789ABCDEF",  // uppercase hex
        "CHAT/1 1 JOIN 0123456789abcdeF",
        "CHAT/1 1 JOIN 0123456789abcde",  // 15 digits
        "CHAT/1 1 JOIN 0123456789abcdef0",  // 17 digits
        "CHAT/1 1 JOIN 00",
        "CHAT/1 1 JOIN 0x23456789abcdef",
        "CHAT/1 1 JOIN 0123456789abcdeg",
        "CHAT/1 1 JOIN -123456789abcdef",
        "CHAT/1 1 JOIN",  // no cookie
        "CHAT/1 1 JOIN ",  // an empty cookie
        "CHAT/1 1 JOIN  0123456789abcdef",
        "CHAT/1 1 LEAVE",
        "CHAT/1 1 WHO",
        "CHAT/1 1 HISTORY 5",  // the seq where the cookie goes
        "CHAT/1 1 SAY  5 hi",  // an empty cookie before the token
        "CHAT/1 1 SAY 0123456789ABCDEF 5 hi",
    ])
    func badCookiesAreMalformed(text: String) {
        #expect(parse(text) == .malformed(id: 1))
    }

    @Test func theZeroCookieMeansNone() {
        #expect(parse("CHAT/1 1 JOIN 0") == .chat(.join(id: 1, cookie: 0)))
        // Sixteen zeros are a well-formed cookie field too: the value none.
        #expect(parse("CHAT/1 1 JOIN 0000000000000000") == .chat(.join(id: 1, cookie: 0)))
    }

    @Test(arguments: [
        "CHAT/1 1 SAY 0 18446744073709551616 hi",  // UInt64.max + 1
        "CHAT/1 1 SAY 0 99999999999999999999 hi",  // 20 digits over the top
        "CHAT/1 1 SAY 0 000000000000000000001 hi",  // 21 digits
        "CHAT/1 1 SAY 0 -1 hi",
        "CHAT/1 1 SAY 0 +1 hi",
        "CHAT/1 1 SAY 0 1a hi",
        "CHAT/1 1 SAY 0",  // no token
        "CHAT/1 1 SAY 0 ",
        "CHAT/1 1 HISTORY 0 18446744073709551616",
        "CHAT/1 1 HISTORY 0 -1",
        "CHAT/1 1 HISTORY 0",
        "CHAT/1 1 HISTORY 0 ",
        "CHAT/1 1 HISTORY 0 1 2",
        "CHAT/1 1 HISTORY 0 1 ",
    ])
    func badNumbersAreMalformed(text: String) {
        #expect(parse(text) == .malformed(id: 1))
    }

    @Test func theLargestTokenFits() {
        #expect(
            parse("CHAT/1 1 SAY 0 18446744073709551615 hi")
                == .chat(.say(id: 1, cookie: 0, token: .max, text: utf8("hi"))))
        #expect(
            parse("CHAT/1 1 SAY 0 00000000000000000007 hi")
                == .chat(.say(id: 1, cookie: 0, token: 7, text: utf8("hi"))), "20 digits with leading zeros")
    }

    // MARK: SAY's text

    @Test func sayWithoutTextIsEmpty() {
        let expected = RequestParse.invalidMessage(id: 1, cookie: cookie, detail: "EMPTY")
        #expect(parse("CHAT/1 1 SAY \(cookieText) 5") == expected, "no space after the token")
        #expect(parse("CHAT/1 1 SAY \(cookieText) 5 ") == expected, "only the space")
        #expect(parse("CHAT/1 1 SAY \(cookieText) 5\n") == expected)
        #expect(parse("CHAT/1 1 SAY \(cookieText) 5 \r\n") == expected)
    }

    @Test func textOfFourHundredBytesIsTheMost() {
        let most = [UInt8](repeating: UInt8(ascii: "a"), count: 400)
        #expect(parse(say(most)) == .chat(.say(id: 1, cookie: cookie, token: 5, text: most)))
        #expect(parse(say(most + utf8("a"))) == .invalidMessage(id: 1, cookie: cookie, detail: "TOO_LONG"))
        // Bytes, not characters: 200 two-byte characters fill it.
        let accented = utf8(String(repeating: "é", count: 200))
        #expect(parse(say(accented)) == .chat(.say(id: 1, cookie: cookie, token: 5, text: accented)))
        #expect(parse(say(accented + utf8("a"))) == .invalidMessage(id: 1, cookie: cookie, detail: "TOO_LONG"))
    }

    @Test(arguments: [
        [0xff] as [UInt8],  // never UTF-8
        [UInt8(ascii: "a"), 0xc3],  // a truncated sequence
        [0xc3, UInt8(ascii: "a")],
        [0xc0, 0xaf],  // an overlong "/"
        [0xed, 0xa0, 0x80],  // a surrogate
        [0xf4, 0x90, 0x80, 0x80],  // past U+10FFFF
        [UInt8(ascii: "a"), 0x00, UInt8(ascii: "b")],  // NUL
        [UInt8(ascii: "a"), 0x09],  // a tab: C0 control
        [0x1b, UInt8(ascii: "["), UInt8(ascii: "2"), UInt8(ascii: "J")],  // an escape sequence
        [UInt8(ascii: "a"), 0x0d],  // CR not followed by LF stays in the text
        [UInt8(ascii: "a"), 0x0a, UInt8(ascii: "b")],  // a newline inside
        [UInt8(ascii: "a"), 0x7f],  // DEL
        [0xc2, 0x85],  // U+0085, a C1 control
        [0xc2, 0x80],  // U+0080
        [0xc2, 0x9f],  // U+009F, the last C1 control
    ])
    func badTextIsEncoding(text: [UInt8]) {
        #expect(parse(say(text)) == .invalidMessage(id: 1, cookie: cookie, detail: "ENCODING"))
    }

    @Test(arguments: [
        [0xc2, 0xa0] as [UInt8],  // U+00A0, just past the C1 controls
        [UInt8(ascii: "~")],  // U+007E, just before DEL
        [UInt8(ascii: " ")],  // a space alone is text
        [0xf0, 0x9f, 0x98, 0x80],  // an emoji
        [0xef, 0xbb, 0xbf],  // U+FEFF is not a control
    ])
    func textNextToTheControlsIsAccepted(text: [UInt8]) {
        #expect(parse(say(text)) == .chat(.say(id: 1, cookie: cookie, token: 5, text: text)))
    }

    @Test(arguments: [
        ("hello", "hello"),
        (" leading", " leading"),
        ("  two leading", "  two leading"),
        ("doubled  inside", "doubled  inside"),
        ("trailing ", "trailing "),
        ("   ", "   "),
        ("CHAT/1 2 ACK", "CHAT/1 2 ACK"),
        ("hi\r\n", "hi"),  // the one trailing line end is trimmed
        ("hi\n", "hi"),
        ("hi \r\n", "hi "),
    ])
    func textIsKeptByteForByte(sent: String, kept: String) {
        #expect(parse(say(utf8(sent))) == .chat(.say(id: 1, cookie: cookie, token: 5, text: utf8(kept))))
    }

    @Test func onlyOneLineEndIsTrimmed() {
        #expect(parse(say(utf8("hi\n\n"))) == .invalidMessage(id: 1, cookie: cookie, detail: "ENCODING"))
        #expect(parse(say(utf8("hi\r\n\r\n"))) == .invalidMessage(id: 1, cookie: cookie, detail: "ENCODING"))
    }

    @Test func anOversizedSayIsMalformedNotTooLong() {
        // Over 512 bytes the datagram itself is off the grammar.
        let text = [UInt8](repeating: UInt8(ascii: "a"), count: 600)
        #expect(parse(say(text)) == .malformed(id: 1))
    }

    // MARK: WHO, HISTORY, ACK and the rest

    @Test func whoWithAndWithoutAfter() {
        #expect(parse("CHAT/1 2 WHO 0") == .chat(.who(id: 2, cookie: 0, after: nil)))
        #expect(parse("CHAT/1 2 WHO 0 alice") == .chat(.who(id: 2, cookie: 0, after: name("alice"))))
        #expect(parse("CHAT/1 2 WHO \(cookieText) A.b_c-9\n") == .chat(.who(id: 2, cookie: cookie, after: name("A.b_c-9"))))
    }

    @Test(arguments: [
        "CHAT/1 2 WHO 0 -alice", "CHAT/1 2 WHO 0 al!ce", "CHAT/1 2 WHO 0 \(String(repeating: "a", count: 33))",
        "CHAT/1 2 WHO 0 ÅSA", "CHAT/1 2 WHO 0 alice bob", "CHAT/1 2 WHO 0 ", "CHAT/1 2 WHO 0  alice",
        "CHAT/1 2 WHO 0 alice ",
    ])
    func whoAfterAnInvalidNameIsMalformed(text: String) {
        #expect(parse(text) == .malformed(id: 2))
    }

    @Test func batchFormat() {
        #expect(parse("CHAT/1 5 JOIN 0 BATCH") == .chat(.join(id: 5, cookie: 0, batch: true)))
        #expect(parse("CHAT/1 5 JOIN 0") == .chat(.join(id: 5, cookie: 0, batch: false)))
        #expect(parse("CHAT/1 5 JOIN 0 batch") == .malformed(id: 5))
        #expect(parse("CHAT/1 5 JOIN 0 BATCH x") == .malformed(id: 5))
        #expect(parse("CHAT/1 4 ACK 17") == .chat(.ack(id: 4, through: 17)))
        #expect(parse("CHAT/1 4 ACK 0") == .chat(.ack(id: 4, through: 0)))
        #expect(String(decoding: ChatRequest.join(id: 5, cookie: 0, batch: true).bytes, as: UTF8.self) == "CHAT/1 5 JOIN 0 BATCH")
        #expect(String(decoding: ChatRequest.ack(id: 4, through: 17).bytes, as: UTF8.self) == "CHAT/1 4 ACK 17")
        #expect(String(decoding: ChatRequest.ack(id: 4).bytes, as: UTF8.self) == "CHAT/1 4 ACK")
    }

    @Test func history() {
        #expect(parse("CHAT/1 3 HISTORY 0 17") == .chat(.history(id: 3, cookie: 0, afterSeq: 17)))
        #expect(parse("CHAT/1 3 HISTORY 0 007") == .chat(.history(id: 3, cookie: 0, afterSeq: 7)))
    }

    @Test(arguments: [
        "CHAT/1 4 ACK x", "CHAT/1 4 ACK 18446744073709551616", "CHAT/1 4 ACK 0123456789abcdef", "CHAT/1 4 ACK ",
        "CHAT/1 4 ACK 1 2", "CHAT/1 4 ack", "CHAT/1 4 ACK -1",
    ])
    func ackWithAnythingAfterItIsMalformed(text: String) {
        #expect(parse(text) == .malformed(id: 4))
    }

    @Test(arguments: [
        "CHAT/1 5 JOIN 0 x", "CHAT/1 5 JOIN 0 ", "CHAT/1 5 LEAVE 0 x", "CHAT/1 5 join 0", "CHAT/1 5 Say 0 1 hi",
        "CHAT/1 5 MESSAGE 1 2 alice hi", "CHAT/1 5 COOKIE 0123456789abcdef",
    ])
    func otherChatShapesAreMalformed(text: String) {
        #expect(parse(text) == .malformed(id: 5))
    }
}

@Suite struct ChatInboundCodecTests {
    private func inbound(_ text: String) -> ChatInbound? { ChatInbound(utf8(text)) }

    @Test func successCarriesItsFieldsAsWritten() {
        var bytes: [UInt8] = []
        ChatReply.success(id: 4, into: &bytes) {
            ChatReply.field(name("alice"), to: &$0)
            ChatReply.field(UInt64(17), to: &$0)
        }
        #expect(String(decoding: bytes, as: UTF8.self) == "CHAT/1 4 SUCCESS alice 17")
        #expect(ChatInbound(bytes) == .success(id: 4, fields: ["alice", "17"]))
        #expect(ChatInbound(bytes + utf8("\r\n")) == .success(id: 4, fields: ["alice", "17"]))

        var who: [UInt8] = []
        ChatReply.success(id: 5, into: &who) {
            ChatReply.field(UInt64(3), to: &$0)
            for member in ["Alice", "bob", "carol"] { ChatReply.field(name(member), to: &$0) }
        }
        #expect(ChatInbound(who) == .success(id: 5, fields: ["3", "Alice", "bob", "carol"]))

        var bare: [UInt8] = []
        ChatReply.success(id: 6, into: &bare) { _ in }
        #expect(ChatInbound(bare) == .success(id: 6, fields: []))
    }

    @Test(arguments: [UInt64(0x0123_4567_89ab_cdef), 1, .max, 0xf000_0000_0000_0000])
    func cookieRoundTrips(value: UInt64) {
        var bytes: [UInt8] = []
        ChatReply.cookie(id: 9, cookie: value, into: &bytes)
        #expect(bytes.count == "CHAT/1 9 COOKIE ".utf8.count + 16, "always 16 digits")
        #expect(ChatInbound(bytes) == .cookie(id: 9, cookie: value))
    }

    @Test(arguments: [
        Response.error(id: 3, reason: .invalidMessage, detail: "TOO_LONG"),
        .error(id: 3, reason: .invalidMessage, detail: "EMPTY"),
        .error(id: 3, reason: .invalidMessage, detail: "ENCODING"),
        .error(id: 3, reason: .notJoined),
        .error(id: 3, reason: .rateLimited),
        .error(id: 3, reason: .unavailable),
        .error(id: 4_294_967_295, reason: .clientNotFound),
        .error(id: 0, reason: ErrorReason(rawValue: "SOMETHING_NEW"), detail: "X"),
    ])
    func errorsRoundTrip(response: Response) {
        guard case .error(let id, let reason, let detail) = response else { return }
        #expect(ChatInbound(response.bytes) == .error(id: id, reason: reason, detail: detail))
    }

    @Test(arguments: [
        ChatMessage(seq: 1, timeMilliseconds: 1_700_000_000_123, from: name("alice"), text: utf8("hello")),
        ChatMessage(seq: maxSeq, timeMilliseconds: 0, from: name("B.o-b_9"), text: utf8("  spaced  out ")),
        ChatMessage(seq: 42, timeMilliseconds: Int64.max, from: name("carol"), text: utf8("say \"hi\" \\ ✓")),
        ChatMessage(
            seq: 7, timeMilliseconds: 5, from: name(String(repeating: "x", count: 32)),
            text: [UInt8](repeating: UInt8(ascii: "m"), count: 400)),
    ])
    func pushesRoundTrip(message: ChatMessage) {
        var bytes: [UInt8] = []
        ChatReply.push(id: 77, [message], into: &bytes)
        #expect(bytes.count <= maxDatagramSize)
        #expect(ChatInbound(bytes) == .message(id: 77, [message]))
        #expect(ChatInbound(bytes + utf8("\n")) == .message(id: 77, [message]))
    }

    @Test func aPushIsWrittenAsTheProtocolSays() {
        var bytes: [UInt8] = []
        let message = ChatMessage(seq: 3, timeMilliseconds: 1_796_205_721_000, from: name("alice"), text: utf8("hi all"))
        ChatReply.push(id: 123, [message], into: &bytes)
        #expect(String(decoding: bytes, as: UTF8.self) == "CHAT/1 123 MESSAGE 3 1796205721000 alice hi all")
    }

    @Test(arguments: [
        "CHAT/1 3 SUCCESS a  b",  // an empty field
        "CHAT/1 3 SUCCESS a ",
        "CHAT/1 3 SUCCESS ✓",  // not ASCII
        "CHAT/1 3 COOKIE",
        "CHAT/1 3 COOKIE 0123456789ABCDEF",
        "CHAT/1 3 COOKIE 0123456789abcde",
        "CHAT/1 3 COOKIE 0123456789abcdef x",
        "CHAT/1 3 ERROR",
        "CHAT/1 3 ERROR lower",
        "CHAT/1 3 ERROR A B C",
        "CHAT/1 3 MESSAGE 1 2 alice",  // no text
        "CHAT/1 3 MESSAGE 1 2 alice ",  // empty text
        "CHAT/1 3 MESSAGE 1 2 -alice hi",  // a name off the rule
        "CHAT/1 3 MESSAGE x 2 alice hi",
        "CHAT/1 3 MESSAGE 9223372036854775808 2 alice hi",  // maxSeq + 1: no server gives it
        "CHAT/1 3 MESSAGE 18446744073709551615 2 alice hi",  // UInt64.max, which seq + 1 would overflow
        "CHAT/1 3 MESSAGE 1 9223372036854775808 alice hi",  // past Int64.max milliseconds
        "CHAT/1 3 MESSAGE 1 2 alice a\tb",  // a control character
        "CHAT/1 3 ACK",
        "CHAT/1 3 MESSAGE 1 2 alice hi\n\n2 2 alice ho",
        "CHAT/1 3 MESSAGE 2 2 alice hi\n2 2 alice ho",  // seqs must ascend
        "CHAT/1 3 MESSAGE 2 2 alice hi\n1 2 alice ho",
        "CHAT/1 3 MESSAGE 1 2 alice hi\n2 2 alice",
        "CHAT/1 3 MESSAGE 1 2 alice hi\r\n2 2 alice ho",  // CR inside text is a control character
        "CHAT/2 3 SUCCESS",
        "CHAT/1 x SUCCESS",
        "CHAT/1 3 HELLO",
        "",
    ])
    func badInboundIsNil(text: String) {
        #expect(inbound(text) == nil)
    }

    @Test func aBatchPushRoundTripsAndOneEntryIsTheBasicPush() {
        let messages = (1...3).map {
            ChatMessage(seq: UInt64($0 * 2), timeMilliseconds: 1_796_205_721_000 + Int64($0), from: name("u\($0)"), text: utf8("  text \($0) "))
        }
        var bytes: [UInt8] = []
        ChatReply.push(id: 9, messages, into: &bytes)
        #expect(
            String(decoding: bytes, as: UTF8.self)
                == "CHAT/1 9 MESSAGE 2 1796205721001 u1   text 1 \n4 1796205721002 u2   text 2 \n6 1796205721003 u3   text 3 ")
        #expect(ChatInbound(bytes) == .message(id: 9, messages))
        #expect(ChatInbound(bytes + utf8("\r\n")) == .message(id: 9, messages))
        // The sizes the server plans pushes with are the sizes written.
        let entryBytes: Int = messages.map { 1 + ChatReply.entry($0).count }.reduce(0, +)
        #expect(bytes.count == ChatReply.pushHeaderSize(id: 9) + entryBytes)
        var one: [UInt8] = []
        ChatReply.push(id: 9, messages.prefix(1), into: &one)
        #expect(String(decoding: one, as: UTF8.self) == "CHAT/1 9 MESSAGE 2 1796205721001 u1   text 1 ")
    }

    @Test func answerSeqsAreHeldToMaxSeqAsPushSeqsAre() {
        #expect(ChatInbound.seq("0") == 0)
        #expect(ChatInbound.seq("9223372036854775807") == maxSeq)
        #expect(ChatInbound.seq("9223372036854775808") == nil)
        #expect(ChatInbound.seq("18446744073709551615") == nil)
        #expect(ChatInbound.seq("-1") == nil)
    }

    @Test func aPushWithBadTextBytesIsNil() {
        #expect(ChatInbound(utf8("CHAT/1 3 MESSAGE 1 2 alice ") + [0xc2, 0x85]) == nil)
        #expect(ChatInbound(utf8("CHAT/1 3 MESSAGE 1 2 alice ") + [0xff]) == nil)
        #expect(ChatInbound(utf8("CHAT/1 3 MESSAGE 1 2 alice ") + [0x7f]) == nil)
    }
}

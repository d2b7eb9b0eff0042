import ChatCore
import Testing

private func parse(_ text: String) -> RequestParse { RequestParse(Array(text.utf8)) }
private func name(_ text: String) -> Username { Username(text)! }

@Suite struct RequestParsingTests {
    @Test(arguments: [
        ("CHAT/1 7 CONNECT", RequestParse.request(.connect(id: 7))),
        ("CHAT/1 0 CONNECT", .request(.connect(id: 0))),
        ("CHAT/1 4294967295 CONNECT", .request(.connect(id: 4_294_967_295))),
        ("CHAT/1 007 CONNECT", .request(.connect(id: 7))),
        ("CHAT/1 7 CONNECT\n", .request(.connect(id: 7))),
        ("CHAT/1 7 CONNECT\r\n", .request(.connect(id: 7))),
        ("CHAT/1 9 INTRODUCE alice", .request(.introduce(id: 9, username: name("alice")))),
        ("CHAT/1 9 INTRODUCE A.b_c-9\n", .request(.introduce(id: 9, username: name("A.b_c-9")))),
    ])
    func wellFormed(text: String, expected: RequestParse) {
        #expect(parse(text) == expected)
    }

    @Test(arguments: [
        // id problems: no id can be read, so 0
        ("CHAT/1 CONNECT", 0),
        ("CHAT/1 4294967296 CONNECT", 0),
        ("CHAT/1 12345678901 CONNECT", 0),
        ("CHAT/1 -1 CONNECT", 0),
        ("CHAT/1 +1 CONNECT", 0),
        ("CHAT/1 1a CONNECT", 0),
        ("CHAT/1  5 CONNECT", 0),
        ("CHAT/1", 0),
        ("CHAT/1 ", 0),
        // verb problems: the id is echoed
        ("CHAT/1 5", 5),
        ("CHAT/1 5 ", 5),
        ("CHAT/1 5 connect", 5),
        ("CHAT/1 5 PING", 5),
        ("CHAT/1 5 CONNECT extra", 5),
        ("CHAT/1 5 CONNECT ", 5),
        ("CHAT/1 5  CONNECT", 5),
        ("CHAT/1 5 CONNECT\n\n", 5),
        ("CHAT/1 5 CONNECT\r", 5),
        ("CHAT/1 5 CONNECT\r\r\n", 5),
        ("CHAT/1 5 CONNECT\t", 5),
        ("CHAT/1 5 INTRODUCE", 5),
        ("CHAT/1 5 INTRODUCE ", 5),
        ("CHAT/1 5 INTRODUCE  alice", 5),
        ("CHAT/1 5 INTRODUCE alice bob", 5),
        ("CHAT/1 5 INTRODUCE alice ", 5),
    ])
    func malformed(text: String, id: UInt32) {
        #expect(parse(text) == .malformed(id: id))
    }

    @Test func oversizedDatagramsAreClassifiedByTheirPrefix() {
        let padding = String(repeating: "a", count: 600)
        #expect(parse("CHAT/1 42 INTRODUCE " + padding) == .malformed(id: 42))
        #expect(parse("CHAT/3 42 INTRODUCE " + padding) == .unsupportedVersion(id: 42))
        #expect(parse("GET / HTTP/1.1 " + padding) == .notChat)
        // The limit is on the whole datagram, so 513 bytes of an otherwise
        // valid-looking prefix are rejected too.
        #expect(parse("CHAT/1 42 CONNECT" + String(repeating: "\n", count: 496)) == .malformed(id: 42))
    }

    @Test(arguments: [
        ("CHAT/2 5 CONNECT", 5),
        ("CHAT/10 5 CONNECT", 5),
        ("CHAT/1.1 77 INTRODUCE x", 77),
        ("CHAT/ 5 CONNECT", 0),
        ("CHAT/", 0),
        ("CHAT/2", 0),
        ("CHAT/2 x CONNECT", 0),
    ])
    func unsupportedVersion(text: String, id: UInt32) {
        #expect(parse(text) == .unsupportedVersion(id: id))
    }

    @Test(arguments: ["", "hello", "chat/1 5 CONNECT", "CHAT1 5 CONNECT", "CHAT", " CHAT/1 5 CONNECT", "\u{0}\u{1}"])
    func notChatIsDropped(text: String) {
        #expect(parse(text) == .notChat)
    }

    @Test(arguments: [
        "-alice", "_x", ".x", "alice!", "al ice", "ÅSA", String(repeating: "a", count: 33), "a@b",
    ])
    func introduceWithABadNameIsInvalidUsername(bad: String) {
        // A name with a space is two fields: that one is malformed instead.
        let expected: RequestParse = bad.contains(" ") ? .malformed(id: 3) : .invalidUsername(id: 3)
        #expect(parse("CHAT/1 3 INTRODUCE \(bad)") == expected)
    }

    @Test func nonASCIIBytesInANameAreInvalidNotACrash() {
        let bytes = Array("CHAT/1 3 INTRODUCE ".utf8) + [0xff, 0xfe, 0x00, 0x80]
        #expect(RequestParse(bytes) == .invalidUsername(id: 3))
    }
}

@Suite struct ResponseCodecTests {
    @Test(arguments: [
        (Response.success(id: 7, username: name("alice")), "CHAT/1 7 SUCCESS alice"),
        (.success(id: 0, username: name("Bob")), "CHAT/1 0 SUCCESS Bob"),
        (.error(id: 4_294_967_295, reason: .clientNotFound), "CHAT/1 4294967295 ERROR CLIENT_NOT_FOUND"),
        (.error(id: 12, reason: .invalidUsername, detail: "TAKEN"), "CHAT/1 12 ERROR INVALID_USERNAME TAKEN"),
        (.error(id: 12, reason: .invalidUsername, detail: "SYNTAX"), "CHAT/1 12 ERROR INVALID_USERNAME SYNTAX"),
        (.error(id: 1, reason: .malformed), "CHAT/1 1 ERROR MALFORMED"),
        (.error(id: 1, reason: .unsupportedVersion), "CHAT/1 1 ERROR UNSUPPORTED_VERSION"),
        (.error(id: 10, reason: .serverFull), "CHAT/1 10 ERROR SERVER_FULL"),
    ])
    func roundTrip(response: Response, text: String) {
        #expect(String(decoding: response.bytes, as: UTF8.self) == text)
        #expect(Response(Array(text.utf8)) == response)
        #expect(Response(Array((text + "\r\n").utf8)) == response)
    }

    @Test func unknownReasonsStillParse() {
        #expect(Response(Array("CHAT/1 3 ERROR UNAVAILABLE".utf8)) == .error(id: 3, reason: ErrorReason(rawValue: "UNAVAILABLE")))
    }

    @Test(arguments: [
        "CHAT/1 3 SUCCESS", "CHAT/1 3 SUCCESS a b", "CHAT/1 3 SUCCESS -bad", "CHAT/1 3 ERROR",
        "CHAT/1 3 ERROR lower", "CHAT/1 3 ERROR A B C", "CHAT/2 3 SUCCESS a", "CHAT/1 x SUCCESS a",
        "CHAT/1 3 CONNECT", "CHAT/1 3  SUCCESS a", "garbage", "",
    ])
    func badResponsesAreNil(text: String) {
        #expect(Response(Array(text.utf8)) == nil)
    }

    @Test(arguments: [Request.connect(id: 0), .connect(id: 99), .introduce(id: 5, username: name("carol"))])
    func requestsRoundTrip(request: Request) {
        #expect(RequestParse(request.bytes) == .request(request))
    }

    @Test func idsAreEchoedWithoutLeadingZeros() {
        var registry = Registry(maxUsers: 1)
        let result = RequestHandler.handle(Array("CHAT/1 0042 CONNECT".utf8), from: .v4(1), registry: &registry)
        #expect(result.reply.map { String(decoding: $0.bytes, as: UTF8.self) } == "CHAT/1 42 ERROR CLIENT_NOT_FOUND")
    }
}

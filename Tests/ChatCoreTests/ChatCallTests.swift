// ChatCall (`chat say`, `chat who`) on virtual time against a server the
// test plays by hand.

import ChatCore
import Testing

private let server = Endpoint(.v4(0x7f00_0001), port: 7447)
private let t0 = Instant(nanoseconds: 1_000_000_000)

private func call(_ goal: ChatCallGoal, attempts: Int = 3) -> ChatCall<SplitMix64> {
    var call = ChatCall(
        goal: goal, server: server,
        settings: HandshakeSettings(timeout: .milliseconds(500), maxAttempts: attempts, backoff: 2, jitter: 0),
        random: SplitMix64(seed: 9))
    call.start(now: t0)
    return call
}

private func sent(_ call: inout ChatCall<SplitMix64>) throws -> ChatRequest {
    var all: [ChatRequest] = []
    while let bytes = call.pollTransmit() {
        guard case .chat(let request) = RequestParse(bytes) else { throw Failure("not a chat request: \(bytes)") }
        all.append(request)
    }
    guard all.count == 1 else { throw Failure("expected one request, got \(all)") }
    return all[0]
}

private func answer(_ call: inout ChatCall<SplitMix64>, _ text: String) {
    call.handle(datagram: Array(text.utf8), from: server, now: t0)
}

@Suite struct ChatCallTests {
    @Test func sayTakesTheCookieThenPrintsTheSeq() throws {
        var c = call(.say(Array("hello".utf8)))
        let first = try sent(&c)
        guard case .say(let id1, 0, let token1, _) = first else { throw Failure("expected SAY, got \(first)") }
        answer(&c, "CHAT/1 \(id1) COOKIE 00000000000000ff")
        let second = try sent(&c)
        guard case .say(let id2, 0xff, let token2, let text) = second else { throw Failure("expected SAY, got \(second)") }
        #expect(id2 != id1 && token2 == token1 && text == Array("hello".utf8))
        answer(&c, "CHAT/1 \(id1) SUCCESS 3")  // late: ignored
        #expect(c.result == nil)
        answer(&c, "CHAT/1 \(id2) SUCCESS 12")
        #expect(c.result == .said(seq: 12))
        #expect(c.nextTimeout() == nil)
    }

    @Test func sayFromAnUnregisteredAddressIsNotRegistered() throws {
        var c = call(.say(Array("hello".utf8)))
        answer(&c, "CHAT/1 \(try sent(&c).id) ERROR CLIENT_NOT_FOUND")
        #expect(c.result == .notRegistered)
    }

    @Test func temporaryRefusalsAreRetriedWithTheSameToken() throws {
        var c = call(.say(Array("hello".utf8)), attempts: 2)
        let first = try sent(&c)
        answer(&c, "CHAT/1 \(first.id) ERROR RATE_LIMITED")
        let second = try sent(&c)
        guard case .say(_, _, let token1, _) = first, case .say(_, _, let token2, _) = second else {
            throw Failure("expected SAY twice")
        }
        #expect(token1 == token2)
        answer(&c, "CHAT/1 \(second.id) ERROR UNAVAILABLE")
        #expect(c.result == .rejected(.unavailable, detail: nil))
    }

    @Test func noAnswerIsUnreachable() {
        var c = call(.who, attempts: 3)
        var now = t0
        while let deadline = c.nextTimeout() {
            now = deadline
            c.handleTimeout(now: now)
        }
        #expect(now == t0 + .milliseconds(3500))
        #expect(c.result == .unreachable(attempts: 3))
    }

    @Test func whoPagesUntilItHasEveryName() throws {
        var c = call(.who)
        let page1 = try sent(&c)
        #expect(page1 == .who(id: page1.id, cookie: 0, after: nil))
        answer(&c, "CHAT/1 \(page1.id) SUCCESS 3 ann bob")
        let page2 = try sent(&c)
        #expect(page2 == .who(id: page2.id, cookie: 0, after: Username("bob")!))
        answer(&c, "CHAT/1 \(page2.id) SUCCESS 3 cy")
        #expect(c.result == .members(count: 3, names: ["ann", "bob", "cy"].map { Username($0)! }))
    }

    @Test func whoStopsAtAnEmptyPage() throws {
        var c = call(.who)
        answer(&c, "CHAT/1 \(try sent(&c).id) SUCCESS 3 ann")
        answer(&c, "CHAT/1 \(try sent(&c).id) SUCCESS 2")
        #expect(c.result == .members(count: 2, names: [Username("ann")!]))
    }
}

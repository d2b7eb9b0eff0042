// TalkSession on virtual time against a server the test plays by hand:
// each test reads what the session sends and answers it with the datagrams
// chatd would (or would not) send.

import ChatCore
import Testing

private let server = Endpoint(.v4(0x7f00_0001), port: 7447)
private let t0 = Instant(nanoseconds: 1_000_000_000)
private let cookie: UInt64 = 0x0123_4567_89ab_cdef
private let cookieText = "0123456789abcdef"

private func name(_ text: String) -> Username { Username(text)! }

/// What the session prints for `Harness.push(id:seq:)` with its defaults.
private func bobSaysHi(_ seq: UInt64) -> TalkOutput {
    .message(ChatMessage(seq: seq, timeMilliseconds: 1_700_000_000_000, from: name("bob"), text: Array("hi".utf8)))
}

/// A session and the test's side of it.
private struct Harness {
    var session: TalkSession<SplitMix64>
    var now = t0

    init(attempts: Int = 3, keepalive: Duration = .seconds(25), hold: Duration = .seconds(1), batch: Bool = true) {
        session = TalkSession(
            server: server,
            settings: TalkSettings(
                requests: HandshakeSettings(timeout: .milliseconds(500), maxAttempts: attempts, backoff: 2, jitter: 0),
                keepalive: keepalive, hold: hold, batch: batch),
            random: SplitMix64(seed: 42))
    }

    /// Everything the session sent since the last call, parsed.
    mutating func sent() -> [ChatRequest] {
        var all: [ChatRequest] = []
        while let bytes = session.pollTransmit() {
            guard case .chat(let request) = RequestParse(bytes) else {
                Issue.record("the session sent something that is not a chat request: \(bytes)")
                continue
            }
            all.append(request)
        }
        return all
    }

    /// The one request sent since the last call, or a thrown failure.
    mutating func next() throws -> ChatRequest {
        let all = sent()
        guard all.count == 1 else { throw Failure("expected one request, got \(all)") }
        return all[0]
    }

    /// The last request sent since the last call.
    mutating func last() throws -> ChatRequest {
        guard let last = sent().last else { throw Failure("expected a request, got none") }
        return last
    }

    mutating func outputs() -> [TalkOutput] {
        var all: [TalkOutput] = []
        while let output = session.pollOutput() { all.append(output) }
        return all
    }

    mutating func notices() -> [TalkNotice] {
        outputs().compactMap { if case .notice(let notice) = $0 { notice } else { nil } }
    }

    mutating func printedSeqs() -> [UInt64] {
        outputs().compactMap { if case .message(let message) = $0 { message.seq } else { nil } }
    }

    mutating func reply(_ text: String) {
        session.handle(datagram: Array(text.utf8), from: server, now: now)
    }

    mutating func push(id: UInt32, seq: UInt64, from: String = "bob", text: String = "hi") {
        reply("CHAT/1 \(id) MESSAGE \(seq) 1700000000000 \(from) \(text)")
    }

    /// A BATCH push of several entries, one per line, each bob saying hi.
    mutating func push(id: UInt32, seqs: [UInt64]) {
        reply("CHAT/1 \(id) MESSAGE " + seqs.map { "\($0) 1700000000000 bob hi" }.joined(separator: "\n"))
    }

    /// The ACKs sent since the last call, as (push id, cumulative seq).
    mutating func acks() -> [Ack] {
        sent().compactMap { if case .ack(let id, let through) = $0 { Ack(id, through) } else { nil } }
    }

    mutating func input(_ line: String) { session.input(Array(line.utf8), now: now) }

    /// Moves time on by `duration`, firing every deadline on the way.
    mutating func advance(_ duration: Duration) {
        let end = now + duration
        while let deadline = session.nextTimeout(), deadline <= end {
            now = max(now, deadline)
            session.handleTimeout(now: now)
        }
        now = end
    }

    /// Plays a faithful server whose room ends at `last`, every message still
    /// in history, for `duration`, a second at a time: JOIN is answered with
    /// `last`, HISTORY with what follows its after_seq, and those messages
    /// are pushed again, as chatd does. Returns how many HISTORYs came.
    /// `window`: the BATCH window granted to a JOIN that asks for it (nil:
    /// a server without BATCH, which answers with two fields).
    @discardableResult
    mutating func serve(for duration: Duration, last: UInt64, window: Int? = nil) -> Int {
        var histories = 0
        let end = now + duration
        while now < end {
            advance(.seconds(1))
            for request in sent() {
                switch request {
                case .history(let id, _, let after):
                    histories += 1
                    reply("CHAT/1 \(id) SUCCESS \(after + 1) \(last)")
                    if after < last {
                        for seq in (after + 1)...last { push(id: 3_500_000_000 + UInt32(seq), seq: seq) }
                    }
                case .join(let id, _, let batch):
                    reply("CHAT/1 \(id) SUCCESS alice \(last)" + (batch ? window.map { " BATCH \($0)" } ?? "" : ""))
                default:
                    break
                }
            }
        }
        return histories
    }

    /// Started and joined with the cookie, the room's last seq `last`, and
    /// the "joined" WHO answered; everything sent or shown so far is read.
    /// `window`: the server grants BATCH with this window (nil: it answers
    /// in the basic format, as a server without BATCH would).
    static func joined(
        last: UInt64 = 5, attempts: Int = 3, hold: Duration = .seconds(1), window: Int? = nil
    ) throws -> Harness {
        var h = Harness(attempts: attempts, hold: hold)
        h.session.start(now: h.now)
        let join = try h.next()
        h.reply("CHAT/1 \(join.id) COOKIE \(cookieText)")
        let again = try h.next()
        h.reply("CHAT/1 \(again.id) SUCCESS alice \(last)" + (window.map { " BATCH \($0)" } ?? ""))
        let who = try h.next()
        h.reply("CHAT/1 \(who.id) SUCCESS 2 alice bob")
        _ = h.outputs()
        return h
    }
}

@Suite struct TalkSessionTests {
    // MARK: Joining and cookies

    @Test func joinTakesTheCookieAsANewAttemptThenSaysWhoJoined() throws {
        var h = Harness()
        h.session.start(now: h.now)
        let first = try h.next()
        guard case .join(let id1, 0, _) = first else { throw Failure("expected JOIN with no cookie, got \(first)") }
        h.advance(.milliseconds(400))
        h.reply("CHAT/1 \(id1) COOKIE \(cookieText)")
        let second = try h.next()
        guard case .join(let id2, cookie, _) = second else { throw Failure("expected JOIN with the cookie, got \(second)") }
        #expect(id2 != id1)
        // A new attempt, not a failure: it waits the first attempt's timeout, and
        // three more COOKIE-free timeouts would be needed to give up.
        #expect(h.session.nextTimeout() == h.now + .milliseconds(500))
        h.reply("CHAT/1 \(id2) SUCCESS alice 5")
        #expect(h.session.username == name("alice"))
        #expect(h.session.printed == 5)
        let who = try h.next()
        #expect(who == .who(id: who.id, cookie: cookie, after: nil))
        h.reply("CHAT/1 \(who.id) SUCCESS 3 alice bob carol")
        #expect(h.notices() == [.joined(name("alice"), online: 3)])
        // Later requests carry the cookie from the start.
        h.input("hello")
        guard case .say(_, cookie, _, _) = try h.next() else { throw Failure("SAY without the cookie") }
    }

    @Test func aCookieRefusedAgainCountsAsAFailedAttempt() throws {
        var h = Harness(attempts: 2)
        h.session.start(now: h.now)
        h.reply("CHAT/1 \(try h.next().id) COOKIE \(cookieText)")
        h.reply("CHAT/1 \(try h.next().id) COOKIE \(cookieText)")  // the one it carried: something is wrong
        let third = try h.next()
        #expect(third.cookie == cookie)
        h.reply("CHAT/1 \(third.id) COOKIE \(cookieText)")
        #expect(h.session.result == .unreachable(attempts: 2))
    }

    @Test func theFirstJoinUnansweredEndsTheSession() throws {
        var h = Harness(attempts: 3)
        h.session.start(now: h.now)
        h.advance(.seconds(10))
        #expect(h.sent().count == 3)
        #expect(h.session.result == .unreachable(attempts: 3))
        #expect(h.session.nextTimeout() == nil)
    }

    @Test func joinOfAnUnregisteredAddressEndsAsNotRegistered() throws {
        var h = Harness()
        h.session.start(now: h.now)
        h.reply("CHAT/1 \(try h.next().id) ERROR CLIENT_NOT_FOUND")
        #expect(h.session.result == .notRegistered)
    }

    @Test func aNewCookieForARequestThatCarriedOneJoinsAgainAtOnce() throws {
        var h = try Harness.joined()
        h.input("hello")
        let say = try h.next()
        // The server restarted: a new secret, and it forgot its members.
        h.reply("CHAT/1 \(say.id) COOKIE 00000000000000aa")
        let sent = h.sent()
        #expect(sent.count == 2)
        #expect(sent.allSatisfy { $0.cookie == 0xaa })
        #expect(sent.contains { if case .join = $0 { true } else { false } })
        #expect(sent.contains { if case .say(_, _, let token, _) = $0, case .say(_, _, token, _) = say { true } else { false } })
    }

    // MARK: Lines

    @Test func sayRetriesUnderTheClientRulesWithOneTokenAndFreshIDs() throws {
        var h = try Harness.joined(attempts: 4)
        h.input("hello there")
        var sent = [try h.next()]
        var waits: [Duration] = []
        for _ in 1..<4 {
            let before = h.now
            h.advance(try #require(h.session.nextTimeout()) - h.now)
            waits.append(h.now - before)
            sent.append(try h.next())
        }
        #expect(waits == [.milliseconds(500), .seconds(1), .seconds(2)])
        let tokens = sent.compactMap { if case .say(_, _, let token, _) = $0 { token } else { nil } }
        #expect(tokens.count == 4 && Set(tokens).count == 1)
        #expect(Set(sent.map(\.id)).count == 4)
        #expect(sent.allSatisfy { if case .say(_, _, _, let text) = $0 { text == Array("hello there".utf8) } else { false } })
        // A late answer to an earlier attempt is ignored; the current one counts.
        h.reply("CHAT/1 \(sent[1].id) SUCCESS 6")
        h.advance(.milliseconds(10))
        #expect(h.sent().isEmpty)
        h.reply("CHAT/1 \(sent[3].id) SUCCESS 6")
        h.advance(.seconds(4))
        #expect(h.notices().isEmpty)
    }

    @Test func eachLineHasItsOwnTokenAndWaitsForTheOneBefore() throws {
        var h = try Harness.joined()
        h.input("one")
        h.input("two")
        let first = try h.next()
        h.reply("CHAT/1 \(first.id) SUCCESS 6")
        let second = try h.next()
        guard case .say(_, _, let token1, let text1) = first, case .say(_, _, let token2, let text2) = second else {
            throw Failure("expected two SAYs")
        }
        #expect(text1 == Array("one".utf8) && text2 == Array("two".utf8))
        #expect(token1 != token2)
    }

    @Test func aLineThatRunsOutOfAttemptsIsUndeliveredWithTheLinesBehindIt() throws {
        var h = try Harness.joined(attempts: 2)
        h.input("one")
        h.input("two")
        _ = h.sent()
        h.advance(.milliseconds(1600))
        #expect(
            h.notices() == [
                .serverLost, .notDelivered(text: "one", reason: .noAnswer), .notDelivered(text: "two", reason: .noAnswer),
            ])
        // Lost, it keeps a JOIN going; once one is answered, it is back.
        let probe = try h.last()
        guard case .join = probe else { throw Failure("expected a JOIN probe, got \(probe)") }
        h.reply("CHAT/1 \(probe.id) SUCCESS alice 5")
        #expect(h.notices() == [.serverBack])
    }

    @Test func rateLimitedLinesWaitAndKeepTheirToken() throws {
        var h = try Harness.joined(attempts: 2)
        h.input("hello")
        let first = try h.next()
        h.reply("CHAT/1 \(first.id) ERROR RATE_LIMITED")
        h.reply("CHAT/1 \(first.id) ERROR RATE_LIMITED")  // a duplicate: ignored
        #expect(h.notices() == [.rateLimited])
        h.advance(.milliseconds(499))
        #expect(h.sent().isEmpty)
        h.advance(.milliseconds(1))
        let again = try h.next()
        guard case .say(_, _, let token1, _) = first, case .say(_, _, let token2, _) = again else {
            throw Failure("expected SAY twice")
        }
        #expect(token1 == token2)
        // Not counted as attempts: with max_attempts 2 a third send still comes.
        h.reply("CHAT/1 \(again.id) ERROR RATE_LIMITED")
        h.advance(.seconds(1))
        let third = try h.next()
        h.reply("CHAT/1 \(third.id) SUCCESS 6")
        #expect(h.notices().isEmpty)
    }

    @Test func aRefusedLineIsReportedAndTheNextGoes() throws {
        var h = try Harness.joined()
        h.input("one")
        h.input("two")
        h.reply("CHAT/1 \(try h.next().id) ERROR INVALID_MESSAGE ENCODING")
        #expect(h.notices() == [.notDelivered(text: "one", reason: .refused(.invalidMessage, detail: "ENCODING"))])
        guard case .say(_, _, _, let text) = try h.next() else { throw Failure("expected SAY") }
        #expect(text == Array("two".utf8))
    }

    @Test func linesOffTheRuleAreRefusedLocally() throws {
        var h = try Harness.joined()
        h.input(String(repeating: "x", count: 401))
        h.input("tab\there")
        h.input("")
        h.input(String(repeating: "é", count: 200))  // 400 bytes: fine
        #expect(h.notices() == [.lineTooLong(bytes: 401), .lineNotText])
        #expect(h.sent().count == 1)
    }

    @Test func commands() throws {
        var h = try Harness.joined()
        h.input("/help")
        h.input("/nope x")
        #expect(h.notices() == [.help, .unknownCommand("nope")])
        h.input("//who")
        guard case .say(_, _, _, let text) = try h.next() else { throw Failure("expected SAY") }
        #expect(text == Array("/who".utf8))
    }

    @Test func whoPagesWithAfterUntilItHasEveryName() throws {
        var h = try Harness.joined()
        h.input("/who")
        let page1 = try h.next()
        #expect(page1 == .who(id: page1.id, cookie: cookie, after: nil))
        h.reply("CHAT/1 \(page1.id) SUCCESS 3 alice Bob")
        let page2 = try h.next()
        #expect(page2 == .who(id: page2.id, cookie: cookie, after: name("Bob")))
        h.reply("CHAT/1 \(page2.id) SUCCESS 3 carol")
        #expect(h.notices() == [.members(count: 3, names: [name("alice"), name("Bob"), name("carol")])])
    }

    @Test func whoTypedBeforeTheJoinedLineFollowsIt() throws {
        var h = Harness()
        h.session.start(now: h.now)
        let join = try h.next()
        h.input("/who")
        #expect(h.sent().isEmpty)
        h.reply("CHAT/1 \(join.id) SUCCESS alice 0")
        let joinLine = try h.next()
        h.reply("CHAT/1 \(joinLine.id) SUCCESS 1 alice")
        let who = try h.next()
        #expect(who == .who(id: who.id, cookie: 0, after: nil))
        h.reply("CHAT/1 \(who.id) SUCCESS 1 alice")
        #expect(h.notices() == [.joined(name("alice"), online: 1), .members(count: 1, names: [name("alice")])])
    }

    // MARK: Messages

    @Test func everyPushIsAcknowledgedAndPrintedOnceInSeqOrder() throws {
        var h = try Harness.joined(last: 5)
        h.push(id: 1_111_111_111, seq: 7)
        h.push(id: 1_111_111_112, seq: 6)
        h.push(id: 1_111_111_112, seq: 6)  // a retransmission
        h.push(id: 1_111_111_113, seq: 5)  // older than the join
        #expect(
            h.sent() == [
                .ack(id: 1_111_111_111), .ack(id: 1_111_111_112), .ack(id: 1_111_111_112), .ack(id: 1_111_111_113),
            ])
        #expect(h.printedSeqs() == [6, 7])
        #expect(h.session.printed == 7)
    }

    @Test func aHoleIsFilledWithHistoryAfterTheHold() throws {
        var h = try Harness.joined(last: 5)
        h.push(id: 2_000_000_001, seq: 7)
        _ = h.sent()
        #expect(h.printedSeqs().isEmpty)
        h.advance(.milliseconds(999))
        #expect(h.sent().isEmpty)
        h.advance(.milliseconds(1))
        let history = try h.next()
        #expect(history == .history(id: history.id, cookie: cookie, afterSeq: 5))
        h.reply("CHAT/1 \(history.id) SUCCESS 6 7")
        h.push(id: 2_000_000_002, seq: 6)
        h.push(id: 2_000_000_003, seq: 7)
        #expect(h.printedSeqs() == [6, 7])
        h.advance(.seconds(10))
        #expect(!h.sent().contains { if case .history = $0 { true } else { false } })
    }

    @Test func aHoleFilledByTheServersOwnRetransmissionNeedsNoHistory() throws {
        var h = try Harness.joined(last: 5)
        h.push(id: 2_000_000_001, seq: 7)
        h.advance(.milliseconds(900))
        h.push(id: 2_000_000_002, seq: 6)
        h.advance(.seconds(5))
        #expect(h.sent() == [.ack(id: 2_000_000_001), .ack(id: 2_000_000_002)])
        #expect(h.printedSeqs() == [6, 7])
    }

    @Test func theKeepaliveFetchesTheGapWithHistory() throws {
        var h = try Harness.joined(last: 5)
        h.advance(.seconds(25))
        let join = try h.next()
        #expect(join == .join(id: join.id, cookie: cookie, batch: true))
        h.reply("CHAT/1 \(join.id) SUCCESS alice 9")
        let history = try h.next()
        #expect(history == .history(id: history.id, cookie: cookie, afterSeq: 5))
        h.reply("CHAT/1 \(history.id) SUCCESS 6 9")
        for seq in UInt64(6)...9 { h.push(id: 3_000_000_000 + UInt32(seq), seq: seq) }
        #expect(h.printedSeqs() == [6, 7, 8, 9])
        // The next keepalive comes keepalive_s after this one's answer.
        h.advance(.seconds(24))
        #expect(!h.sent().contains { if case .join = $0 { true } else { false } })
        h.advance(.seconds(1))
        #expect(h.sent().contains { if case .join = $0 { true } else { false } })
    }

    @Test func aGapHistoryNoLongerHoldsIsOneNotice() throws {
        var h = try Harness.joined(last: 5)
        h.advance(.seconds(25))
        h.reply("CHAT/1 \(try h.next().id) SUCCESS alice 12")
        let history = try h.next()
        h.reply("CHAT/1 \(history.id) SUCCESS 10 12")
        h.push(id: 3_000_000_010, seq: 10)
        h.push(id: 3_000_000_011, seq: 11)
        h.push(id: 3_000_000_012, seq: 12)
        let outputs = h.outputs()
        #expect(outputs.first == .notice(.missed(first: 6, last: 9)))
        let seqs: [UInt64] = outputs.dropFirst().compactMap { if case .message(let m) = $0 { m.seq } else { nil } }
        #expect(seqs == [10, 11, 12])
    }

    @Test func aHoleThatHistoryNeverFillsIsGivenUpAfterItsRounds() throws {
        var h = try Harness.joined(last: 5)
        h.push(id: 2_000_000_001, seq: 7)
        var rounds = 0
        for _ in 0..<40 {
            h.advance(.seconds(1))
            for request in h.sent() {
                switch request {
                case .history(let id, _, 5):
                    rounds += 1
                    h.reply("CHAT/1 \(id) SUCCESS 6 7")  // claims 6 exists, never sends it
                case .join(let id, _, _):
                    h.reply("CHAT/1 \(id) SUCCESS alice 7")
                default:
                    break
                }
            }
        }
        #expect(rounds == 3)
        #expect(h.outputs() == [.notice(.missed(first: 6, last: 6)), .message(ChatMessage(
            seq: 7, timeMilliseconds: 1_700_000_000_000, from: name("bob"), text: Array("hi".utf8)))])
    }

    @Test func historyFromADroppedMemberJoinsAgain() throws {
        var h = try Harness.joined(last: 5)
        h.push(id: 2_000_000_001, seq: 7)
        h.advance(.seconds(1))
        let history = try h.last()
        h.reply("CHAT/1 \(history.id) ERROR NOT_JOINED")
        let join = try h.next()
        guard case .join = join else { throw Failure("expected JOIN, got \(join)") }
        h.reply("CHAT/1 \(join.id) SUCCESS alice 7")
        let again = try h.next()
        #expect(again == .history(id: again.id, cookie: cookie, afterSeq: 5))
    }

    // MARK: Forged pushes
    //
    // Anyone who can send a datagram with the server's address and the
    // client's port can send a push; its seq is a claim, not a fact.

    @Test func aPushWithASeqPastMaxSeqIsNotAPush() throws {
        var h = try Harness.joined(last: 5)
        h.push(id: 1_234_567_890, seq: .max)
        // Dropped by the codec: not acknowledged, not held.
        #expect(h.sent().isEmpty)
        h.serve(for: .seconds(60), last: 5)
        #expect(h.outputs().isEmpty)
        h.push(id: 1_234_567_891, seq: 6)
        #expect(h.printedSeqs() == [6])
    }

    @Test(arguments: [UInt64(1) << 62, 5 + 1_000_000_000, maxSeq] as [UInt64])
    func aForgedSeqFarAheadNeitherTrapsNorSilencesTheRoom(forged: UInt64) throws {
        var h = try Harness.joined(last: 5)
        h.push(id: 1_234_567_890, seq: forged)
        #expect(h.sent() == [.ack(id: 1_234_567_890)])
        // Being behind it asks HISTORY, whose answer says the room ends at 5:
        // nothing is skipped, nothing is reported missed, nothing printed.
        #expect(h.serve(for: .seconds(120), last: 5) >= 1)
        #expect(h.outputs().isEmpty)
        #expect(h.session.printed == 5)
        h.push(id: 1_234_567_891, seq: 6)
        h.push(id: 1_234_567_892, seq: 7)
        #expect(h.printedSeqs() == [6, 7])
    }

    @Test func realMessagesAroundAForgedSeqArePrintedAndNothingIsMissed() throws {
        var h = try Harness.joined(last: 5)
        h.push(id: 1_234_567_890, seq: 5 + 1_000_000_000)  // forged
        h.push(id: 1_234_567_891, seq: 7)  // real; 6 was lost on the way
        h.serve(for: .seconds(120), last: 7)
        #expect(h.outputs() == [bobSaysHi(6), bobSaysHi(7)])
        h.push(id: 1_234_567_892, seq: 8)
        #expect(h.outputs() == [bobSaysHi(8)])
    }

    @Test func aHoleIsReportedMissedOnlyAsFarAsAnAnswerProvedMessagesExist() throws {
        var h = try Harness.joined(last: 5)
        h.push(id: 1_234_567_890, seq: 9)  // a forged claim that 6 to 8 exist
        var histories = 0
        for _ in 0..<60 {
            h.advance(.seconds(1))
            for request in h.sent() {
                switch request {
                case .history(let id, _, _):
                    // An answer that proves 6 exists and nothing past it, but
                    // whose push of 6 is lost every time.
                    histories += 1
                    h.reply("CHAT/1 \(id) SUCCESS 6 6")
                case .join(let id, _, _):
                    h.reply("CHAT/1 \(id) SUCCESS alice 6")
                default:
                    break
                }
            }
        }
        #expect(histories == 3)
        #expect(h.outputs() == [.notice(.missed(first: 6, last: 6))])
        #expect(h.session.printed == 6)
        h.push(id: 1_234_567_891, seq: 7)
        #expect(h.printedSeqs() == [7])
    }

    @Test func heldPushesStayBoundedUnderAFloodOfForgedSeqs() throws {
        var h = try Harness.joined(last: 5)
        var random = SplitMix64(seed: 7)
        let forged = (0..<10_000).map { 1_000_000 + UInt64($0) * 1_000 }.shuffled(using: &random)
        for (index, seq) in forged.enumerated() { h.push(id: 1_000_000_000 + UInt32(index), seq: seq) }
        // Every copy is still acknowledged, so the server stops retransmitting.
        #expect(h.sent().count == forged.count)
        #expect(h.session.heldCount == maxHeldPushes)
        // The nearest are kept: a real 7 displaces the farthest forged one,
        // and once 6 arrives both are printed.
        h.push(id: 999_999_997, seq: 7)
        #expect(h.session.heldCount == maxHeldPushes)
        h.push(id: 999_999_996, seq: 6)
        #expect(h.printedSeqs() == [6, 7])
        #expect(h.session.heldCount <= maxHeldPushes)
    }

    // MARK: The BATCH format

    @Test func everyJoinAsksForBatchTheKeepaliveToo() throws {
        var h = Harness()
        h.session.start(now: h.now)
        let first = try h.next()
        #expect(first == .join(id: first.id, cookie: 0, batch: true))
        h.reply("CHAT/1 \(first.id) COOKIE \(cookieText)")
        let again = try h.next()
        #expect(again == .join(id: again.id, cookie: cookie, batch: true))
        h.reply("CHAT/1 \(again.id) SUCCESS alice 5 BATCH 8")
        #expect(h.session.batchWindow == 8)
        h.reply("CHAT/1 \(try h.next().id) SUCCESS 1 alice")
        h.advance(.seconds(25))
        let keepalive = try h.next()
        #expect(keepalive == .join(id: keepalive.id, cookie: cookie, batch: true))
    }

    @Test func aJoinAnswerWithABadBatchFieldIsNoAnswer() throws {
        var h = Harness()
        h.session.start(now: h.now)
        let join = try h.next()
        h.reply("CHAT/1 \(join.id) SUCCESS alice 5 BATCH x")
        h.reply("CHAT/1 \(join.id) SUCCESS alice 5 WINDOW 8")
        h.reply("CHAT/1 \(join.id) SUCCESS alice 5 BATCH")
        #expect(h.session.username == nil)
        h.reply("CHAT/1 \(join.id) SUCCESS alice 5 BATCH 16")
        #expect(h.session.username == name("alice"))
        #expect(h.session.batchWindow == 16)
    }

    @Test func withoutBatchInTheSettingsJoinAsksTheBasicFormat() throws {
        var h = Harness(batch: false)
        h.session.start(now: h.now)
        let join = try h.next()
        #expect(join == .join(id: join.id, cookie: 0, batch: false))
        h.reply("CHAT/1 \(join.id) SUCCESS alice 5")
        #expect(h.session.batchWindow == nil)
        h.reply("CHAT/1 \(try h.next().id) SUCCESS 1 alice")
        h.push(id: 2_000_000_006, seq: 6)
        #expect(h.acks() == [Ack(2_000_000_006)])
    }

    @Test func aBatchGrantAcknowledgesOnceForFourPushes() throws {
        var h = try Harness.joined(last: 5, window: 8)
        for seq in UInt64(6)...8 { h.push(id: 2_000_000_000 + UInt32(seq), seq: seq) }
        #expect(h.acks().isEmpty)
        #expect(h.printedSeqs() == [6, 7, 8])
        // The fourth: min(4, 8 / 2) pushes wait, so the ACK goes now, naming
        // the newest push and covering every seq up to the last printed.
        h.push(id: 2_000_000_009, seq: 9)
        #expect(h.acks() == [Ack(2_000_000_009, 9)])
        // Nothing waits any more: no deadline of its own.
        h.advance(.milliseconds(50))
        #expect(h.acks().isEmpty)
    }

    @Test(arguments: [(1, 1), (2, 1), (3, 1), (6, 3), (8, 4), (1024, 4)])
    func theAckCountIsHalfTheWindowAtMostFour(window: Int, every: Int) throws {
        #expect(batchAckEvery(window: window) == every)
        var h = try Harness.joined(last: 5, window: window)
        for seq in UInt64(6)..<UInt64(6 + every - 1) { h.push(id: 2_000_000_000 + UInt32(seq), seq: seq) }
        #expect(h.acks().isEmpty)
        let last = UInt64(5 + every)
        h.push(id: 2_000_000_000 + UInt32(last), seq: last)
        #expect(h.acks() == [Ack(2_000_000_000 + UInt32(last), last)])
    }

    @Test func aDelayedAckGoesTenMillisecondsAfterTheOldestPush() throws {
        var h = try Harness.joined(last: 5, window: 8)
        let first = h.now
        h.push(id: 2_000_000_006, seq: 6)
        #expect(h.session.nextTimeout() == first + batchAckDelay)
        h.advance(.milliseconds(6))
        h.push(id: 2_000_000_007, seq: 7)
        // The second push does not move the deadline: it is the oldest's.
        #expect(h.session.nextTimeout() == first + batchAckDelay)
        h.advance(.microseconds(3_999))
        #expect(h.acks().isEmpty)
        h.advance(.microseconds(1))
        #expect(h.acks() == [Ack(2_000_000_007, 7)])
        #expect(h.printedSeqs() == [6, 7])
        // The next push starts a new wait.
        h.advance(.seconds(1))
        h.push(id: 2_000_000_008, seq: 8)
        h.advance(.milliseconds(9))
        #expect(h.acks().isEmpty)
        h.advance(.milliseconds(1))
        #expect(h.acks() == [Ack(2_000_000_008, 8)])
    }

    @Test func aDuplicatePushIsAcknowledgedAtOnce() throws {
        var h = try Harness.joined(last: 5, window: 8)
        h.push(id: 2_000_000_006, seq: 6)
        #expect(h.acks().isEmpty)
        // The server sent it again: our ACK was lost or is late. Say so now.
        h.push(id: 2_000_000_006, seq: 6)
        #expect(h.acks() == [Ack(2_000_000_006, 6)])
        // A copy of a push already acknowledged, or older than the join.
        h.push(id: 2_000_000_005, seq: 5)
        #expect(h.acks() == [Ack(2_000_000_005, 6)])
        #expect(h.printedSeqs() == [6])
        #expect(h.session.nextTimeout().map { $0 > h.now + .seconds(1) } == true)
    }

    @Test func aPushOutOfOrderIsAcknowledgedAtOnceWithTheContiguousSeq() throws {
        var h = try Harness.joined(last: 5, window: 8)
        h.push(id: 2_000_000_006, seq: 6)
        // 7 is lost on the way: 8 comes out of order, and its ACK covers
        // what came in order (up to 6) with it, at once.
        h.push(id: 2_000_000_008, seq: 8)
        #expect(h.acks() == [Ack(2_000_000_008, 6)])
        #expect(h.printedSeqs() == [6])
        // 7 retransmitted fills the hole: in order again, so it waits.
        h.advance(.milliseconds(300))
        h.push(id: 2_000_000_007, seq: 7)
        #expect(h.acks().isEmpty)
        #expect(h.printedSeqs() == [7, 8])
        h.advance(batchAckDelay)
        #expect(h.acks() == [Ack(2_000_000_007, 8)])
        // A held push arriving again is a duplicate too.
        h.push(id: 2_000_000_010, seq: 10)
        h.push(id: 2_000_000_010, seq: 10)
        #expect(h.acks() == [Ack(2_000_000_010, 8), Ack(2_000_000_010, 8)])
    }

    @Test func aBatchPushIsPrintedEntryByEntryAndOverlapsAreNotDuplicates() throws {
        var h = try Harness.joined(last: 5, window: 8)
        h.push(id: 2_000_000_001, seqs: [6, 7, 8])
        #expect(h.printedSeqs() == [6, 7, 8])
        #expect(h.acks().isEmpty)
        // After a HISTORY the server may push from an earlier seq again: a
        // push with something new is not a duplicate, and waits.
        h.push(id: 2_000_000_002, seqs: [7, 8, 9, 10])
        #expect(h.printedSeqs() == [9, 10])
        #expect(h.acks().isEmpty)
        h.advance(batchAckDelay)
        #expect(h.acks() == [Ack(2_000_000_002, 10)])
        h.push(id: 2_000_000_002, seqs: [7, 8, 9, 10])
        #expect(h.acks() == [Ack(2_000_000_002, 10)])
        #expect(h.outputs().isEmpty)
    }

    @Test func aBatchPushWithAHoleInsideItIsHeldAndFilledWithHistory() throws {
        var h = try Harness.joined(last: 5, window: 8)
        // 7 and 8 missing from the middle (a server's history after a crash
        // without a journal has such gaps, and a forger can write anything).
        h.push(id: 2_000_000_001, seqs: [6, 9, 10])
        #expect(h.printedSeqs() == [6])
        #expect(h.session.heldCount == 2)
        h.advance(batchAckDelay)
        #expect(h.acks() == [Ack(2_000_000_001, 6)])
        h.advance(.seconds(1) - batchAckDelay)
        let history = try h.next()
        #expect(history == .history(id: history.id, cookie: cookie, afterSeq: 6))
        h.reply("CHAT/1 \(history.id) SUCCESS 7 10")
        h.push(id: 2_000_000_002, seqs: [7, 8, 9, 10])
        #expect(h.printedSeqs() == [7, 8, 9, 10])
        h.advance(batchAckDelay)
        #expect(h.acks() == [Ack(2_000_000_002, 10)])
    }

    @Test func aHoleHistoryNoLongerHoldsCountsInTheAckSeq() throws {
        var h = try Harness.joined(last: 5, window: 8)
        h.advance(.seconds(25))
        h.reply("CHAT/1 \(try h.next().id) SUCCESS alice 12 BATCH 8")
        let history = try h.next()
        h.reply("CHAT/1 \(history.id) SUCCESS 10 12")
        #expect(h.notices() == [.missed(first: 6, last: 9)])
        // Printing goes on at 10: the ACK says every seq up to 12 is done
        // with, the ones given up included.
        h.push(id: 2_000_000_010, seqs: [10, 11, 12])
        h.advance(batchAckDelay)
        #expect(h.acks() == [Ack(2_000_000_010, 12)])
    }

    @Test func aForgedSeqFarAheadInsideABatchIsOnlyAClaim() throws {
        var h = try Harness.joined(last: 5, window: 8)
        h.push(id: 1_234_567_890, seqs: [6, 5 + 1_000_000_000])
        #expect(h.printedSeqs() == [6])
        // HISTORY's answer says the room ends at 6: nothing skipped, nothing
        // reported missed, and the session is not stuck behind the claim.
        #expect(h.serve(for: .seconds(120), last: 6, window: 8) >= 1)
        #expect(h.outputs().isEmpty)
        #expect(h.session.printed == 6)
        #expect(h.session.heldCount == 0)
        h.push(id: 1_234_567_891, seqs: [7, 8])
        #expect(h.printedSeqs() == [7, 8])
    }

    @Test func aServerWithoutBatchAnswersMalformedAndIsJoinedInTheBasicFormat() throws {
        var h = Harness()
        h.session.start(now: h.now)
        let asked = try h.next()
        #expect(asked == .join(id: asked.id, cookie: 0, batch: true))
        // chatd before BATCH: the extra field is off its grammar, refused
        // before the cookie is even looked at.
        h.reply("CHAT/1 \(asked.id) ERROR MALFORMED")
        let basic = try h.next()
        #expect(basic == .join(id: basic.id, cookie: 0, batch: false))
        h.reply("CHAT/1 \(basic.id) COOKIE \(cookieText)")
        let again = try h.next()
        #expect(again == .join(id: again.id, cookie: cookie, batch: false))
        h.reply("CHAT/1 \(again.id) SUCCESS alice 5")
        #expect(h.session.result == nil)
        #expect(h.session.batchWindow == nil)
        h.reply("CHAT/1 \(try h.next().id) SUCCESS 1 alice")
        #expect(h.notices() == [.joined(name("alice"), online: 1)])
        h.push(id: 2_000_000_006, seq: 6)
        #expect(h.acks() == [Ack(2_000_000_006)])
        // The keepalive does not ask again: that server will not change its mind.
        h.advance(.seconds(25))
        let keepalive = try h.next()
        #expect(keepalive == .join(id: keepalive.id, cookie: cookie, batch: false))
        h.reply("CHAT/1 \(keepalive.id) SUCCESS alice 6")
        // A renewed cookie means the server restarted, perhaps as a newer
        // chatd: the JOIN that follows asks for BATCH again.
        h.input("hello")
        let say = try h.next()
        h.reply("CHAT/1 \(say.id) COOKIE 00000000000000aa")
        let sent = h.sent()
        #expect(sent.contains { $0 == .join(id: $0.id, cookie: 0xaa, batch: true) })
    }

    @Test func malformedToABasicJoinStillEndsTheSession() throws {
        var h = Harness(batch: false)
        h.session.start(now: h.now)
        h.reply("CHAT/1 \(try h.next().id) ERROR MALFORMED")
        #expect(h.session.result == .rejected(.malformed, detail: nil))
    }

    @Test func aTwoFieldAnswerToABatchJoinKeepsPerPushAcks() throws {
        var h = try Harness.joined(last: 5, window: 8)
        h.push(id: 2_000_000_006, seq: 6)
        // The keepalive's answer takes BATCH away: the ACK that waited goes
        // out at once, and from then on every push has its own.
        h.advance(.seconds(25) - .milliseconds(1))
        #expect(h.acks() == [Ack(2_000_000_006, 6)])
        h.advance(.milliseconds(1))
        let keepalive = try h.next()
        h.push(id: 2_000_000_007, seq: 7)
        h.reply("CHAT/1 \(keepalive.id) SUCCESS alice 7")
        #expect(h.acks() == [Ack(2_000_000_007, 7)])
        #expect(h.session.batchWindow == nil)
        h.push(id: 2_000_000_008, seq: 8)
        #expect(h.acks() == [Ack(2_000_000_008)])
    }

    @Test func pushesBeforeTheJoinAnswerAreAcknowledgedOneByOne() throws {
        var h = Harness()
        h.session.start(now: h.now)
        let join = try h.next()
        // Overtook the JOIN's answer: the format is not known yet.
        h.push(id: 2_000_000_006, seq: 6)
        #expect(h.acks() == [Ack(2_000_000_006)])
        h.reply("CHAT/1 \(join.id) SUCCESS alice 5 BATCH 8")
        #expect(h.printedSeqs() == [6])
    }

    @Test func thePushThatLetsTheSessionLeaveIsAcknowledgedBeforeTheLeave() throws {
        var h = try Harness.joined(last: 5, window: 8)
        h.input("bye")
        let say = try h.next()
        h.session.endOfInput(now: h.now)
        h.reply("CHAT/1 \(say.id) SUCCESS 6")
        // Its own message back: nothing more to wait for.
        h.push(id: 4_000_000_006, seqs: [6])
        let sent = h.sent()
        #expect(sent.count == 2)
        #expect(sent.first == .ack(id: 4_000_000_006, through: 6))
        guard case .leave? = sent.last else { throw Failure("expected LEAVE last, got \(sent)") }
    }

    @Test func leavingSendsTheAckThatWaited() throws {
        var h = try Harness.joined(last: 5, window: 8)
        h.push(id: 2_000_000_006, seq: 6)
        h.input("/quit")
        let sent = h.sent()
        #expect(sent.count == 2)
        #expect(sent.first == .ack(id: 2_000_000_006, through: 6))
        let leave = try #require(sent.last)
        guard case .leave = leave else { throw Failure("expected LEAVE, got \(leave)") }
        h.reply("CHAT/1 \(leave.id) SUCCESS alice")
        #expect(h.session.result == .left(undelivered: 0))
    }

    // MARK: Server lost and back

    @Test func serverLostIsSaidOnceAndBackWhenAnAnswerComes() throws {
        var h = try Harness.joined(attempts: 2)
        h.advance(.seconds(25))
        h.advance(.seconds(1.5))  // the keepalive runs out
        #expect(h.notices() == [.serverLost])
        h.input("hello")  // a line while lost is tried as usual
        h.advance(.seconds(20))  // probes and the line run out again and again
        #expect(h.notices() == [.notDelivered(text: "hello", reason: .noAnswer)])
        #expect(h.session.isServerLost)
        let probe = try h.last()
        h.reply("CHAT/1 \(probe.id) SUCCESS alice 5")
        #expect(h.notices() == [.serverBack])
        #expect(!h.session.isServerLost)
    }

    // MARK: Ending

    @Test func endOfInputWaitsForEveryLineThenLeavesWithZero() throws {
        var h = try Harness.joined(last: 5)
        h.input("bye")
        let say = try h.next()
        h.session.endOfInput(now: h.now)
        #expect(h.sent().isEmpty)
        h.reply("CHAT/1 \(say.id) SUCCESS 6")
        // Its own message has not come back yet: it waits for it.
        #expect(h.sent().isEmpty)
        h.push(id: 4_000_000_006, seq: 6, from: "alice", text: "bye")
        let sent = h.sent()
        #expect(sent.count == 2)
        let leave = try #require(sent.last)
        #expect(leave == .leave(id: leave.id, cookie: cookie))
        h.reply("CHAT/1 \(leave.id) SUCCESS alice")
        #expect(h.session.result == .left(undelivered: 0))
    }

    @Test func endOfInputWithAnUndeliveredLineLeavesWithItsCount() throws {
        var h = try Harness.joined(attempts: 2)
        h.input("lost")
        h.session.endOfInput(now: h.now)
        h.advance(.seconds(2))
        // Nobody answers: LEAVE goes once and the session ends at once.
        #expect(h.sent().contains { if case .leave = $0 { true } else { false } })
        #expect(h.session.result == .left(undelivered: 1))
    }

    @Test func endOfInputBeforeTheJoinIsAnsweredSendsTheLinesAfterIt() throws {
        var h = Harness()
        h.session.start(now: h.now)
        let join = try h.next()
        h.input("early")
        h.session.endOfInput(now: h.now)
        #expect(h.sent().isEmpty)
        h.reply("CHAT/1 \(join.id) SUCCESS alice 0")
        let sent = h.sent()
        #expect(sent.contains { if case .say = $0 { true } else { false } })
        #expect(!sent.contains { if case .leave = $0 { true } else { false } })
    }

    @Test func quitLeavesAtOnce() throws {
        var h = try Harness.joined()
        h.input("pending")
        _ = h.sent()
        h.session.quit(now: h.now)
        let leave = try h.next()
        guard case .leave = leave else { throw Failure("expected LEAVE, got \(leave)") }
        #expect(!h.session.acceptsInput)
        h.reply("CHAT/1 \(leave.id) ERROR NOT_JOINED")
        #expect(h.session.result == .interrupted)
        #expect(h.session.nextTimeout() == nil)
    }

    @Test func slashQuitEndsLikeTheEndOfInput() throws {
        var h = try Harness.joined()
        h.input("/quit")
        h.input("ignored")
        let leave = try h.next()
        h.reply("CHAT/1 \(leave.id) SUCCESS alice")
        #expect(h.session.result == .left(undelivered: 0))
    }

    @Test func strayAndLateDatagramsChangeNothing() throws {
        var h = try Harness.joined()
        h.reply("CHAT/1 12345 SUCCESS 1")
        h.reply("garbage")
        h.session.handle(
            datagram: Array("CHAT/1 1 MESSAGE 6 1 eve x".utf8), from: Endpoint(.v4(0x7f00_0009), port: 7447),
            now: h.now)
        #expect(h.sent().isEmpty)
        #expect(h.outputs().isEmpty)
    }
}

/// An ACK as the tests compare it: the push id, and the seq of a cumulative one.
struct Ack: Equatable, CustomStringConvertible {
    let id: UInt32
    let through: UInt64?
    init(_ id: UInt32, _ through: UInt64? = nil) {
        self.id = id
        self.through = through
    }
    var description: String { "ACK \(id)" + (through.map { " \($0)" } ?? "") }
}

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

import ChatCore
import Testing

private let server = Endpoint(.v4(0x7f00_0001), port: 7447)
private let alice = Username("alice")!
private let t0 = Instant(nanoseconds: 1_000_000_000)

private func machine(
    _ goal: HandshakeGoal, attempts: Int = 5, backoff: Double = 2.0, jitter: Double = 0, seed: UInt64 = 1
) -> Handshake<SplitMix64> {
    Handshake(
        goal: goal, server: server,
        settings: HandshakeSettings(timeout: .milliseconds(500), maxAttempts: attempts, backoff: backoff, jitter: jitter),
        random: SplitMix64(seed: seed))
}

/// The request a list of actions sends (exactly one is expected).
private func sent(_ actions: [HandshakeAction]) -> Request? {
    let requests = actions.compactMap { action -> Request? in
        guard case .send(let bytes) = action, case .request(let request) = RequestParse(bytes) else { return nil }
        return request
    }
    return requests.count == 1 ? requests[0] : nil
}

private func reply(_ response: Response) -> [UInt8] { response.bytes }

@Suite struct HandshakeTests {
    @Test func connectSucceedsOnFirstReply() throws {
        var m = machine(.connect)
        let actions = m.start(now: t0)
        let request = try #require(sent(actions))
        guard case .connect = request else { Issue.record("expected CONNECT, got \(request)"); return }
        #expect(actions.last == .armTimer(t0 + .milliseconds(500)))
        let done = m.received(reply(.success(id: request.id, username: alice)), from: server, now: t0 + .milliseconds(3))
        #expect(done == [.finished(.success(alice))])
        #expect(m.result == .success(alice))
        #expect(m.deadline == nil)
    }

    @Test func retriesBackOffWithAFreshIDEachTimeThenGiveUp() throws {
        var m = machine(.connect)
        var ids: [UInt32] = []
        var now = t0
        var actions = m.start(now: now)
        var waits: [Duration] = []
        while case .armTimer(let deadline)? = actions.last {
            ids.append(try #require(sent(actions)).id)
            waits.append(deadline - now)
            now = deadline
            actions = m.timerFired(now: now)
        }
        #expect(waits == [500, 1000, 2000, 4000, 8000].map { .milliseconds($0) })
        #expect(Set(ids).count == 5)
        #expect(actions == [.finished(.unreachable(attempts: 5))])
    }

    @Test func backoffOneGivesTheDesignNotesFixedTimeout() {
        let settings = HandshakeSettings(timeout: .milliseconds(300), maxAttempts: 4, backoff: 1.0)
        #expect((1...4).map { settings.wait(forAttempt: $0) } == Array(repeating: .milliseconds(300), count: 4))
    }

    @Test func waitsAreCapped() {
        let settings = HandshakeSettings(timeout: .seconds(1), maxAttempts: 100, backoff: 10, maxWait: .seconds(60))
        #expect(settings.wait(forAttempt: 100) == .seconds(60))
        #expect(settings.wait(forAttempt: 2) == .seconds(10))
    }

    @Test(arguments: 1...20)
    func jitterOnlyLengthensWaitsAndByAtMostItsFraction(seed: Int) throws {
        var m = machine(.connect, jitter: 0.1, seed: UInt64(seed))
        guard case .armTimer(let deadline)? = m.start(now: t0).last else { Issue.record("no timer"); return }
        let wait = deadline - t0
        #expect(wait >= .milliseconds(500) && wait < .milliseconds(550))
    }

    @Test func earlyTimerDoesNotStartAnotherAttempt() {
        var m = machine(.connect)
        _ = m.start(now: t0)
        #expect(m.timerFired(now: t0 + .milliseconds(100)) == [.armTimer(t0 + .milliseconds(500))])
    }

    @Test func lateReplyToAnEarlierAttemptIsIgnored() throws {
        var m = machine(.connect)
        let first = try #require(sent(m.start(now: t0)))
        let second = try #require(sent(m.timerFired(now: t0 + .milliseconds(500))))
        #expect(second.id != first.id)
        let late = m.received(reply(.error(id: first.id, reason: .clientNotFound)), from: server, now: t0 + .milliseconds(600))
        #expect(late.isEmpty)
        #expect(m.deadline == t0 + .milliseconds(1500))
        let onTime = m.received(reply(.success(id: second.id, username: alice)), from: server, now: t0 + .milliseconds(700))
        #expect(onTime == [.finished(.success(alice))])
    }

    @Test(arguments: [
        Endpoint(.v4(0x7f00_0001), port: 7448), Endpoint(.v4(0x7f00_0002), port: 7447), Endpoint(.loopbackIPv6, port: 7447),
    ])
    func repliesFromAnotherEndpointAreIgnored(stranger: Endpoint) throws {
        var m = machine(.connect)
        let request = try #require(sent(m.start(now: t0)))
        #expect(m.received(reply(.success(id: request.id, username: alice)), from: stranger, now: t0).isEmpty)
        #expect(m.result == nil)
    }

    @Test func garbageIsIgnored() throws {
        var m = machine(.connect)
        _ = m.start(now: t0)
        for junk in ["", "hello", "CHAT/1 x SUCCESS a", "CHAT/1 1 SUCCESS"] {
            #expect(m.received(Array(junk.utf8), from: server, now: t0).isEmpty)
        }
        #expect(m.deadline != nil)
    }

    @Test func joinIntroducesWhenUnknownThenConnectsAgain() throws {
        var m = machine(.join(alice))
        let connect = try #require(sent(m.start(now: t0)))
        let introduce = try #require(sent(m.received(reply(.error(id: connect.id, reason: .clientNotFound)), from: server, now: t0)))
        #expect(introduce == .introduce(id: introduce.id, username: alice))
        #expect(introduce.id != connect.id)
        let again = try #require(sent(m.received(reply(.success(id: introduce.id, username: alice)), from: server, now: t0)))
        guard case .connect = again else { Issue.record("expected CONNECT, got \(again)"); return }
        let done = m.received(reply(.success(id: again.id, username: alice)), from: server, now: t0)
        #expect(done == [.finished(.success(alice))])
    }

    @Test func joinOfAKnownClientFinishesWithTheServersName() throws {
        var m = machine(.join(alice))
        let connect = try #require(sent(m.start(now: t0)))
        let bob = Username("bob")!
        #expect(m.received(reply(.success(id: connect.id, username: bob)), from: server, now: t0) == [.finished(.success(bob))])
    }

    @Test func introduceRetriesWhenTheServerConfirmsAnotherName() throws {
        var m = machine(.introduce(alice))
        let first = try #require(sent(m.start(now: t0)))
        let now = t0 + .milliseconds(10)
        let retry = m.received(reply(.success(id: first.id, username: Username("mallory")!)), from: server, now: now)
        let second = try #require(sent(retry))
        #expect(second == .introduce(id: second.id, username: alice))
        #expect(second.id != first.id)
        #expect(retry.last == .armTimer(now + .milliseconds(1000)))  // it is attempt 2
        #expect(m.received(reply(.success(id: second.id, username: alice)), from: server, now: now) == [.finished(.success(alice))])
    }

    @Test func mismatchesUseUpAttempts() throws {
        var m = machine(.introduce(alice), attempts: 3)
        var request = try #require(sent(m.start(now: t0)))
        let other = Username("mallory")!
        for _ in 1..<3 {
            request = try #require(sent(m.received(reply(.success(id: request.id, username: other)), from: server, now: t0)))
        }
        let last = m.received(reply(.success(id: request.id, username: other)), from: server, now: t0)
        #expect(last == [.finished(.unexpectedUsername(expected: alice, got: other))])
    }

    @Test(arguments: [
        (Response.error(id: 0, reason: .invalidUsername, detail: "TAKEN"), HandshakeResult.usernameTaken(alice)),
        (.error(id: 0, reason: .invalidUsername), .usernameTaken(alice)),
        (.error(id: 0, reason: .invalidUsername, detail: "SYNTAX"), .usernameInvalid(alice)),
        (.error(id: 0, reason: .serverFull), .serverFull),
        (.error(id: 0, reason: .malformed), .rejected(.malformed, detail: nil)),
        (.error(id: 0, reason: ErrorReason(rawValue: "NEW_THING"), detail: "X"), .rejected(ErrorReason(rawValue: "NEW_THING"), detail: "X")),
    ])
    func joinStopsOnIntroduceErrors(response: Response, expected: HandshakeResult) throws {
        var m = machine(.join(alice))
        let connect = try #require(sent(m.start(now: t0)))
        let introduce = try #require(sent(m.received(reply(.error(id: connect.id, reason: .clientNotFound)), from: server, now: t0)))
        let answer: Response =
            switch response {
            case .error(_, let reason, let detail): .error(id: introduce.id, reason: reason, detail: detail)
            case .success(_, let name): .success(id: introduce.id, username: name)
            }
        #expect(m.received(reply(answer), from: server, now: t0) == [.finished(expected)])
    }

    @Test func connectOfAnUnknownClientIsNotRegistered() throws {
        var m = machine(.connect)
        let connect = try #require(sent(m.start(now: t0)))
        #expect(m.received(reply(.error(id: connect.id, reason: .clientNotFound)), from: server, now: t0) == [.finished(.notRegistered)])
    }

    @Test func nothingHappensAfterTheEnd() throws {
        var m = machine(.connect, attempts: 1)
        let request = try #require(sent(m.start(now: t0)))
        #expect(m.timerFired(now: t0 + .seconds(1)) == [.finished(.unreachable(attempts: 1))])
        #expect(m.received(reply(.success(id: request.id, username: alice)), from: server, now: t0 + .seconds(2)).isEmpty)
        #expect(m.timerFired(now: t0 + .seconds(3)).isEmpty)
        #expect(m.start(now: t0).isEmpty)
        #expect(m.result == .unreachable(attempts: 1))
    }

    /// A client and the real request handler talking over an in-memory link
    /// that loses datagrams, on virtual time.
    @Test(arguments: [0, 1, 2, 3, 5, 7])
    func joinOverALossyLink(lossSeed: UInt64) throws {
        var registry = Registry(maxUsers: 10)
        let clientAddress = IPAddress("127.0.0.9")!
        var m = machine(.join(alice), attempts: 6, seed: lossSeed)
        var loss = SplitMix64(seed: lossSeed)
        var now = t0
        var pending = m.start(now: now)
        var datagramsSent = 0
        while m.result == nil {
            var next: [HandshakeAction] = []
            for action in pending {
                guard case .send(let bytes) = action else { continue }
                datagramsSent += 1
                guard loss.next() % 3 != 0 else { continue }  // request lost
                let answer = RequestHandler.handle(bytes, from: clientAddress, registry: &registry)
                guard let response = answer.reply, loss.next() % 3 != 0 else { continue }  // reply lost
                next += m.received(response.bytes, from: server, now: now + .milliseconds(1))
            }
            if next.isEmpty, let deadline = m.deadline {
                now = deadline
                next = m.timerFired(now: now)
            }
            pending = next
            try #require(datagramsSent < 100)
        }
        // Losing an INTRODUCE reply must not make the retransmission fail as "taken".
        if case .unreachable = m.result { return }
        #expect(m.result == .success(alice))
        #expect(registry.username(for: clientAddress) == alice)
    }
}

// The chat room as a state machine: ChatService driven with datagrams from
// several endpoints and on virtual time, the shell played by the test.

import ChatCore
import Testing

private let start = Instant(nanoseconds: 1_000_000_000)
/// Journal lengths below count from the end of the header.
private let header = Journal.header.count
/// The wall clock the service stamps messages with.
private let wall: Int64 = 1_796_205_721_000

private func name(_ text: String) -> Username { Username(text)! }
private func utf8(_ text: String) -> [UInt8] { Array(text.utf8) }
private func endpoint(_ host: Int, port: UInt16) -> Endpoint { Endpoint(IPAddress("127.0.0.\(host)")!, port: port) }

private let alice = endpoint(2, port: 4000)
private let bob = endpoint(3, port: 4001)
private let carol = endpoint(4, port: 4002)
/// Registered, never joins.
private let dave = endpoint(5, port: 4003)
/// Bob's address at another port.
private let bobElsewhere = endpoint(3, port: 5001)
private let aliceElsewhere = endpoint(2, port: 5000)
/// Holds no username.
private let stranger = endpoint(9, port: 4009)

private let everyone = [(alice, "alice"), (bob, "bob"), (carol, "carol"), (dave, "dave")]

/// The wire form of a cookie.
private func hex(_ cookie: UInt64) -> String {
    var bytes: [UInt8] = []
    CookieText.append(cookie, to: &bytes)
    return String(decoding: bytes, as: UTF8.self)
}

/// The last nanosecond before `instant`.
private func justBefore(_ instant: Instant) -> Instant { Instant(nanoseconds: instant.nanoseconds - 1) }

private func message(_ seq: UInt64, _ from: String, _ text: String, time: Int64 = wall) -> ChatMessage {
    ChatMessage(seq: seq, timeMilliseconds: time, from: name(from), text: utf8(text))
}

/// A push as a member receives it.
private struct Push: Equatable {
    var to: Endpoint
    var id: UInt32
    var messages: [ChatMessage]
    /// The one message of a basic push (the first of a BATCH push).
    var message: ChatMessage { messages[0] }
}

/// A service with registered users and the shell's side of it.
private struct Room {
    var service: ChatService
    var now = start
    /// Output polled after each datagram, as the shell polls after each
    /// receive batch (here every datagram is a batch of its own).
    var polled: [ChatService.Transmit] = []
    private var inBatch = false

    /// Handles what `body` sends as one receive batch: output is polled
    /// once, after all of it.
    mutating func oneBatch(_ body: (inout Room) -> Void) {
        inBatch = true
        body(&self)
        inBatch = false
        while let transmit = service.pollTransmit() { polled.append(transmit) }
    }

    init(
        journaling: Bool = false, rate: Double = 0, burst: Int = 4, room: RoomConfiguration = RoomConfiguration(),
        users: [(Endpoint, String)] = everyone, snapshotInterval: Duration = .seconds(3600), seed: UInt64 = 7
    ) {
        var registry = Registry(maxUsers: 100)
        for (endpoint, text) in users { registry.restore(name(text), at: endpoint.address) }
        service = ChatService(
            configuration: .init(
                maxUsers: 100, ratePerIP: rate, burstPerIP: burst, journaling: journaling,
                snapshotInterval: snapshotInterval, room: room),
            registry: registry, journalLength: journaling ? header : 0, now: start, seed: seed)
        service.wallClock = wall
    }

    /// Sends `bytes` from `source`; the reply sent at once, or nil.
    mutating func send(bytes: [UInt8], from source: Endpoint, socket: Int = 0) -> [UInt8]? {
        var reply: [UInt8] = []
        let answered = bytes.withUnsafeBytes {
            service.handle(datagram: $0, from: source, socket: socket, now: now, reply: &reply)
        }
        if !inBatch {
            while let transmit = service.pollTransmit() { polled.append(transmit) }
        }
        return answered ? reply : nil
    }

    mutating func send(_ text: String, from source: Endpoint, socket: Int = 0) -> String? {
        send(bytes: utf8(text), from: source, socket: socket).map { String(decoding: $0, as: UTF8.self) }
    }

    /// `CHAT/1 <id> <verb> <cookie>[ <rest>]` with `source`'s right cookie.
    mutating func chat(_ verb: String, _ rest: String? = nil, id: UInt32 = 1, from source: Endpoint, socket: Int = 0)
        -> String?
    {
        let cookie = hex(service.cookie(for: source))
        return send("CHAT/1 \(id) \(verb) \(cookie)" + (rest.map { " " + $0 } ?? ""), from: source, socket: socket)
    }

    mutating func join(_ source: Endpoint, id: UInt32 = 1, socket: Int = 0) -> String? {
        chat("JOIN", id: id, from: source, socket: socket)
    }

    mutating func say(_ text: String, token: Int, id: UInt32 = 1, from source: Endpoint) -> String? {
        chat("SAY", "\(token) \(text)", id: id, from: source)
    }

    mutating func who(after: String? = nil, id: UInt32 = 1, from source: Endpoint) -> String? {
        chat("WHO", after, id: id, from: source)
    }

    mutating func history(after: UInt64, id: UInt32 = 1, from source: Endpoint) -> String? {
        chat("HISTORY", "\(after)", id: id, from: source)
    }

    mutating func ack(_ id: UInt32, from source: Endpoint) -> String? {
        send("CHAT/1 \(id) ACK", from: source)
    }

    mutating func transmits() -> [ChatService.Transmit] {
        var all = polled
        polled = []
        while let transmit = service.pollTransmit() { all.append(transmit) }
        return all
    }

    /// What went out besides the answers of the moment: replies (held ones)
    /// as text, and pushes.
    mutating func drain() -> (replies: [String], pushes: [Push]) {
        var replies: [String] = []
        var pushes: [Push] = []
        for transmit in transmits() {
            if case .message(let id, let messages)? = ChatInbound(transmit.bytes) {
                pushes.append(Push(to: transmit.destination, id: id, messages: messages))
            } else {
                replies.append(String(decoding: transmit.bytes, as: UTF8.self))
            }
        }
        return (replies, pushes)
    }

    /// The pushes that went out; anything else that did is an issue.
    mutating func pushes(sourceLocation: SourceLocation = #_sourceLocation) -> [Push] {
        let (replies, pushes) = drain()
        if !replies.isEmpty { Issue.record("unexpected replies \(replies)", sourceLocation: sourceLocation) }
        return pushes
    }

    mutating func events() -> [ChatService.Event] {
        var all: [ChatService.Event] = []
        while let event = service.pollEvent() { all.append(event) }
        return all
    }

    /// Reasons of the members that left, in order.
    mutating func departures() -> [LeaveReason] {
        events().compactMap { event in
            if case .memberLeft(_, _, let reason) = event { reason } else { nil }
        }
    }

    mutating func work() -> [ChatService.StorageWork] {
        var all: [ChatService.StorageWork] = []
        while let work = service.pollStorageWork() { all.append(work) }
        return all
    }

    mutating func advance(_ duration: Duration) { advance(to: now + duration) }

    mutating func advance(to instant: Instant) {
        now = instant
        service.handleTimeout(now: now)
    }

    var memberCount: Int { service.memberCount }
    var lastSeq: UInt64 { service.lastSeq }
    var counters: ChatService.Counters { service.counters }
    mutating func nextTimeout() -> Instant? { service.nextTimeout() }
}

private func commitBytes(_ work: [ChatService.StorageWork]) -> [UInt8]? {
    guard work.count == 1, case .commit(let bytes) = work[0] else { return nil }
    return bytes
}

@Suite struct ChatRoomTests {
    // MARK: Cookies

    @Test func aRequestWithoutItsCookieGetsCOOKIEAndChangesNothing() {
        var room = Room()
        let right = room.service.cookie(for: alice)
        let wrong = hex(right ^ 1)
        for request in [
            "JOIN 0", "LEAVE 0", "SAY 0 1 hi", "SAY 0 1", "WHO 0", "WHO 0 bob", "HISTORY 0 0",
            "JOIN \(wrong)", "LEAVE \(wrong)", "SAY \(wrong) 1 hi", "SAY \(wrong) 1", "WHO \(wrong)",
            "HISTORY \(wrong) 0",
        ] {
            #expect(room.send("CHAT/1 3 \(request)", from: alice) == "CHAT/1 3 COOKIE \(hex(right))", "\(request)")
        }
        #expect(room.counters.cookieChallenges == 13)
        #expect(room.memberCount == 0)
        #expect(room.lastSeq == 0, "no SAY posted")
        #expect(room.drain().replies.isEmpty)
        #expect(room.events().isEmpty)
        #expect(room.send("CHAT/1 4 JOIN \(hex(right))", from: alice) == "CHAT/1 4 SUCCESS alice 0")
        #expect(room.memberCount == 1)
    }

    @Test func theCookieIsCheckedBeforeAnythingElse() {
        var room = Room()
        // Unregistered, not a member, bad text: the cookie is what it hears about first.
        let strangers = hex(room.service.cookie(for: stranger))
        #expect(room.send("CHAT/1 1 JOIN 0", from: stranger) == "CHAT/1 1 COOKIE \(strangers)")
        #expect(room.send("CHAT/1 1 LEAVE 0", from: alice) == "CHAT/1 1 COOKIE \(hex(room.service.cookie(for: alice)))")
        #expect(room.send("CHAT/1 1 SAY 0 1 a\tb", from: alice) == "CHAT/1 1 COOKIE \(hex(room.service.cookie(for: alice)))")
    }

    @Test func aCookieBelongsToOneEndpoint() {
        var room = Room()
        let aliceCookie = room.service.cookie(for: alice)
        #expect(room.service.cookie(for: aliceElsewhere) != aliceCookie, "another port")
        #expect(room.service.cookie(for: bob) != aliceCookie, "another address")
        #expect(room.service.cookie(for: alice) != 0)
        #expect(
            room.send("CHAT/1 1 JOIN \(hex(aliceCookie))", from: aliceElsewhere)
                == "CHAT/1 1 COOKIE \(hex(room.service.cookie(for: aliceElsewhere)))")
        #expect(room.send("CHAT/1 1 JOIN \(hex(aliceCookie))", from: bob)?.contains(" COOKIE ") == true)
        #expect(room.memberCount == 0)
        // An IPv4 address and its IPv4-mapped IPv6 form are one client.
        let mapped = Endpoint(IPAddress("::ffff:127.0.0.2")!, port: 4000)
        #expect(room.service.cookie(for: mapped) == aliceCookie)
    }

    @Test(arguments: [
        "CHAT/1 0 WHO 0", "CHAT/1 0 JOIN 0", "CHAT/1 0 SAY 0 1", "CHAT/1 7 LEAVE 0\n", "CHAT/1 4294967295 WHO 0",
        "CHAT/1 0000000001 ACK", "CHAT/1 1 HISTORY 0 0", "CHAT/1 1 SAY 0 1 x",
    ])
    func aCOOKIEReplyIsAtMostThreeTimesItsRequest(request: String) {
        var room = Room()
        guard let reply = room.send(request, from: stranger) else {
            #expect(request.hasSuffix("ACK"), "only a stray ACK goes unanswered")
            return
        }
        #expect(reply.hasPrefix("CHAT/1 ") && reply.contains(" COOKIE "))
        #expect(reply.utf8.count <= 3 * request.utf8.count)
    }

    @Test func aCookieOutlivesOneRotationButNotTwo() {
        var room = Room()
        let first = room.service.cookie(for: alice)
        room.advance(to: justBefore(start + ChatService.cookieRotationInterval))
        #expect(room.service.cookie(for: alice) == first, "not rotated yet")
        room.advance(to: start + ChatService.cookieRotationInterval)
        let second = room.service.cookie(for: alice)
        #expect(second != first)
        #expect(room.send("CHAT/1 1 WHO \(hex(first))", from: alice) == "CHAT/1 1 SUCCESS 0", "the previous secret")
        #expect(room.send("CHAT/1 2 WHO \(hex(second))", from: alice) == "CHAT/1 2 SUCCESS 0")
        room.advance(to: start + ChatService.cookieRotationInterval * 2)
        let third = room.service.cookie(for: alice)
        #expect(Set([first, second, third]).count == 3)
        #expect(room.send("CHAT/1 3 WHO \(hex(first))", from: alice) == "CHAT/1 3 COOKIE \(hex(third))")
        #expect(room.send("CHAT/1 4 WHO \(hex(second))", from: alice) == "CHAT/1 4 SUCCESS 0")
        #expect(room.send("CHAT/1 5 JOIN \(hex(first))", from: alice) == "CHAT/1 5 COOKIE \(hex(third))")
        #expect(room.memberCount == 0)
    }

    // MARK: JOIN and LEAVE

    @Test func joinFromAnUnregisteredAddressIsClientNotFound() {
        var room = Room()
        #expect(room.join(stranger) == "CHAT/1 1 ERROR CLIENT_NOT_FOUND")
        #expect(room.memberCount == 0)
        #expect(room.events().isEmpty)
    }

    @Test func joinAnswersTheNameAndTheNewestSeq() {
        var room = Room()
        #expect(room.join(alice, id: 11) == "CHAT/1 11 SUCCESS alice 0")
        #expect(room.events() == [.memberJoined(name("alice"), client: alice)])
        _ = room.say("one", token: 1, from: alice)
        _ = room.say("two", token: 2, from: alice)
        _ = room.pushes()
        _ = room.events()
        #expect(room.join(bob, id: 12) == "CHAT/1 12 SUCCESS bob 2")
        #expect(room.pushes().isEmpty, "a new member hears only what comes after its JOIN")
        // The keepalive: answered the same, no second join reported.
        #expect(room.join(alice, id: 13) == "CHAT/1 13 SUCCESS alice 2")
        #expect(room.events() == [.memberJoined(name("bob"), client: bob)])
        #expect(room.memberCount == 2)
        _ = room.say("three", token: 3, from: dave)
        #expect(room.pushes().map(\.message.seq) == [3, 3])
    }

    @Test func joinFromAnotherPortMovesTheMembership() throws {
        var room = Room()
        #expect(room.join(bob) == "CHAT/1 1 SUCCESS bob 0")
        _ = room.say("one", token: 1, from: alice)
        let first = room.pushes()
        try #require(first.map(\.to) == [bob])
        _ = room.events()
        #expect(room.join(bobElsewhere, socket: 3) == "CHAT/1 1 SUCCESS bob 1")
        #expect(room.memberCount == 1)
        #expect(room.events() == [.memberJoined(name("bob"), client: bobElsewhere)])
        _ = room.say("two", token: 2, from: alice)
        let second = room.pushes()
        #expect(second.map(\.to) == [bobElsewhere])
        #expect(second.map(\.message.seq) == [2])
        // The push still in flight to the old port is retransmitted to the new one.
        room.advance(.seconds(1))
        let again = room.transmits()
        #expect(again.count == 2)
        #expect(again.allSatisfy { $0.destination == bobElsewhere && $0.socket == 3 })
        let againIDs = again.map { transmit -> UInt32? in ChatInbound(transmit.bytes).map(\.id) }
        #expect(againIDs.contains(first[0].id))
        // The old port is no longer the member's.
        #expect(room.chat("LEAVE", from: bob) == "CHAT/1 1 ERROR NOT_JOINED")
        #expect(room.history(after: 0, from: bob) == "CHAT/1 1 ERROR NOT_JOINED")
        #expect(room.ack(first[0].id, from: bob) == nil)
        #expect(room.counters.acks == 0, "an ACK from the old port does not count")
        #expect(room.ack(first[0].id, from: bobElsewhere) == nil)
        #expect(room.counters.acks == 1)
    }

    @Test func leaveEndsTheMembershipAndEverythingInFlight() {
        var room = Room()
        #expect(room.chat("LEAVE", from: alice) == "CHAT/1 1 ERROR NOT_JOINED", "registered, not a member")
        #expect(room.chat("LEAVE", from: stranger) == "CHAT/1 1 ERROR NOT_JOINED")
        _ = room.join(bob)
        _ = room.say("one", token: 1, from: alice)
        #expect(room.pushes().count == 1)
        _ = room.events()
        #expect(room.chat("LEAVE", id: 5, from: bobElsewhere) == "CHAT/1 5 ERROR NOT_JOINED", "not the member's port")
        #expect(room.memberCount == 1)
        #expect(room.chat("LEAVE", id: 6, from: bob) == "CHAT/1 6 SUCCESS bob")
        #expect(room.memberCount == 0)
        #expect(room.events() == [.memberLeft(name("bob"), client: bob, reason: .leave)])
        #expect(room.counters.membersDropped == 0, "leaving is not being dropped")
        room.advance(.seconds(1))
        #expect(room.transmits().isEmpty, "no retransmission to a member that left")
        _ = room.say("two", token: 2, from: alice)
        #expect(room.pushes().isEmpty)
        #expect(room.chat("LEAVE", id: 7, from: bob) == "CHAT/1 7 ERROR NOT_JOINED", "twice")
    }

    // MARK: Fan-out and pushes

    @Test func aMessageIsPushedToEveryMemberTheSenderIncludedUnderOneSeq() {
        var room = Room()
        _ = room.join(alice, socket: 1)
        _ = room.join(bob, socket: 2)
        _ = room.join(carol, socket: 3)
        _ = room.events()
        #expect(room.say("hello  there ", token: 1, from: alice) == "CHAT/1 1 SUCCESS 1")
        let transmits = room.transmits()
        #expect(transmits.count == 3)
        #expect(Set(transmits.map(\.destination)) == [alice, bob, carol], "dave, not a member, hears nothing")
        for transmit in transmits {
            // Back out of the socket each member's JOIN came in on.
            #expect(transmit.socket == [alice: 1, bob: 2, carol: 3][transmit.destination])
        }
        let pushes = transmits.compactMap { transmit -> Push? in
            guard case .message(let id, let messages)? = ChatInbound(transmit.bytes) else { return nil }
            return Push(to: transmit.destination, id: id, messages: messages)
        }
        #expect(pushes.count == 3)
        #expect(pushes.allSatisfy { $0.message == message(1, "alice", "hello  there ") })
        #expect(Set(pushes.map(\.id)).count == 3, "a push id each")
        #expect(room.events() == [.messageAccepted(seq: 1, from: name("alice"), client: alice, bytes: 13)])
        #expect(room.service.history == [message(1, "alice", "hello  there ")])
        #expect(room.counters.messagesAccepted == 1)
        #expect(room.counters.pushes == 3)

        #expect(room.say("hi", token: 1, from: bob) == "CHAT/1 1 SUCCESS 2", "tokens are per address")
        let second = room.pushes()
        #expect(second.map(\.message) == Array(repeating: message(2, "bob", "hi"), count: 3))
    }

    @Test func pushIDsComeFromTheSeed() {
        func ids(seed: UInt64) -> Set<UInt32> {
            var room = Room(seed: seed)
            for member in [alice, bob, carol] { _ = room.join(member) }
            for token in 1...3 { _ = room.say("m\(token)", token: token, from: dave) }
            return Set(room.pushes().map(\.id))
        }
        let first = ids(seed: 7)
        #expect(first.count == 9)
        #expect(ids(seed: 7) == first, "the same seed, the same ids")
        #expect(ids(seed: 8).isDisjoint(with: first), "another seed, other ids")
        // Not a counter.
        let sorted = first.sorted()
        #expect(zip(sorted, sorted.dropFirst()).contains { $1 - $0 > 1_000 })
    }

    @Test func aRetransmissionReusesThePushID() {
        var room = Room()
        _ = room.join(bob)
        _ = room.say("hi", token: 1, from: alice)
        let first = room.transmits()
        #expect(first.count == 1)
        room.advance(.milliseconds(999))
        #expect(room.transmits().isEmpty)
        room.advance(.milliseconds(1))
        let again = room.transmits()
        #expect(again == first, "the same datagram: same id, same message")
        #expect(room.counters.retransmissions == 1)
        #expect(room.counters.pushes == 2)
        // Acknowledged: no more.
        guard let id = ChatInbound(first[0].bytes)?.id else {
            Issue.record("not a push")
            return
        }
        #expect(room.ack(id, from: bob) == nil, "an ACK is not answered")
        room.advance(.seconds(60))
        #expect(room.transmits().isEmpty)
        #expect(room.memberCount == 1)
    }

    @Test func retransmissionsFollowTimeoutTimesBackoffThenTheMemberIsDropped() throws {
        var room = Room(room: .init(deliveryTimeout: .milliseconds(100), backoff: 3, maxAttempts: 4))
        _ = room.join(bob)
        _ = room.events()
        let t0 = room.now
        _ = room.say("hi", token: 1, from: alice)
        _ = room.events()
        let id = try #require(room.pushes().first).id
        // After the n-th send the next comes timeout × backoff^(n-1) later: 100, 300, 900 ms.
        var deadline = t0 + .milliseconds(100)
        for wait in [300, 900, 2700] {
            #expect(room.nextTimeout() == deadline)
            room.advance(to: justBefore(deadline))
            #expect(room.transmits().isEmpty, "not before its time")
            room.advance(to: deadline)
            let pushes = room.pushes()
            #expect(pushes.map(\.id) == [id])
            #expect(pushes.map(\.to) == [bob])
            deadline = deadline + .milliseconds(wait)
        }
        // Four sends, then one more wait (2.7 s after the fourth), then the drop.
        #expect(room.counters.pushes == 4)
        #expect(deadline == t0 + .milliseconds(4000))
        #expect(room.nextTimeout() == deadline)
        room.advance(to: justBefore(deadline))
        #expect(room.memberCount == 1)
        room.advance(to: deadline)
        #expect(room.transmits().isEmpty, "no fifth send")
        #expect(room.memberCount == 0)
        #expect(room.events() == [.memberLeft(name("bob"), client: bob, reason: .unreachable)])
        #expect(room.counters.membersDropped == 1)
        #expect(room.nextTimeout() == start + ChatService.cookieRotationInterval, "nothing of bob's left waiting")
    }

    @Test func withTheDefaultsAPushIsGivenUpAfter31Seconds() {
        var room = Room()
        _ = room.join(bob)
        let t0 = room.now
        _ = room.say("hi", token: 1, from: alice)
        #expect(room.transmits().count == 1)
        // 1 + 2 + 4 + 8 s between five sends, then 16 s more.
        for at in [1, 3, 7, 15] {
            room.advance(to: t0 + .seconds(at))
            #expect(room.transmits().count == 1, "a send at \(at) s")
        }
        room.advance(to: justBefore(t0 + .seconds(31)))
        #expect(room.memberCount == 1)
        room.advance(to: t0 + .seconds(31))
        #expect(room.memberCount == 0)
        #expect(room.departures() == [.unreachable])
        #expect(room.counters.pushes == 5)
    }

    @Test func anAcknowledgementInTheSpanKeepsTheMember() throws {
        var room = Room(room: .init(deliveryTimeout: .milliseconds(100), backoff: 2, maxAttempts: 2))
        _ = room.join(bob)
        _ = room.say("hi", token: 1, from: alice)
        let id = try #require(room.pushes().first).id
        room.advance(.milliseconds(100))
        #expect(room.pushes().map(\.id) == [id])
        room.advance(.milliseconds(199))
        _ = room.ack(id, from: bob)
        room.advance(.seconds(10))
        #expect(room.memberCount == 1)
        #expect(room.departures().isEmpty)
    }

    /// A push that exhausts its sends while the member acknowledges others
    /// is given up alone: the member is reachable, and its client fills the
    /// hole with HISTORY.
    @Test func aPushLostEveryTimeWhileOthersAreAcknowledgedIsGivenUpAlone() throws {
        var room = Room(room: .init(deliveryTimeout: .milliseconds(100), backoff: 1, maxAttempts: 2, window: 2))
        _ = room.join(bob)
        _ = room.say("lost", token: 1, from: alice)
        _ = room.say("kept", token: 2, from: alice)
        let pushes = room.pushes()
        try #require(pushes.map(\.message.seq) == [1, 2])
        _ = room.ack(pushes[1].id, from: bob)
        room.advance(.milliseconds(100))
        #expect(room.pushes().map(\.message.seq) == [1], "the unacknowledged one is sent again")
        room.advance(.milliseconds(100))
        #expect(room.memberCount == 1)
        #expect(room.departures().isEmpty)
        _ = room.say("next", token: 3, from: alice)
        #expect(room.pushes().map(\.message.seq) == [3], "its window slot is free again")
    }

    // MARK: The window

    @Test func atMostWindowPushesAreInFlightToAMember() throws {
        var room = Room(room: .init(window: 2))
        _ = room.join(bob)
        for token in 1...3 { #expect(room.say("m\(token)", token: token, from: alice) == "CHAT/1 1 SUCCESS \(token)") }
        let first = room.pushes()
        try #require(first.map(\.message.seq) == [1, 2])
        #expect(first.allSatisfy { $0.to == bob })
        // An ACK from anywhere but the member's endpoint does not count.
        #expect(room.ack(first[0].id, from: bobElsewhere) == nil)
        #expect(room.ack(first[0].id, from: alice) == nil)
        #expect(room.pushes().isEmpty, "the window is still full")
        #expect(room.counters.acks == 0)
        // ACKs may come out of order: the second push's frees a slot too.
        #expect(room.ack(first[1].id, from: bob) == nil)
        #expect(room.counters.acks == 1)
        let third = room.pushes()
        try #require(third.map(\.message.seq) == [3])
        #expect(third.map(\.to) == [bob])
        #expect(room.ack(first[1].id, from: bob) == nil)
        #expect(room.counters.acks == 1, "an ACK of a push no longer in flight matches nothing")
        #expect(room.ack(first[0].id, from: bob) == nil)
        #expect(room.ack(third[0].id, from: bob) == nil)
        #expect(room.counters.acks == 3)
        #expect(room.pushes().isEmpty)
        // Pushes in waiting keep their order.
        for token in 4...8 { _ = room.say("m\(token)", token: token, from: alice) }
        var seen: [UInt64] = []
        var round = room.pushes()
        while !round.isEmpty {
            #expect(round.count <= 2)
            seen += round.map(\.message.seq)
            for push in round { _ = room.ack(push.id, from: bob) }
            round = room.pushes()
        }
        #expect(seen == [4, 5, 6, 7, 8])
    }

    @Test func acknowledgementsOfPushesInFlightAreNotChargedToTheRateLimit() throws {
        var room = Room(rate: 1, burst: 4, room: .init(window: 16))
        #expect(room.join(bob) != nil)  // bob's first token of 4
        for sender in [alice, carol, dave] {
            for token in 1...4 { #expect(room.say("m", token: token, from: sender) != nil) }
        }
        let pushes = room.pushes()
        try #require(pushes.count == 12)
        for push in pushes { #expect(room.ack(push.id, from: bob) == nil) }
        #expect(room.counters.acks == 12)
        #expect(room.counters.rateLimited == 0)
        #expect(room.who(from: bob) == "CHAT/1 1 SUCCESS 1 bob", "bob's second token")
        // ACKs that match nothing are charged like any datagram.
        _ = room.ack(pushes[0].id, from: bob)
        _ = room.ack(pushes[1].id, from: bob)
        #expect(room.counters.rateLimited == 0)
        #expect(room.who(from: bob) == nil, "bob's tokens are spent")
        #expect(room.counters.rateLimited == 1)
        #expect(room.counters.acks == 12)
    }

    @Test func strayACKsAreChargedAndUnanswered() {
        var room = Room(rate: 1, burst: 2)
        #expect(room.ack(1, from: alice) == nil)
        #expect(room.ack(2, from: alice) == nil)
        #expect(room.counters.rateLimited == 0)
        #expect(room.who(from: alice) == nil)
        #expect(room.counters.rateLimited == 1)
    }

    // MARK: Drops

    @Test func aMemberThatFallsBehindHistoryIsDropped() {
        var room = Room(room: .init(history: 3, window: 1))
        _ = room.join(bob)
        _ = room.events()
        for token in 1...4 { _ = room.say("m\(token)", token: token, from: alice) }
        #expect(room.memberCount == 1, "seq 2, its next, is still held")
        _ = room.say("m5", token: 5, from: alice)
        #expect(room.memberCount == 0, "seq 2 is gone from history")
        #expect(room.events().contains(.memberLeft(name("bob"), client: bob, reason: .behind)))
        #expect(room.counters.membersDropped == 1)
        #expect(room.pushes().map(\.message.seq) == [1])
        room.advance(.seconds(60))
        #expect(room.transmits().isEmpty, "its push in flight went with it")
        // It catches up with HISTORY after joining again.
        #expect(room.join(bob) == "CHAT/1 1 SUCCESS bob 5")
        #expect(room.history(after: 1, from: bob) == "CHAT/1 1 SUCCESS 3 5")
        #expect(room.pushes().map(\.message.seq) == [3])
    }

    @Test func aMemberWhosePushInFlightLeftHistoryIsDroppedAsBehind() {
        var room = Room(room: .init(history: 3))
        _ = room.join(bob)
        _ = room.events()
        for token in 1...5 { _ = room.say("m\(token)", token: token, from: alice) }
        #expect(room.pushes().map(\.message.seq) == [1, 2, 3, 4, 5], "all within the window")
        // Seq 1 and 2 cannot be sent again: the member lost them for good.
        room.advance(.seconds(1))
        #expect(room.memberCount == 0)
        #expect(room.departures() == [.behind])
    }

    @Test func aMemberThatCaughtUpWithHistoryIsNotDroppedForPushesItMissedBefore() throws {
        var room = Room(room: .init(history: 3))
        _ = room.join(bob)
        for token in 1...5 { _ = room.say("m\(token)", token: token, from: alice) }
        #expect(room.pushes().map(\.message.seq) == [1, 2, 3, 4, 5], "all lost on the way")
        // The member notices the gap and catches up, as it must.
        #expect(room.history(after: 0, from: bob) == "CHAT/1 1 SUCCESS 3 5")
        let caughtUp = room.pushes()
        try #require(caughtUp.map(\.message.seq) == [3, 4, 5])
        for push in caughtUp { _ = room.ack(push.id, from: bob) }
        room.advance(.seconds(1))
        #expect(room.memberCount == 1, "it holds everything history holds")
        #expect(room.departures().isEmpty)
        #expect(room.transmits().isEmpty, "nothing left to push")
    }

    @Test func historyStartsItsPushesAtOnceWhateverWasInFlight() {
        var room = Room(room: .init(window: 2))
        _ = room.join(bob)
        for token in 1...4 { _ = room.say("m\(token)", token: token, from: alice) }
        #expect(room.pushes().map(\.message.seq) == [1, 2])
        #expect(room.history(after: 2, from: bob) == "CHAT/1 1 SUCCESS 3 4")
        #expect(room.pushes().map(\.message.seq) == [3, 4], "not behind a window of pushes HISTORY superseded")
    }

    @Test func aSilentMemberIsDroppedAfterThePresenceTTL() {
        var room = Room(room: .init(presenceTTL: .seconds(10)))
        let t0 = room.now
        _ = room.join(bob)
        _ = room.events()
        room.advance(to: justBefore(t0 + .seconds(10)))
        #expect(room.memberCount == 1)
        room.advance(to: t0 + .seconds(10))
        #expect(room.memberCount == 0)
        #expect(room.events() == [.memberLeft(name("bob"), client: bob, reason: .timeout)])
        #expect(room.counters.membersDropped == 1)
    }

    /// SIGHUP applies [chat] and [delivery] at once: a shorter TTL drops a
    /// member already silent that long, a wider window sends what waited.
    @Test func aReloadAppliesTheRoomSettingsAtOnce() throws {
        var room = Room(room: .init(presenceTTL: .seconds(100), window: 1))
        let configuration = room.service.configuration
        _ = room.join(bob)
        for token in 1...3 { _ = room.say("m\(token)", token: token, from: alice) }
        #expect(room.pushes().map(\.message.seq) == [1])
        var wider = configuration
        wider.room.window = 3
        room.service.reconfigure(wider, now: room.now)
        #expect(room.pushes().map(\.message.seq) == [2, 3])
        _ = room.events()
        room.advance(.seconds(20))
        var shorter = wider
        shorter.room.presenceTTL = .seconds(10)
        room.service.reconfigure(shorter, now: room.now)
        room.advance(.milliseconds(1))
        #expect(room.departures() == [.timeout], "silent for 20 s under a TTL of 10 s")
    }

    /// The cookie secret comes from a key of its own, not from the seed
    /// that push ids (which members see) come from.
    @Test func theCookieKeyIsIndependentOfTheSeed() {
        func service(cookieKey: (UInt64, UInt64)) -> ChatService {
            ChatService(
                configuration: .init(
                    maxUsers: 10, ratePerIP: 0, burstPerIP: 1, journaling: false, snapshotInterval: .seconds(60)),
                registry: Registry(maxUsers: 10), journalLength: 0, now: start, seed: 7, cookieKey: cookieKey)
        }
        #expect(service(cookieKey: (1, 2)).cookie(for: bob) != service(cookieKey: (1, 3)).cookie(for: bob))
        #expect(service(cookieKey: (1, 2)).cookie(for: bob) == service(cookieKey: (1, 2)).cookie(for: bob))
    }

    @Test func aKeepaliveJoinKeepsAMemberPresent() {
        var room = Room(room: .init(presenceTTL: .seconds(10)))
        let t0 = room.now
        _ = room.join(bob)
        room.advance(to: t0 + .seconds(6))
        #expect(room.join(bob) == "CHAT/1 1 SUCCESS bob 0")
        room.advance(to: t0 + .seconds(10))
        #expect(room.memberCount == 1, "heard from 4 s ago")
        room.advance(to: justBefore(t0 + .seconds(16)))
        #expect(room.memberCount == 1)
        room.advance(to: t0 + .seconds(16))
        #expect(room.memberCount == 0)
        #expect(room.departures() == [.timeout])
    }

    @Test func anyDatagramFromTheMembersEndpointCountsAsPresenceButNotFromElsewhere() {
        var room = Room(room: .init(presenceTTL: .seconds(10)))
        let t0 = room.now
        _ = room.join(bob)
        room.advance(to: t0 + .seconds(5))
        _ = room.who(from: bobElsewhere)  // another port: not the member
        room.advance(to: t0 + .seconds(9))
        _ = room.send("CHAT/1 1 FROB", from: bob)  // malformed, yet from the member's endpoint
        room.advance(to: t0 + .seconds(18))
        #expect(room.memberCount == 1)
        room.advance(to: t0 + .seconds(19))
        #expect(room.memberCount == 0)
    }

    // MARK: SAY

    @Test func aRetransmittedSayIsAnsweredWithItsFirstSeqAndPostsNothing() {
        var room = Room(room: .init(messagesPerSecond: 1, messagesBurst: 2))
        _ = room.join(bob)
        #expect(room.say("hi", token: 7, id: 1, from: alice) == "CHAT/1 1 SUCCESS 1")
        #expect(room.pushes().count == 1)
        for id in UInt32(2)...6 {
            #expect(room.say("hi", token: 7, id: id, from: alice) == "CHAT/1 \(id) SUCCESS 1")
        }
        #expect(room.say("hi", token: 7, id: 9, from: aliceElsewhere) == "CHAT/1 9 SUCCESS 1", "the address's token")
        #expect(room.pushes().isEmpty)
        #expect(room.lastSeq == 1)
        #expect(room.service.history.count == 1)
        #expect(room.counters.messagesAccepted == 1)
        // Retransmissions were not charged: the burst's second message is still there.
        #expect(room.say("there", token: 8, id: 10, from: alice) == "CHAT/1 10 SUCCESS 2")
        #expect(room.say("again", token: 9, id: 11, from: alice) == "CHAT/1 11 ERROR RATE_LIMITED")
        // Even when limited, a token already answered gets its answer.
        #expect(room.say("hi", token: 7, id: 12, from: alice) == "CHAT/1 12 SUCCESS 1")
        // Another address with the same token posts a message of its own.
        #expect(room.say("hi", token: 7, id: 13, from: carol) == "CHAT/1 13 SUCCESS 3")
    }

    @Test func moreThanTheBurstIsRateLimitedAndTakesNoSeq() {
        var room = Room(room: .init(messagesPerSecond: 1, messagesBurst: 3))
        for token in 1...3 { #expect(room.say("m", token: token, from: alice) == "CHAT/1 1 SUCCESS \(token)") }
        #expect(room.say("m", token: 4, from: alice) == "CHAT/1 1 ERROR RATE_LIMITED")
        #expect(room.say("m", token: 1, from: bob) == "CHAT/1 1 SUCCESS 4", "per address")
        #expect(room.lastSeq == 4)
        room.now = room.now + .seconds(1)
        // The limited token was not remembered: sent again, it posts.
        #expect(room.say("m", token: 4, from: alice) == "CHAT/1 1 SUCCESS 5")
        #expect(room.say("m", token: 5, from: alice) == "CHAT/1 1 ERROR RATE_LIMITED")
    }

    @Test func refusedTextCountsAgainstTheLimitButTakesNoSeq() {
        var room = Room(room: .init(messagesPerSecond: 1, messagesBurst: 2))
        #expect(room.chat("SAY", "1", from: alice) == "CHAT/1 1 ERROR INVALID_MESSAGE EMPTY")
        #expect(room.say("ok", token: 2, from: alice) == "CHAT/1 1 SUCCESS 1")
        #expect(room.say("no", token: 3, from: alice) == "CHAT/1 1 ERROR RATE_LIMITED")
    }

    @Test func badTextIsRefusedWithItsDetail() {
        var room = Room()
        _ = room.join(bob)
        let cookie = hex(room.service.cookie(for: alice))
        let sayPrefix = utf8("CHAT/1 1 SAY \(cookie) 5 ")
        func reply(_ text: [UInt8]) -> String? {
            room.send(bytes: sayPrefix + text, from: alice).map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(reply([]) == "CHAT/1 1 ERROR INVALID_MESSAGE EMPTY")
        #expect(reply(Array(repeating: UInt8(ascii: "a"), count: 401)) == "CHAT/1 1 ERROR INVALID_MESSAGE TOO_LONG")
        #expect(reply([0xc2, 0x85]) == "CHAT/1 1 ERROR INVALID_MESSAGE ENCODING")
        #expect(reply([0xff]) == "CHAT/1 1 ERROR INVALID_MESSAGE ENCODING")
        #expect(room.lastSeq == 0)
        #expect(room.pushes().isEmpty)
        #expect(reply(Array(repeating: UInt8(ascii: "a"), count: 400)) == "CHAT/1 1 SUCCESS 1", "a refused message took no seq")
        #expect(room.pushes().map(\.message.text.count) == [400])
    }

    @Test func sayNeedsARegisteredAddressButNotAMember() {
        var room = Room()
        _ = room.join(bob)
        #expect(room.say("hi", token: 1, from: stranger) == "CHAT/1 1 ERROR CLIENT_NOT_FOUND")
        #expect(room.lastSeq == 0)
        #expect(room.say("from outside", token: 1, from: dave) == "CHAT/1 1 SUCCESS 1")
        let pushes = room.pushes()
        #expect(pushes.map(\.to) == [bob])
        #expect(pushes.map(\.message) == [message(1, "dave", "from outside")])
    }

    // MARK: WHO

    @Test func whoListsMembersSortedCaseInsensitivelyAfterAnyName() {
        let names = ["zed", "Bob", "alice", "Carol", "dave"]
        let members = names.enumerated().map { (endpoint(10 + $0.offset, port: 4000), $0.element) }
        var room = Room(users: members + [(dave, "outsider")])
        for (member, _) in members { _ = room.join(member) }
        let asker = members[0].0
        #expect(room.who(from: asker) == "CHAT/1 1 SUCCESS 5 alice Bob Carol dave zed")
        #expect(room.who(after: "bob", from: asker) == "CHAT/1 1 SUCCESS 5 Carol dave zed")
        #expect(room.who(after: "BOB", from: asker) == "CHAT/1 1 SUCCESS 5 Carol dave zed")
        #expect(room.who(after: "b", from: asker) == "CHAT/1 1 SUCCESS 5 Bob Carol dave zed", "any name, member or not")
        #expect(room.who(after: "Carola", from: asker) == "CHAT/1 1 SUCCESS 5 dave zed")
        #expect(room.who(after: "zed", from: asker) == "CHAT/1 1 SUCCESS 5", "the count is all members, whatever after is")
        #expect(room.who(after: "0", from: asker) == "CHAT/1 1 SUCCESS 5 alice Bob Carol dave zed")
        // A registered address that is not a member may ask; an unregistered one may not.
        #expect(room.who(from: dave) == "CHAT/1 1 SUCCESS 5 alice Bob Carol dave zed")
        #expect(room.who(from: stranger) == "CHAT/1 1 ERROR CLIENT_NOT_FOUND")
        _ = room.chat("LEAVE", from: members[1].0)
        #expect(room.who(from: dave) == "CHAT/1 1 SUCCESS 4 alice Carol dave zed")
    }

    @Test func whoOnAnEmptyRoom() {
        var room = Room()
        #expect(room.who(from: alice) == "CHAT/1 1 SUCCESS 0")
        #expect(room.who(after: "alice", from: alice) == "CHAT/1 1 SUCCESS 0")
    }

    @Test func whoPagesThroughManyLongNamesAsManyAsFitInADatagram() {
        // 40 names of 32 characters, mixed case, sorted by their number.
        let names = (0..<40).map { index in
            let number = index < 10 ? "0\(index)" : "\(index)"
            return (index.isMultiple(of: 3) ? "Member" : "member") + number + String(repeating: "x", count: 24)
        }
        #expect(names.allSatisfy { $0.utf8.count == 32 })
        let members = names.enumerated().map { (endpoint(10 + $0.offset, port: 4000), $0.element) }
        var room = Room(users: members)
        for (member, _) in members.reversed() { _ = room.join(member) }
        #expect(room.memberCount == 40)
        var seen: [String] = []
        var after: String?
        var pages = 0
        while pages < 10 {
            guard let reply = room.who(after: after, id: 4_294_967_295, from: members[0].0) else {
                Issue.record("WHO unanswered")
                return
            }
            pages += 1
            #expect(reply.utf8.count <= maxDatagramSize)
            let fields = reply.split(separator: " ").map(String.init)
            #expect(fields.prefix(4) == ["CHAT/1", "4294967295", "SUCCESS", "40"])
            let page = Array(fields.dropFirst(4))
            if page.isEmpty { break }
            seen += page
            if seen.count < names.count {
                // Full: the next name would not have fit.
                #expect(reply.utf8.count + 1 + 32 > maxDatagramSize)
            }
            after = page.last
        }
        #expect(seen == names)
        #expect(pages == 4, "14 + 14 + 12, then an empty page")
    }

    // MARK: HISTORY

    @Test func historyPushesTheHeldMessagesAfterTheSeqThroughTheAcknowledgedPath() throws {
        var room = Room(room: .init(history: 5))
        for token in 1...8 { _ = room.say("m\(token)", token: token, from: alice) }
        #expect(room.service.history.map(\.seq) == [4, 5, 6, 7, 8])
        #expect(room.join(bob) == "CHAT/1 1 SUCCESS bob 8")
        #expect(room.pushes().isEmpty)
        // Older than history holds: first_seq says where it starts.
        #expect(room.history(after: 0, from: bob) == "CHAT/1 1 SUCCESS 4 8")
        let pushes = room.pushes()
        try #require(pushes.map(\.message) == room.service.history)
        #expect(pushes.allSatisfy { $0.to == bob })
        #expect(Set(pushes.map(\.id)).count == 5)
        // Acknowledged like any push; the one that is not is sent again under its id.
        for push in pushes.dropLast() { _ = room.ack(push.id, from: bob) }
        room.advance(.seconds(1))
        #expect(room.pushes().map(\.id) == [pushes[4].id])
        _ = room.ack(pushes[4].id, from: bob)
        #expect(room.history(after: 6, from: bob) == "CHAT/1 1 SUCCESS 7 8")
        #expect(room.pushes().map(\.message.seq) == [7, 8])
        #expect(room.history(after: 8, from: bob) == "CHAT/1 1 SUCCESS 9 8", "nothing newer")
        #expect(room.pushes().isEmpty)
        #expect(room.history(after: 2, from: bob) == "CHAT/1 1 SUCCESS 4 8")
    }

    @Test func historyPushesRespectTheWindow() throws {
        var room = Room(room: .init(window: 2))
        for token in 1...5 { _ = room.say("m\(token)", token: token, from: alice) }
        _ = room.join(bob)
        #expect(room.history(after: 0, from: bob) == "CHAT/1 1 SUCCESS 1 5")
        let first = room.pushes()
        try #require(first.map(\.message.seq) == [1, 2])
        _ = room.ack(first[0].id, from: bob)
        #expect(room.pushes().map(\.message.seq) == [3])
    }

    @Test func historyOnAnEmptyRoom() {
        var room = Room()
        _ = room.join(bob)
        #expect(room.history(after: 0, from: bob) == "CHAT/1 1 SUCCESS 1 0")
        #expect(room.pushes().isEmpty)
        #expect(room.history(after: .max, from: bob) == "CHAT/1 1 SUCCESS 18446744073709551615 0")
    }

    @Test func historyFromAnythingButTheMembersEndpointIsNotJoined() {
        var room = Room()
        _ = room.say("m", token: 1, from: alice)
        _ = room.join(bob)
        #expect(room.history(after: 0, from: alice) == "CHAT/1 1 ERROR NOT_JOINED", "registered, not a member")
        #expect(room.history(after: 0, from: bobElsewhere) == "CHAT/1 1 ERROR NOT_JOINED")
        #expect(room.history(after: 0, from: stranger) == "CHAT/1 1 ERROR NOT_JOINED")
        #expect(room.pushes().isEmpty)
    }

    // MARK: Durability "sync"

    @Test func withAJournalAMessageIsAnsweredAndPushedOnlyOnceOnDisk() {
        var room = Room(journaling: true)
        #expect(room.join(bob) == "CHAT/1 1 SUCCESS bob 0", "nothing pending: answered at once")
        _ = room.events()
        #expect(room.say("hello", token: 1, id: 1, from: alice) == nil, "held for the sync")
        #expect(room.drain().pushes.isEmpty)
        #expect(room.events().isEmpty)
        #expect(room.lastSeq == 0)
        #expect(room.service.history.isEmpty)
        let first = message(1, "alice", "hello")
        #expect(commitBytes(room.work()) == Journal.line(.message(first)))
        // Meanwhile: the next message takes the next seq and waits for the next group;
        // a retransmission of the first waits too; a JOIN hears of no message not on disk.
        #expect(room.say("again", token: 2, id: 2, from: alice) == nil)
        #expect(room.say("hello", token: 1, id: 3, from: alice) == nil)
        #expect(room.join(carol) == "CHAT/1 1 SUCCESS carol 0")
        _ = room.events()
        #expect(room.work().isEmpty, "one group in flight at a time")

        room.now = room.now + .milliseconds(5)
        let synced = room.now
        room.service.committed(journalLength: header + 100, now: synced)
        var out = room.drain()
        #expect(out.replies == ["CHAT/1 1 SUCCESS 1"])
        #expect(Set(out.pushes.map(\.to)) == [bob, carol])
        #expect(out.pushes.allSatisfy { $0.message == first })
        #expect(room.events() == [.messageAccepted(seq: 1, from: name("alice"), client: alice, bytes: 5)])
        #expect(room.lastSeq == 1)
        #expect(room.nextTimeout() == synced + .seconds(1), "pushes are timed from the sync")

        let second = message(2, "alice", "again")
        #expect(commitBytes(room.work()) == Journal.line(.message(second)))
        room.service.committed(journalLength: header + 200, now: synced)
        out = room.drain()
        #expect(out.replies == ["CHAT/1 2 SUCCESS 2", "CHAT/1 3 SUCCESS 1"])
        #expect(out.pushes.map(\.message) == [second, second])
        #expect(room.service.history == [first, second])
    }

    @Test func aFailedSyncAnswersUnavailableAndTheSeqGoesToTheNextMessage() {
        var room = Room(journaling: true)
        _ = room.join(bob)
        _ = room.events()
        #expect(room.say("lost", token: 1, id: 1, from: alice) == nil)
        _ = room.work()
        #expect(room.say("queued", token: 2, id: 2, from: alice) == nil)
        room.service.commitFailed(error: "No space left on device", journalLength: header)
        let out = room.drain()
        #expect(out.replies == ["CHAT/1 1 ERROR UNAVAILABLE", "CHAT/1 2 ERROR UNAVAILABLE"])
        #expect(out.pushes.isEmpty, "nobody saw them")
        #expect(room.events() == [.journalFailed(error: "No space left on device")])
        #expect(room.lastSeq == 0)
        #expect(room.service.history.isEmpty)
        #expect(room.work().isEmpty)
        #expect(room.memberCount == 1, "membership is not undone")
        // The client tries again with the same token: a new message, under the seq nobody saw.
        #expect(room.say("lost", token: 1, id: 3, from: alice) == nil)
        #expect(commitBytes(room.work()) == Journal.line(.message(message(1, "alice", "lost"))))
        room.service.committed(journalLength: header + 100, now: room.now)
        let retried = room.drain()
        #expect(retried.replies == ["CHAT/1 3 SUCCESS 1"])
        #expect(retried.pushes.map(\.message) == [message(1, "alice", "lost")])
        #expect(room.say("queued", token: 2, id: 4, from: alice) == nil)
        #expect(commitBytes(room.work()) == Journal.line(.message(message(2, "alice", "queued"))))
    }

    @Test func aRetransmissionOfAStoredMessageIsNotRefusedByALaterFailedSync() {
        var room = Room(journaling: true)
        _ = room.join(bob)
        #expect(room.say("stored", token: 1, id: 1, from: alice) == nil)
        _ = room.work()  // seq 1 in flight
        #expect(room.say("lost", token: 2, id: 2, from: alice) == nil)  // seq 2, the next group
        #expect(room.say("stored", token: 1, id: 3, from: alice) == nil, "seq 1 is not on disk yet")
        room.service.committed(journalLength: header + 100, now: room.now)
        let first = room.drain()
        #expect(first.replies == ["CHAT/1 1 SUCCESS 1"])
        #expect(first.pushes.map(\.message.seq) == [1])
        _ = room.work()  // seq 2 in flight, with the retransmission's answer held behind it
        room.service.commitFailed(error: "EIO", journalLength: header + 100)
        // Seq 1 is on disk and was pushed: its retransmission hears so, not UNAVAILABLE.
        #expect(room.drain().replies == ["CHAT/1 2 ERROR UNAVAILABLE", "CHAT/1 3 SUCCESS 1"])
        #expect(room.lastSeq == 1)
        #expect(room.say("stored", token: 1, id: 4, from: alice) == "CHAT/1 4 SUCCESS 1")
    }

    @Test func aJoinAndASayBehindAPendingRegistrationShareItsFate() {
        for syncWorks in [true, false] {
            var room = Room(journaling: true, users: [])
            #expect(room.send("CHAT/1 20 INTRODUCE alice", from: alice) == nil)
            #expect(room.join(alice, id: 21) == nil, "its answer reflects the pending registration")
            #expect(room.say("first words", token: 1, id: 22, from: alice) == nil)
            let lines = commitBytes(room.work()).map { String(decoding: $0, as: UTF8.self) }
            #expect(lines?.split(separator: "\n").count == 2, "the registration, then the message")
            _ = room.events()
            if syncWorks {
                room.service.committed(journalLength: header + 200, now: room.now)
                let out = room.drain()
                #expect(out.replies == ["CHAT/1 20 SUCCESS alice", "CHAT/1 21 SUCCESS alice 0", "CHAT/1 22 SUCCESS 1"])
                #expect(out.pushes.map(\.message) == [message(1, "alice", "first words")])
                #expect(room.memberCount == 1)
            } else {
                room.service.commitFailed(error: "EIO", journalLength: header)
                let out = room.drain()
                #expect(out.replies == [
                    "CHAT/1 20 ERROR UNAVAILABLE", "CHAT/1 21 ERROR UNAVAILABLE", "CHAT/1 22 ERROR UNAVAILABLE",
                ])
                #expect(out.pushes.isEmpty)
                #expect(room.memberCount == 0, "a member whose address holds no name is no member")
                #expect(room.events() == [
                    .journalFailed(error: "EIO"), .memberLeft(nil, client: alice, reason: .unregistered),
                ])
                #expect(room.lastSeq == 0)
            }
        }
    }

    @Test func aSnapshotHoldsOnlyMessagesOnDisk() {
        var room = Room(journaling: true, snapshotInterval: .seconds(30))
        _ = room.say("kept", token: 1, from: alice)
        _ = room.work()
        room.service.committed(journalLength: header + 100, now: room.now)
        _ = room.say("pending", token: 2, from: alice)
        _ = room.work()
        room.advance(.seconds(30))
        var job: ChatService.SnapshotJob?
        for work in room.work() { if case .writeSnapshot(let snapshot) = work { job = snapshot } }
        #expect(job?.messages == [message(1, "alice", "kept")])
        #expect(job?.lastSeq == 1)
    }

    /// Without a journal messages are pushed before they reach the disk, so
    /// the history file must claim their seqs first: a SAY past the claim
    /// is refused until a snapshot has claimed more.
    @Test func withoutAJournalSeqsAreClaimedOnDiskBeforeTheyAreGiven() {
        var room = Room()
        var registry = Registry(maxUsers: 100)
        registry.restore(name("alice"), at: alice.address)
        room.service = ChatService(
            configuration: .init(
                maxUsers: 100, ratePerIP: 0, burstPerIP: 4, journaling: false, snapshotInterval: .seconds(3600)),
            registry: registry, journalLength: 0, lastSeq: 0, seqsReserved: 2, now: start, seed: 7)
        room.service.wallClock = wall
        #expect(room.say("one", token: 1, from: alice) == "CHAT/1 1 SUCCESS 1")
        // Less than half a reservation left: a snapshot claims more at once.
        let jobs = room.work().compactMap { work -> ChatService.SnapshotJob? in
            if case .writeSnapshot(let job) = work { job } else { nil }
        }
        #expect(jobs.map(\.lastSeq) == [ChatService.seqReservation])
        #expect(room.say("two", token: 2, from: alice) == "CHAT/1 1 SUCCESS 2")
        #expect(room.say("three", token: 3, from: alice) == "CHAT/1 1 ERROR UNAVAILABLE")
        room.service.snapshotWritten(.init(savedAt: 0, bytes: 0, duration: .zero))
        #expect(room.say("three", token: 3, from: alice) == "CHAT/1 1 SUCCESS 3")
        // The last snapshot, at a clean stop, claims nothing ahead.
        room.service.stop()
        room.service.writeFinalSnapshot()
        let final = room.work().compactMap { work -> ChatService.SnapshotJob? in
            if case .writeSnapshot(let job) = work { job } else { nil }
        }
        #expect(final.map(\.lastSeq) == [3])
    }
}

/// The BATCH format: several messages per push, cumulative ACKs.
@Suite struct BatchRoomTests {
    private func batchJoin(_ room: inout Room, _ source: Endpoint) -> String? {
        room.chat("JOIN", "BATCH", from: source)
    }

    @Test func aJoinAskingForBatchIsAnsweredWithTheWindow() {
        var room = Room(room: .init(window: 6))
        #expect(batchJoin(&room, bob) == "CHAT/1 1 SUCCESS bob 0 BATCH 6")
        #expect(room.join(carol) == "CHAT/1 1 SUCCESS carol 0", "a basic client hears the basic answer")
    }

    @Test func messagesOfOneReceiveBatchShareOnePushWhileABasicMemberGetsOneEach() {
        var room = Room()
        _ = batchJoin(&room, bob)
        _ = room.join(carol)
        room.oneBatch { room in
            for token in 1...3 { _ = room.say("m\(token)", token: token, from: alice) }
        }
        let pushes = room.pushes()
        #expect(pushes.filter { $0.to == bob }.map { $0.messages.map(\.seq) } == [[1, 2, 3]])
        #expect(pushes.filter { $0.to == carol }.map { $0.messages.map(\.seq) } == [[1], [2], [3]])
        #expect(room.counters.pushes == 4)
    }

    @Test func aBatchPushNeverExceedsOneDatagramAndLosesNoMessage() {
        var room = Room(room: .init(history: 100, window: 64))
        _ = batchJoin(&room, bob)
        let text = String(repeating: "x", count: 100)
        room.oneBatch { room in
            for token in 1...20 { _ = room.say("\(token) \(text)", token: token, from: alice) }
        }
        let transmits = room.transmits()
        #expect(transmits.allSatisfy { $0.bytes.count <= maxDatagramSize })
        let seqs = transmits.flatMap { transmit -> [UInt64] in
            guard case .message(_, let messages)? = ChatInbound(transmit.bytes) else { return [] }
            return messages.map(\.seq)
        }
        #expect(seqs == Array(1...20))
        #expect(transmits.count == 7, "three entries of about 126 bytes fit in 512, not four")
    }

    @Test func messagesThatWaitedForWindowRoomLeaveInOnePush() throws {
        var room = Room(room: .init(window: 1))
        _ = batchJoin(&room, bob)
        for token in 1...4 { _ = room.say("m\(token)", token: token, from: alice) }
        let first = room.pushes()
        try #require(first.map { $0.messages.map(\.seq) } == [[1]])
        _ = room.ack(first[0].id, from: bob)
        #expect(room.pushes().map { $0.messages.map(\.seq) } == [[2, 3, 4]])
    }

    @Test func aCumulativeAckDeliversEveryPushUpToItsSeq() throws {
        var room = Room()
        _ = batchJoin(&room, bob)
        for token in 1...5 { _ = room.say("m\(token)", token: token, from: alice) }
        let pushes = room.pushes()
        try #require(pushes.map(\.message.seq) == [1, 2, 3, 4, 5])
        #expect(room.send("CHAT/1 \(pushes[2].id) ACK 3", from: bob) == nil)
        #expect(room.counters.acks == 3)
        room.advance(.seconds(1))
        #expect(room.pushes().map(\.message.seq) == [4, 5], "only the pushes the ACK did not cover go again")
    }

    @Test func aCumulativeAckCountsOnlyWhenItsPushIsInFlightToItsSender() throws {
        var room = Room()
        _ = batchJoin(&room, bob)
        _ = batchJoin(&room, carol)
        for token in 1...3 { _ = room.say("m\(token)", token: token, from: alice) }
        let pushes = room.pushes()
        let bobs = pushes.filter { $0.to == bob }
        try #require(bobs.count == 3)
        // Carol names bob's push; a made-up id; a push bob already acknowledged.
        _ = room.send("CHAT/1 \(bobs[2].id) ACK 3", from: carol)
        _ = room.send("CHAT/1 12345 ACK 3", from: bob)
        #expect(room.counters.acks == 0)
        _ = room.ack(bobs[0].id, from: bob)
        _ = room.send("CHAT/1 \(bobs[0].id) ACK 3", from: bob)
        #expect(room.counters.acks == 1)
        room.advance(.seconds(1))
        #expect(room.pushes().filter { $0.to == bob }.map(\.message.seq) == [2, 3])
    }

    @Test func aRetransmissionCarriesTheSameEntriesUnderTheSameID() throws {
        var room = Room()
        _ = batchJoin(&room, bob)
        room.oneBatch { room in
            for token in 1...3 { _ = room.say("m\(token)", token: token, from: alice) }
        }
        let first = room.transmits()
        try #require(first.count == 1)
        room.advance(.seconds(1))
        let again = room.transmits()
        #expect(again.map(\.bytes) == first.map(\.bytes))
        #expect(room.counters.retransmissions == 1)
    }

    @Test func aJoinWithoutBatchReturnsTheMemberToTheBasicFormat() {
        var room = Room()
        _ = batchJoin(&room, bob)
        #expect(room.join(bob) == "CHAT/1 1 SUCCESS bob 0", "the keepalive states the format")
        room.oneBatch { room in
            for token in 1...2 { _ = room.say("m\(token)", token: token, from: alice) }
        }
        #expect(room.pushes().map { $0.messages.count } == [1, 1])
    }
}

@Suite struct RoomStorageTests {
    private let messages = [
        message(40, "alice", #"she said "hi""#, time: 1),
        message(41, "Bob.x", #"back\slash \\ and \" both"#, time: 2),
        message(42, "carol", "ünïcödé ✓ {\"crc32\": 1}", time: 1_796_205_721_000),
        message(43, "dave", "  spaced  ", time: 4),
    ]

    private func decodingError(_ bytes: [UInt8]) -> HistoryFile.DecodingError? {
        do {
            _ = try HistoryFile.decode(bytes)
            return nil
        } catch {
            return error
        }
    }

    /// The file's lines, without their newlines.
    private func lines(_ bytes: [UInt8]) -> [[UInt8]] {
        bytes.split(separator: 0x0a, omittingEmptySubsequences: false).dropLast().map(Array.init)
    }

    private func joined(_ lines: [[UInt8]]) -> [UInt8] { lines.flatMap { $0 + [0x0a] } }

    /// `body` with a checksum that holds, as chatd writes lines.
    private func checksummed(_ body: String) -> [UInt8] {
        utf8(body) + utf8(#", "crc32": \#(CRC32.checksum(utf8(body)))}"#) + [0x0a]
    }

    @Test func theHistoryFileRoundTrips() throws {
        let bytes = HistoryFile.encode(messages, lastSeq: 45)
        let decoded = try HistoryFile.decode(bytes)
        #expect(decoded.messages == messages)
        #expect(decoded.lastSeq == 45)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix(#"{"history": "chatd", "version": 1, "last_seq": 45, "crc32": "#))
        #expect(lines(bytes).count == 5)
        #expect(Array(lines(bytes).dropFirst()) == messages.map { Array(Journal.line(.message($0)).dropLast()) })
    }

    @Test func anEmptyHistoryKeepsItsLastSeq() throws {
        let decoded = try HistoryFile.decode(HistoryFile.encode([], lastSeq: 9))
        #expect(decoded.messages.isEmpty)
        #expect(decoded.lastSeq == 9)
        #expect(try HistoryFile.decode(HistoryFile.encode([], lastSeq: 0)).lastSeq == 0)
    }

    @Test func aDamagedLineIsRefusedWithItsNumber() {
        var damaged = lines(HistoryFile.encode(messages, lastSeq: 45))
        let index = damaged[2].firstIndex(of: UInt8(ascii: "h"))!
        damaged[2][index] = UInt8(ascii: "H")
        #expect(decodingError(joined(damaged))?.line == 3)
    }

    @Test func aDamagedHeaderIsLineOne() {
        var damaged = lines(HistoryFile.encode(messages, lastSeq: 45))
        damaged[0][damaged[0].count - 3] ^= 1  // a digit of the checksum
        #expect(decodingError(joined(damaged))?.line == 1)
        #expect(decodingError([])?.line == 1)
        #expect(decodingError(Journal.header)?.line == 1, "a journal is not a history file")
    }

    @Test func aHistoryOfAnotherVersionIsRefused() {
        let newer = checksummed(#"{"history": "chatd", "version": 2, "last_seq": 3"#)
        let error = decodingError(newer)
        #expect(error?.line == 1)
        #expect(error?.reason.contains("another version") == true)
    }

    @Test func seqsOutOfOrderOrPastLastSeqAreRefused() {
        let swapped = HistoryFile.encode([messages[0], messages[2], messages[1]], lastSeq: 45)
        #expect(decodingError(swapped)?.line == 4)
        #expect(decodingError(swapped)?.reason.contains("out of order") == true)
        let repeated = HistoryFile.encode([messages[0], messages[0]], lastSeq: 45)
        #expect(decodingError(repeated)?.line == 3)
        let past = HistoryFile.encode(messages, lastSeq: 42)
        #expect(decodingError(past)?.line == 5, "seq 43 is newer than the last seq ever given")
    }

    @Test func aRecordThatIsNotAMessageIsRefused() {
        var bytes = HistoryFile.encode(messages.prefix(1), lastSeq: 45)
        bytes += Journal.line(.registration(alice.address, name("alice")))
        #expect(decodingError(bytes)?.line == 3)
    }

    @Test func aFileCutShortIsRefused() {
        let bytes = HistoryFile.encode(messages, lastSeq: 45)
        let error = decodingError(Array(bytes.dropLast()))
        #expect(error?.line == 5)
        #expect(error?.reason.contains("newline") == true)
        #expect(decodingError(Array(bytes.dropLast(10))) != nil)
    }

    @Test func messageRecordsEscapeQuotesAndBackslashes() {
        let line = String(decoding: Journal.line(.message(messages[1])), as: UTF8.self)
        #expect(line.contains(#""text": "back\\slash \\\\ and \\\" both""#))
        #expect(line.hasPrefix(#"{"type": "message", "seq": 41, "time_ms": 2, "from": "Bob.x", "#))
        for message in messages {
            #expect(Journal.parse(Journal.line(.message(message)).dropLast()[...]) == .message(message))
        }
    }

    @Test func journalReplayGivesBackTheMessageRecordsInOrder() throws {
        var bytes = Journal.header
        bytes += Journal.line(.message(messages[0]))
        bytes += Journal.line(.registration(alice.address, name("alice")))
        for message in messages.dropFirst() { bytes += Journal.line(.message(message)) }
        var registry = Registry(maxUsers: 10)
        let replay = try Journal.replay(bytes, into: &registry)
        #expect(replay.messages == messages)
        #expect(replay.lines == 5)
        #expect(replay.version == 2)
        #expect(replay.validLength == bytes.count)
        #expect(!replay.tornTail)
        #expect(registry.username(for: alice.address) == name("alice"))
    }

    @Test func aTornMessageRecordIsDroppedAndADamagedOneRefused() throws {
        var bytes = Journal.header + Journal.line(.message(messages[0]))
        let whole = bytes.count
        bytes += Journal.line(.message(messages[1])).dropLast(5)
        var registry = Registry(maxUsers: 10)
        let replay = try Journal.replay(bytes, into: &registry)
        #expect(replay.messages == [messages[0]])
        #expect(replay.tornTail)
        #expect(replay.validLength == whole)

        var damaged = lines(Journal.header + Journal.line(.message(messages[0])) + Journal.line(.message(messages[1])))
        damaged[1][damaged[1].count - 20] ^= 1
        #expect(throws: Journal.DamageError(line: 2)) { try Journal.replay(joined(damaged), into: &registry) }
    }

    @Test func aMessageRecordWhoseTextBreaksTheRuleIsDamage() {
        // Checksummed, but its text holds an escape chatd never writes, or a control character.
        for text in [#"a\nb"#, "a\tb", #"a\"#, #"a"b"#, ""] {
            let line = checksummed(#"{"type": "message", "seq": 1, "time_ms": 2, "from": "alice", "text": ""# + text + "\"")
            #expect(Journal.parse(line.dropLast()[...]) == nil, "\(text)")
        }
        let good = checksummed(#"{"type": "message", "seq": 1, "time_ms": 2, "from": "alice", "text": "a\"b""#)
        #expect(Journal.parse(good.dropLast()[...]) == .message(message(1, "alice", #"a"b"#, time: 2)))
    }
}

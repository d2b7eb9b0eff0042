// Several TalkSessions and a real ChatService talking over an in-memory link
// that loses, duplicates, delays and so reorders datagrams, on virtual time.
// Whatever the link does, and whichever format each session speaks (BATCH,
// the basic one, or a room of both), every session must end with the same
// transcript as the server's history, in seq order, nothing printed twice,
// every line delivered once.

import ChatCore
import Testing

private let serverEndpoint = Endpoint(IPAddress("127.0.0.1")!, port: 7447)
private let t0 = Instant(nanoseconds: 1_000_000_000)

private enum Node: Equatable {
    case server
    case client(Int)
}

private struct Datagram {
    var at: Instant
    var order: Int
    var to: Node
    var from: Endpoint
    var bytes: [UInt8]
}

/// How long a datagram takes, each copy drawn on its own.
enum Delay: CustomTestStringConvertible, Sendable {
    /// 1 ms to 80 ms: little latency, much reordering.
    case reordering
    /// 20 ms ± 10 ms: a distant server, whose latency makes ACKs wait for
    /// pushes in flight; datagrams sent within 20 ms of each other may swap.
    case distant

    var range: ClosedRange<Int64> {
        switch self {
        case .reordering: 1...80
        case .distant: 10...30
        }
    }

    var testDescription: String {
        switch self {
        case .reordering: "1-80 ms"
        case .distant: "20±10 ms"
        }
    }
}

/// Which format the members ask for at JOIN.
enum Formats: CaseIterable, CustomTestStringConvertible, Sendable {
    case batch, basic
    /// Even members BATCH, odd ones basic: one room, both formats.
    case mixed

    func asksBatch(member index: Int) -> Bool {
        switch self {
        case .batch: true
        case .basic: false
        case .mixed: index % 2 == 0
        }
    }

    var testDescription: String {
        switch self {
        case .batch: "BATCH"
        case .basic: "basic"
        case .mixed: "mixed"
        }
    }
}

/// The network: each datagram is lost with `loss`, sent twice with
/// `duplicate`, and each copy delayed by a time drawn from `delay`, so
/// later datagrams often overtake earlier ones.
private struct Link {
    var random: SplitMix64
    let loss: Double
    let duplicate: Double
    let delay: ClosedRange<Int64>
    private(set) var queue: [Datagram] = []
    private var order = 0
    private(set) var sent = 0

    init(seed: UInt64, loss: Double, duplicate: Double, delayMilliseconds: ClosedRange<Int64>) {
        random = SplitMix64(seed: seed)
        self.loss = loss
        self.duplicate = duplicate
        delay = delayMilliseconds
    }

    mutating func send(_ bytes: [UInt8], from: Endpoint, to: Node, now: Instant) {
        sent += 1
        guard Double.random(in: 0..<1, using: &random) >= loss else { return }
        let copies = Double.random(in: 0..<1, using: &random) < duplicate ? 2 : 1
        for _ in 0..<copies {
            let delay = Duration.milliseconds(Int64.random(in: self.delay, using: &random))
            order += 1
            queue.append(Datagram(at: now + delay, order: order, to: to, from: from, bytes: bytes))
        }
    }

    var nextArrival: Instant? { queue.lazy.map(\.at).min() }

    /// The datagrams due by `now`, in arrival order.
    mutating func arrivals(by now: Instant) -> [Datagram] {
        let due = queue.filter { $0.at <= now }.sorted { ($0.at, $0.order) < ($1.at, $1.order) }
        queue.removeAll { $0.at <= now }
        return due
    }
}

private struct Simulation {
    var now = t0
    var service: ChatService
    var link: Link
    var sessions: [TalkSession<SplitMix64>] = []
    var endpoints: [Endpoint] = []
    var transcripts: [[ChatMessage]]
    var notices: [[TalkNotice]]
    /// (time, session, line) still to be typed, in time order.
    var script: [(at: Instant, session: Int, line: String)]
    var steps = 0
    /// A session cut off from the network: every datagram to or from it is lost until then.
    var isolated: (index: Int, until: Instant)?
    /// A host that sends every session a push from the server's address
    /// this often, with a seq far ahead of the room's, the sessions' port,
    /// and a random id: what an off-path attacker can do.
    var forgeEvery: Duration?
    var nextForgery = t0
    var forger = SplitMix64(seed: 99)
    var forged = 0
    /// Per session: pushes that reached it before it ended, and ACKs it sent.
    var pushesReceived: [Int]
    var acksSent: [Int]

    /// - Parameter attempts: per request. With 20 % loss each way an attempt
    ///   fails 36 % of the time, so 8 attempts would still give up about one
    ///   line in 3,500, which a run of these tests would meet; 12 make it one
    ///   in 200,000.
    init(
        seed: UInt64, members: Int, loss: Double, duplicate: Double, delay: Delay = .reordering,
        formats: Formats = .batch, attempts: Int = 12
    ) {
        var room = RoomConfiguration()
        room.messagesPerSecond = 0
        room.deliveryTimeout = .milliseconds(300)
        service = ChatService(
            configuration: .init(
                maxUsers: 100, ratePerIP: 0, burstPerIP: 1, journaling: false, snapshotInterval: .seconds(30),
                room: room),
            registry: Registry(maxUsers: 100), journalLength: 0, now: t0, seed: seed)
        link = Link(seed: seed &* 31 &+ 7, loss: loss, duplicate: duplicate, delayMilliseconds: delay.range)
        transcripts = Array(repeating: [], count: members)
        notices = Array(repeating: [], count: members)
        pushesReceived = Array(repeating: 0, count: members)
        acksSent = Array(repeating: 0, count: members)
        script = []
        for index in 0..<members {
            let endpoint = Endpoint(.v4(0x7f00_0010 + UInt32(index)), port: 40000 + UInt16(index))
            endpoints.append(endpoint)
            // Registered as `chat join` would have done, straight through the service.
            var reply: [UInt8] = []
            _ = Array("CHAT/1 1000000000 INTRODUCE user\(index)".utf8).withUnsafeBytes {
                service.handle(datagram: $0, from: endpoint, socket: 0, now: t0, reply: &reply)
            }
            let settings = TalkSettings(
                requests: HandshakeSettings(timeout: .milliseconds(200), maxAttempts: attempts, backoff: 2, jitter: 0.1),
                keepalive: .seconds(5), hold: .milliseconds(500), batch: formats.asksBatch(member: index))
            sessions.append(
                TalkSession(
                    server: serverEndpoint, settings: settings, random: SplitMix64(seed: seed &+ UInt64(index) &* 1000)))
        }
    }

    /// Each member types `linesEach` lines, one every `every` (a few a
    /// second by default; zero pastes them all at once), from `start` on.
    mutating func type(linesEach: Int, from start: Instant, every: Duration = .milliseconds(150)) {
        for index in sessions.indices {
            for line in 0..<linesEach {
                let at = start + every * line + .milliseconds(Int64(index * 37))
                script.append((at, index, "line \(line) from user\(index)"))
            }
        }
        script.sort { $0.at < $1.at }
    }

    /// Starts every session and runs until each has joined.
    mutating func join() throws {
        for index in sessions.indices {
            sessions[index].start(now: now)
            drain(index)
        }
        run(until: now + .seconds(120)) { sim in sim.sessions.allSatisfy { $0.username != nil } }
        try #require(sessions.allSatisfy { $0.username != nil }, "not every session joined")
    }

    /// Runs until `done` holds or virtual time reaches `limit`.
    mutating func run(until limit: Instant, _ done: (Simulation) -> Bool) {
        while !done(self), now < limit {
            steps += 1
            var next = [link.nextArrival, service.nextTimeout(), script.first?.at].compactMap { $0 }
            if forgeEvery != nil { next.append(nextForgery) }
            next += sessions.compactMap { $0.nextTimeout() }
            guard let at = next.min() else { return }
            now = max(now, min(at, limit))
            for datagram in link.arrivals(by: now) { deliver(datagram) }
            if let forgeEvery, nextForgery <= now {
                nextForgery = now + forgeEvery
                forge()
            }
            service.handleTimeout(now: now)
            drainService()
            while let line = script.first, line.at <= now {
                script.removeFirst()
                sessions[line.session].input(Array(line.line.utf8), now: now)
                drain(line.session)
            }
            for index in sessions.indices where (sessions[index].nextTimeout() ?? .init(nanoseconds: .max)) <= now {
                sessions[index].handleTimeout(now: now)
                drain(index)
            }
        }
    }

    mutating func deliver(_ datagram: Datagram) {
        if let isolated, now < isolated.until,
            datagram.to == .client(isolated.index) || datagram.from == endpoints[isolated.index]
        {
            return
        }
        switch datagram.to {
        case .server:
            service.wallClock = 1_700_000_000_000 + now.nanoseconds / 1_000_000
            var reply: [UInt8] = []
            let answered = datagram.bytes.withUnsafeBytes {
                service.handle(datagram: $0, from: datagram.from, socket: 0, now: now, reply: &reply)
            }
            if answered, let index = endpoints.firstIndex(of: datagram.from) {
                link.send(reply, from: serverEndpoint, to: .client(index), now: now)
            }
            // Pushes wait for `run` to drain the service once every datagram
            // due now is in, as chatd polls its output after a receive batch:
            // what arrived together can share a push.
        case .client(let index):
            if sessions[index].result == nil, verb(of: datagram.bytes).elementsEqual("MESSAGE".utf8) {
                pushesReceived[index] += 1
            }
            sessions[index].handle(datagram: datagram.bytes, from: datagram.from, now: now)
            drain(index)
        }
    }

    mutating func forge() {
        for index in sessions.indices {
            let seq = service.lastSeq + UInt64.random(in: 100...1_000_000_000_000, using: &forger)
            let message = ChatMessage(
                seq: seq, timeMilliseconds: 1_700_000_000_000, from: Username("mallory")!, text: Array("forged".utf8))
            var bytes: [UInt8] = []
            ChatReply.push(id: UInt32.random(in: 1...UInt32.max, using: &forger), [message], into: &bytes)
            forged += 1
            sessions[index].handle(datagram: bytes, from: serverEndpoint, now: now)
            drain(index)
        }
    }

    mutating func drainService() {
        while let transmit = service.pollTransmit() {
            guard let index = endpoints.firstIndex(of: transmit.destination) else { continue }
            link.send(transmit.bytes, from: serverEndpoint, to: .client(index), now: now)
        }
        while let work = service.pollStorageWork() {
            if case .writeSnapshot = work {
                service.snapshotWritten(.init(savedAt: 1_700_000_000, bytes: 0, duration: .zero))
            }
        }
        while service.pollEvent() != nil {}
    }

    mutating func drain(_ index: Int) {
        while let bytes = sessions[index].pollTransmit() {
            if verb(of: bytes).elementsEqual("ACK".utf8) { acksSent[index] += 1 }
            link.send(bytes, from: endpoints[index], to: .server, now: now)
        }
        while let output = sessions[index].pollOutput() {
            switch output {
            case .message(let message): transcripts[index].append(message)
            case .notice(let notice): notices[index].append(notice)
            }
        }
    }
}

/// The third field of `CHAT/1 <id> <verb> …`: enough to count pushes and
/// ACKs without parsing every datagram twice.
private func verb(of bytes: [UInt8]) -> ArraySlice<UInt8> {
    bytes.split(separator: UInt8(ascii: " "), maxSplits: 3, omittingEmptySubsequences: false).dropFirst(2).first ?? []
}

@Suite struct TalkSimulationTests {
    /// The property: 20 % loss and 10 % duplication each way, a delay that
    /// reorders, 4 members typing 12 lines each. 16 seeds for each format
    /// (BATCH, basic, a room of both), half of them over each delay.
    @Test(arguments: Formats.allCases, Array(1...16) as [UInt64])
    func everyMemberEndsWithTheSameTranscriptOverABadLink(formats: Formats, seed: UInt64) throws {
        let members = 4
        let linesEach = 12
        let delay = seed % 2 == 0 ? Delay.distant : .reordering
        var sim = Simulation(
            seed: seed, members: members, loss: 0.2, duplicate: 0.1, delay: delay, formats: formats)
        try sim.join()
        for index in sim.sessions.indices {
            // Each member speaks the format it asked for: chatd grants BATCH to whoever asks.
            let window = sim.sessions[index].batchWindow
            #expect(window == (formats.asksBatch(member: index) ? RoomConfiguration().window : nil))
        }
        sim.type(linesEach: linesEach, from: sim.now + .milliseconds(100))
        // Everyone talks; then, once the room holds every line and every
        // session has printed up to its end, input ends everywhere.
        sim.run(until: sim.now + .seconds(600)) { sim in
            sim.script.isEmpty && sim.service.lastSeq == members * linesEach
                && sim.sessions.allSatisfy { $0.printed == sim.service.lastSeq }
        }
        try #require(sim.service.history.count == members * linesEach, "lines posted: \(sim.notices)")
        for index in sim.sessions.indices { sim.sessions[index].endOfInput(now: sim.now) }
        for index in sim.sessions.indices { sim.drain(index) }
        sim.run(until: sim.now + .seconds(300)) { sim in sim.sessions.allSatisfy { $0.result != nil } }

        let history = sim.service.history
        #expect(history.map(\.seq) == Array(1...UInt64(members * linesEach)))
        // Every line typed is in the room once.
        let typed = (0..<members).flatMap { member in (0..<linesEach).map { "line \($0) from user\(member)" } }
        #expect(history.map(\.textString).sorted() == typed.sorted())
        for index in sim.sessions.indices {
            #expect(sim.sessions[index].result == .left(undelivered: 0), "session \(index): \(sim.notices[index])")
            #expect(sim.transcripts[index] == history, "session \(index)'s transcript differs")
            #expect(!sim.notices[index].contains { if case .missed = $0 { true } else { false } })
            // One person's lines come out in the order they were typed.
            let own = history.filter { $0.from.text == "user\(index)" }.map(\.textString)
            #expect(own == (0..<linesEach).map { "line \($0) from user\(index)" })
            // A basic member ACKs every push it receives; a BATCH member
            // never more than one per push, however bad the link.
            if formats.asksBatch(member: index) {
                #expect(sim.acksSent[index] <= sim.pushesReceived[index], "session \(index)")
            } else {
                #expect(sim.acksSent[index] == sim.pushesReceived[index], "session \(index)")
            }
        }
        // A JOIN retransmission overtaken by the LEAVE can make a member of
        // a session that has gone; the server's presence TTL ends that.
        sim.run(until: sim.now + .seconds(150)) { sim in sim.service.memberCount == 0 }
        #expect(sim.service.memberCount == 0)
    }

    /// Pushes forged from the server's address with seqs far ahead, among
    /// the real ones on a bad link, change no transcript and make no
    /// "missed" notice: only answers to a session's own requests say which
    /// seqs exist.
    @Test(arguments: Formats.allCases, Array(1...3) as [UInt64])
    func forgedPushesFarAheadChangeNoTranscript(formats: Formats, seed: UInt64) throws {
        let members = 3
        let linesEach = 8
        var sim = Simulation(seed: seed, members: members, loss: 0.2, duplicate: 0.1, formats: formats)
        try sim.join()
        sim.forgeEvery = .milliseconds(700)
        sim.nextForgery = sim.now
        sim.type(linesEach: linesEach, from: sim.now + .milliseconds(100))
        sim.run(until: sim.now + .seconds(600)) { sim in
            sim.script.isEmpty && sim.service.lastSeq == members * linesEach
                && sim.sessions.allSatisfy { $0.printed == sim.service.lastSeq }
        }
        // Keep forging a while after the room goes quiet: the hole each
        // forgery claims outlasts the HISTORY rounds many times over.
        sim.run(until: sim.now + .seconds(120)) { _ in false }
        sim.forgeEvery = nil
        for index in sim.sessions.indices { sim.sessions[index].endOfInput(now: sim.now) }
        for index in sim.sessions.indices { sim.drain(index) }
        sim.run(until: sim.now + .seconds(300)) { sim in sim.sessions.allSatisfy { $0.result != nil } }

        let history = sim.service.history
        #expect(history.count == members * linesEach)
        #expect(sim.forged > 100)
        for index in sim.sessions.indices {
            #expect(sim.sessions[index].result == .left(undelivered: 0), "session \(index): \(sim.notices[index])")
            #expect(sim.transcripts[index] == history, "session \(index)'s transcript differs")
            #expect(!sim.notices[index].contains { if case .missed = $0 { true } else { false } })
        }
    }

    /// The point of BATCH: members that paste at once, over a clean but
    /// distant link, cost the server fewer datagrams (ACKs it receives, and
    /// no more pushes) than in the basic format, and print the same.
    @Test func aBatchRoomMovesTheSameMessagesInFewerDatagrams() throws {
        var datagrams: [Formats: (pushes: Int, acks: Int)] = [:]
        for formats in [Formats.batch, .basic] {
            let members = 4
            var sim = Simulation(seed: 5, members: members, loss: 0, duplicate: 0, delay: .distant, formats: formats)
            try sim.join()
            sim.type(linesEach: 20, from: sim.now + .milliseconds(100), every: .zero)
            sim.run(until: sim.now + .seconds(60)) { sim in
                sim.script.isEmpty && sim.service.lastSeq == members * 20
                    && sim.sessions.allSatisfy { $0.printed == sim.service.lastSeq }
            }
            for index in sim.sessions.indices { #expect(sim.transcripts[index] == sim.service.history) }
            datagrams[formats] = (sim.pushesReceived.reduce(0, +), sim.acksSent.reduce(0, +))
        }
        let batch = try #require(datagrams[.batch]), basic = try #require(datagrams[.basic])
        #expect(basic.pushes == 4 * 80 && basic.acks == basic.pushes)
        // Here one message a millisecond at most reaches the server, so few
        // pushes carry two; the delayed ACKs are the saving (a third and
        // more: pushes 10 ms apart share one).
        #expect(batch.pushes <= basic.pushes)
        #expect(batch.acks * 4 < basic.acks * 3)
    }

    /// A member cut off for longer than the server's retries is dropped; it
    /// says the server is lost, its lines typed meanwhile are undelivered,
    /// and once the link is back its JOIN makes it a member again and
    /// HISTORY brings back what it missed.
    @Test(arguments: Formats.allCases)
    func aMemberCutOffPastTheServersRetriesCatchesUp(formats: Formats) throws {
        var sim = Simulation(seed: 11, members: 2, loss: 0, duplicate: 0, formats: formats, attempts: 4)
        try sim.join()
        let start = sim.now
        sim.type(linesEach: 10, from: start + .seconds(1))
        sim.isolated = (1, start + .seconds(21))
        sim.run(until: start + .seconds(21)) { _ in false }
        #expect(sim.service.memberCount == 1, "user1 should have been dropped as unreachable")
        sim.run(until: sim.now + .seconds(60)) { sim in
            sim.sessions.allSatisfy { $0.printed == sim.service.lastSeq } && !sim.sessions[1].isServerLost
        }
        let history = sim.service.history
        #expect(history.count == 10)
        #expect(sim.transcripts[0] == history)
        #expect(sim.transcripts[1] == history)
        let undelivered = sim.notices[1].filter { if case .notDelivered(_, .noAnswer) = $0 { true } else { false } }
        #expect(undelivered.count == 10)
        #expect(sim.notices[1].filter { $0 == .serverLost }.count == 1)
        #expect(sim.notices[1].last == .serverBack)
        #expect(sim.service.memberCount == 2)
    }
}

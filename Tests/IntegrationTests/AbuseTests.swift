// Abuse of the chat room from 5,000 loopback addresses while a legitimate
// member is timed: SAY floods within and over messages_per_s, forged JOINs
// and SAYs without a valid cookie, ACKs of push ids that do not exist.
//
// Too heavy for `make test` (5,000 sockets, about 250,000 datagrams, 10 s):
// it runs when CHATD_FAULT_TESTS is set, as `make chat-fault-test` does
// (with the release chatd, which is what runs in production).

import ChatCore
import ChatSystem
import Foundation
import Glibc
import Synchronization
import Testing

/// chatd's resident memory in KiB (VmRSS), or nil once it has exited.
func residentKiB(of pid: Int32) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
    else { return nil }
    return Int(line.split(separator: " ").dropFirst().first ?? "")
}

/// CPU seconds a process has used (user and system), from /proc/<pid>/stat.
func cpuSeconds(of pid: Int32) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let end = stat.lastIndex(of: ")")
    else { return nil }
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let fields = stat[stat.index(after: end)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// A member that only wants to chat: it joins, acknowledges every push,
/// posts a line every 1.5 s (within the test's messages_per_s), and notes
/// how long each message took from its SAY's send (a timestamp in its
/// text) to its push's arrival here. Runs on a thread of its own until
/// `stop()`.
final class TimedMember: Sendable {
    struct Report: Sendable {
        /// Delivery latency of every message first pushed here that carried a send time.
        var latencies: [Duration] = []
        /// Of those, the member's own lines.
        var ownLatencies: [Duration] = []
        var seqs: Set<UInt64> = []
        var duplicates = 0
        var ownSaid = 0
        var ownRefused = 0
        var error: String?
    }

    private let running = Atomic<Bool>(true)
    private let finished = DispatchSemaphore(value: 0)
    private let report = Mutex(Report())
    private let joined = DispatchSemaphore(value: 0)

    init(source: String, name: String, port: UInt16) {
        let thread = Thread { [self] in
            do {
                try run(source: source, name: name, port: port)
            } catch {
                report.withLock { $0.error = "\(error)" }
                joined.signal()
            }
            finished.signal()
        }
        thread.name = "timed member"
        thread.start()
    }

    /// Waits until the member has joined (or failed to).
    func waitJoined() -> Bool {
        joined.wait()
        return report.withLock { $0.error == nil }
    }

    func stop() -> Report {
        if running.exchange(false, ordering: .acquiringAndReleasing) { finished.wait() }
        return report.withLock { $0 }
    }

    /// `t<monotonic ns> <what>`: the text of a timed message.
    static func text(_ what: String) -> [UInt8] { Array("t\(SystemClock.monotonicNow().nanoseconds) \(what)".utf8) }

    private func run(source: String, name: String, port: UInt16) throws {
        let client = try RawChatClient(source: source, port: port)
        try client.introduce(name)
        guard case .success? = try client.ask(.join(id: 0, cookie: 0)) else {
            throw TestFailure(description: "the timed member could not join")
        }
        // One line now, so that both of chatd's limiters hold their tables
        // before memory is first measured.
        guard seq(of: try client.ask(.say(id: 0, cookie: 0, token: 1, text: Self.text("hello")))) != nil else {
            throw TestFailure(description: "the timed member's first line was refused")
        }
        joined.signal()
        var token: UInt64 = 1
        var nextLine = ContinuousClock.now + .milliseconds(1500)
        var buffer = [UInt8](repeating: 0, count: 2048)
        while running.load(ordering: .acquiring) {
            if ContinuousClock.now >= nextLine {
                token += 1
                try client.send(.say(id: client.newID(), cookie: 0, token: token, text: Self.text("legit \(token)")))
                report.withLock { $0.ownSaid += 1 }
                nextLine = ContinuousClock.now + .milliseconds(1500)
            }
            guard try client.socket.waitReadable(timeoutMilliseconds: 5) else { continue }
            while case .processed(let (count, _)) = try buffer.withUnsafeMutableBytes({ try client.socket.receive(into: $0) }) {
                let arrived = SystemClock.monotonicNow()
                guard let inbound = ChatInbound(Array(buffer[..<min(count, buffer.count)])) else { continue }
                switch inbound {
                case .message(let sid, let messages):
                    _ = try client.socket.send(ChatRequest.ack(id: sid).bytes, to: client.server)
                    for message in messages {
                        let first = report.withLock { $0.seqs.insert(message.seq).inserted }
                        guard first else {
                            report.withLock { $0.duplicates += 1 }
                            continue
                        }
                        let text = message.textString
                        guard text.hasPrefix("t"), let sent = Int64(text.dropFirst().prefix { $0 != " " }) else { continue }
                        let latency = Duration.nanoseconds(arrived.nanoseconds - sent)
                        report.withLock {
                            $0.latencies.append(latency)
                            if message.from.text == name { $0.ownLatencies.append(latency) }
                        }
                    }
                case .error:
                    report.withLock { $0.ownRefused += 1 }
                case .success, .cookie:
                    break
                }
            }
        }
    }
}

@Suite(.serialized, .enabled(if: heavyFaultTests, "heavy: runs with CHATD_FAULT_TESTS=1 (make chat-fault-test)"))
struct AbuseTests {
    /// The kinds of flooding socket, by their index among the 5,000.
    enum Kind: CaseIterable, CustomStringConvertible {
        /// SAY with cookie 0 or a made-up one, from an address with no name:
        /// 4 a second (within the per-address datagram limit), or 40 (over it).
        case forgedSayWithin, forgedSayOver
        /// JOIN with a made-up cookie or another endpoint's valid one, 4 a
        /// second, half of them from registered addresses.
        case forgedJoin
        /// ACK of a made-up push id, 4 a second.
        case forgedAck
        /// Registered, with its valid cookie, posting within messages_per_s
        /// (one every 2 s) or over it (4 a second).
        case sayWithin, sayOver

        static func of(_ index: Int) -> Kind {
            switch index {
            case ..<1250: .forgedSayWithin
            case ..<1500: .forgedSayOver
            case ..<3000: .forgedJoin
            case ..<4250: .forgedAck
            case ..<4750: .sayWithin
            default: .sayOver
            }
        }

        /// Datagrams per round of 250 ms; the ones less often than that by round number.
        func sends(inRound round: Int) -> Int {
            switch self {
            case .forgedSayWithin: 1
            case .forgedSayOver: 10
            case .forgedJoin: 1
            case .forgedAck: 1
            case .sayWithin: round % 8 == 0 ? 1 : 0
            case .sayOver: 1
            }
        }

        var isForged: Bool { self != .sayWithin && self != .sayOver }

        var description: String {
            switch self {
            case .forgedSayWithin: "forged SAY within the datagram limit"
            case .forgedSayOver: "forged SAY over it"
            case .forgedJoin: "forged JOIN"
            case .forgedAck: "ACK of no push"
            case .sayWithin: "SAY within messages_per_s"
            case .sayOver: "SAY over it"
            }
        }
    }

    /// One flooding socket.
    final class Flooder {
        let socket: UDPSocket
        let index: Int
        let kind: Kind
        let registered: Bool
        var cookie: UInt64 = 0
        static let firstID: UInt32 = 1_000_001
        var nextID = firstID
        /// The size of each request sent, by id from `firstID` on, for the 3× rule.
        private var sizes: [UInt16] = []
        var token: UInt64 = 0

        init(index: Int) throws {
            self.index = index
            kind = Kind.of(index)
            registered = !kind.isForged || (kind == .forgedJoin && index % 2 == 0)
            socket = try UDPSocket(binding: Endpoint(IPAddress(Self.address(index))!, port: 0))
        }

        static func address(_ index: Int) -> String { "127.40.\(index / 250).\(index % 250 + 1)" }

        func newID() -> UInt32 {
            defer { nextID += 1 }
            return nextID
        }

        func record(id: UInt32, size: Int) {
            let offset = Int(id - Self.firstID)
            if sizes.count <= offset { sizes += repeatElement(0, count: offset + 1 - sizes.count) }
            sizes[offset] = UInt16(size)
        }

        func size(ofRequest id: UInt32) -> Int? {
            guard id >= Self.firstID, Int(id - Self.firstID) < sizes.count, sizes[Int(id - Self.firstID)] > 0 else { return nil }
            return Int(sizes[Int(id - Self.firstID)])
        }
    }

    /// The 5,000 flooders, what they sent and what came back.
    final class Flood {
        let flooders: [Flooder]
        /// The same in an order that mixes the kinds, for sending.
        private let mixed: [Flooder]
        let server: Endpoint
        private let epoll: Epoll
        private var events: [EpollEvent] = []
        private var buffer = [UInt8](repeating: 0, count: 2048)
        private var random = SystemRandomNumberGenerator()
        /// Valid cookies of other endpoints, for forged JOINs.
        var stolenCookies: [UInt64] = []

        var sent: [Kind: Int] = [:]
        var answers: [Kind: Int] = [:]
        var accepted: [Kind: Int] = [:]
        var rateLimited: [Kind: Int] = [:]
        /// Something other than COOKIE sent to an endpoint that never showed its cookie.
        var notCookie: [String] = []
        /// Pushes to a flooder (none is a member).
        var pushes: [String] = []
        var worstFactor = 0.0
        var overThreeTimes: [String] = []

        init(server: Endpoint, count: Int) throws {
            self.server = server
            flooders = try (0..<count).map { try Flooder(index: $0) }
            var generator = SplitMix64(seed: 10)
            mixed = flooders.shuffled(using: &generator)
            epoll = try Epoll(maxEvents: 256)
            for flooder in flooders { try epoll.add(fd: flooder.socket.fd, events: .readable, tag: UInt64(flooder.index)) }
        }

        /// Sends `request` from every flooder of `who` until `done` accepts an
        /// answer (5 tries, 2 s each), 100 at a time so that chatd keeps up.
        func setUp(_ who: [Flooder], _ request: (Flooder) -> [UInt8], until done: (Flooder, ChatInbound?, String) -> Bool) throws {
            var waiting = Set(who.map(\.index))
            for _ in 0..<5 where !waiting.isEmpty {
                func collect(_ timeout: Int32) throws {
                    while try epoll.wait(timeoutMilliseconds: timeout, into: &events) > 0 {
                        for event in events {
                            let flooder = flooders[Int(event.tag)]
                            while let (bytes, text) = try receive(flooder) {
                                if waiting.contains(flooder.index), done(flooder, ChatInbound(bytes), text) {
                                    waiting.remove(flooder.index)
                                }
                            }
                        }
                    }
                }
                for (n, index) in waiting.sorted().enumerated() {
                    _ = try flooders[index].socket.send(request(flooders[index]), to: server)
                    if n % 100 == 99 { try collect(1) }
                }
                let deadline = ContinuousClock.now + .seconds(2)
                while !waiting.isEmpty, ContinuousClock.now < deadline { try collect(20) }
            }
            guard waiting.isEmpty else { throw TestFailure(description: "\(waiting.count) flooders were not set up") }
        }

        private func receive(_ flooder: Flooder) throws -> ([UInt8], String)? {
            guard case .processed(let (count, _)) = try buffer.withUnsafeMutableBytes({ try flooder.socket.receive(into: $0) })
            else { return nil }
            let bytes = Array(buffer[..<min(count, buffer.count)])
            return (bytes, String(decoding: bytes, as: UTF8.self))
        }

        /// One round's datagrams from every flooder whose kind is in `kinds`,
        /// spread evenly over `span` (kinds mixed, 50 flooders at a time)
        /// with what came back handled on the way.
        func round(_ round: Int, kinds: Set<Kind>, span: Duration) throws {
            let start = ContinuousClock.now
            let active = mixed.filter { kinds.contains($0.kind) }
            for (n, flooder) in active.enumerated() {
                for k in 0..<flooder.kind.sends(inRound: round) { try send(from: flooder, round: round, k: k) }
                if n % 50 == 49 {
                    try drain()
                    // Spread over the round, not all at once: the kernel would
                    // drop most of a burst of 10,000 before chatd saw it.
                    let due = start + span * (Double(n + 1) / Double(active.count)) * 0.8
                    let early = due - ContinuousClock.now
                    if early > .zero { Thread.sleep(forTimeInterval: Double(early.roundedUpMilliseconds) / 1000) }
                }
            }
            try drain()
        }

        private func send(from flooder: Flooder, round: Int, k: Int) throws {
            let id = flooder.newID()
            let request: ChatRequest
            switch flooder.kind {
            case .forgedSayWithin, .forgedSayOver:
                let cookie: UInt64 = k % 2 == 0 ? 0 : random.next()
                request = .say(id: id, cookie: cookie, token: random.next(), text: Array("forged \(id)".utf8))
            case .forgedJoin:
                let cookie = round % 2 == 0 ? random.next() : stolenCookies[Int(id) % stolenCookies.count]
                request = .join(id: id, cookie: cookie)
            case .forgedAck:
                request = .ack(id: UInt32.random(in: 1...UInt32.max, using: &random))
            case .sayWithin, .sayOver:
                flooder.token += 1
                request = .say(id: id, cookie: flooder.cookie, token: flooder.token, text: TimedMember.text("flood \(id)"))
            }
            let bytes = request.bytes
            // An ACK carries a push id, not one of ours, and earns no answer.
            if flooder.kind != .forgedAck { flooder.record(id: id, size: bytes.count) }
            _ = try flooder.socket.send(bytes, to: server)
            sent[flooder.kind, default: 0] += 1
        }

        /// Handles every datagram the flooders have received.
        func drain() throws {
            while try epoll.wait(timeoutMilliseconds: 0, into: &events) > 0 {
                for event in events {
                    let flooder = flooders[Int(event.tag)]
                    while let (bytes, text) = try receive(flooder) { handle(bytes, text, at: flooder) }
                }
            }
        }

        private func handle(_ bytes: [UInt8], _ text: String, at flooder: Flooder) {
            let inbound = ChatInbound(bytes)
            answers[flooder.kind, default: 0] += 1
            if case .message? = inbound {
                pushes.append("\(Flooder.address(flooder.index)): \(text)")
                return
            }
            if flooder.kind.isForged {
                guard case .cookie(let id, _)? = inbound, let size = flooder.size(ofRequest: id) else {
                    notCookie.append("\(flooder.kind): \(text)")
                    return
                }
                let factor = Double(bytes.count) / Double(size)
                worstFactor = max(worstFactor, factor)
                if factor > 3 { overThreeTimes.append("\(text) for \(size) bytes") }
                return
            }
            switch inbound {
            case .success?: accepted[flooder.kind, default: 0] += 1
            case .error(_, .rateLimited, _)?: rateLimited[flooder.kind, default: 0] += 1
            case .cookie(_, let cookie)?: flooder.cookie = cookie
            default: notCookie.append("\(flooder.kind): \(text)")
            }
        }
    }

    /// 5,000 addresses flood the room while a member posts and is timed:
    /// 4 s of forged traffic only (SAYs and JOINs without a valid cookie,
    /// ACKs of no push), then 6 s of that and SAYs from 750 registered
    /// addresses with their cookies, within and over messages_per_s.
    ///
    /// Passes when: the member's delivery latency p99 stays under 50 ms and
    /// it receives every message accepted, once; the flooders that never
    /// showed a valid cookie get COOKIE answers and nothing else (no push,
    /// no other answer), each at most 3 times its request, and ACKs of no
    /// push get nothing; no flooder gets a push; the SAYs within
    /// messages_per_s are all accepted and some over it are refused; the
    /// per-address limit holds the forged SAYs over it to 40 + 20 a second;
    /// forged traffic grows chatd's memory by less than 1 MiB, and accepted
    /// messages by less than 4 MiB plus 256 bytes each.
    @Test func aFloodFrom5000AddressesLeavesMemoryBoundedAndTheRoomOnTime() throws {
        try raiseOpenFileLimit()
        // The shipped [limits]; one SAY a second per address with a burst of
        // 2, so that the 750 posting addresses make a busy room (about 500
        // messages a second: chatd has no room-wide limit, so the room's
        // rate is the addresses that post times messages_per_s).
        let daemon = try Daemon(extraConfig: "\n[chat]\nmessages_per_s = 1.0\nmessages_burst = 2\n")
        try daemon.start()
        let pid = daemon.process!.pid
        let atStart = residentKiB(of: pid) ?? 0
        let flood = try Flood(server: Endpoint(.loopbackIPv4, port: daemon.port), count: 5000)
        // Names for the registered ones, cookies for the posters.
        try flood.setUp(flood.flooders.filter(\.registered), { Array("CHAT/1 \($0.newID()) INTRODUCE f\($0.index)".utf8) }) {
            _, _, text in text.contains(" SUCCESS f")
        }
        let posters = flood.flooders.filter { !$0.kind.isForged }
        try flood.setUp(posters, { ChatRequest.who(id: $0.newID(), cookie: 0, after: nil).bytes }) { flooder, inbound, _ in
            guard case .cookie(_, let cookie)? = inbound else { return false }
            flooder.cookie = cookie
            return true
        }
        flood.stolenCookies = posters.map(\.cookie)
        let member = TimedMember(source: "127.40.250.1", name: "legit", port: daemon.port)
        #expect(member.waitJoined(), "the timed member could not join")
        Thread.sleep(forTimeInterval: 0.5)
        let beforeFlood = residentKiB(of: pid) ?? 0

        let round: Duration = .milliseconds(250)
        var peakForged = beforeFlood
        var peak = beforeFlood
        let forgedKinds = Set(Kind.allCases.filter(\.isForged))
        let cpuBefore = cpuSeconds(of: pid) ?? 0
        let ownCPUBefore = cpuSeconds(of: getpid()) ?? 0
        let forgedStart = ContinuousClock.now
        for n in 0..<16 {
            try flood.round(n, kinds: forgedKinds, span: round)
            peakForged = max(peakForged, residentKiB(of: pid) ?? 0)
            try wait(until: forgedStart + round * (n + 1), flood)
        }
        let forgedTime = ContinuousClock.now - forgedStart
        let sentForged = flood.sent.values.reduce(0, +)
        let fullStart = ContinuousClock.now
        for n in 16..<40 {
            try flood.round(n, kinds: Set(Kind.allCases), span: round)
            peak = max(peak, residentKiB(of: pid) ?? 0)
            try wait(until: fullStart + round * (n - 15), flood)
        }
        let fullTime = ContinuousClock.now - fullStart
        let floodTime = forgedTime + fullTime
        let chatdCPU = (cpuSeconds(of: pid) ?? 0) - cpuBefore
        let ownCPU = (cpuSeconds(of: getpid()) ?? 0) - ownCPUBefore
        // Let the room settle: everything the member should have is there.
        try wait(until: ContinuousClock.now + .seconds(1), flood)
        let report = member.stop()
        let afterFlood = residentKiB(of: pid) ?? 0
        let probe = try RawChatClient(source: "127.40.250.2", port: daemon.port)
        try probe.introduce("probe")
        var lastSeq: UInt64?
        if case .success(_, let fields)? = try probe.ask(.join(id: 0, cookie: 0)), fields.count == 2 {
            lastSeq = UInt64(fields[1])
        }
        let log = daemon.log.split(separator: "\n")
        #expect(try daemon.stop() == 0)

        let accepted = flood.accepted.values.reduce(0, +)
        let totalSent = flood.sent.values.reduce(0, +)
        let (p50, p99, slowest) = (percentile(report.latencies, 0.5), percentile(report.latencies, 0.99), percentile(report.latencies, 1))
        let seconds = { (duration: Duration) in Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18 }
        // Memory. Forged traffic leaves nothing behind: a cookie is a hash
        // of the endpoint, not a record of it, and the per-address limiter's
        // table (65,536 slots of 32 bytes, 2 MiB, holding 32,768 addresses
        // before its second generation starts) was allocated by the first
        // datagram. An accepted SAY leaves its answer for 5 minutes in the
        // token memory (a dictionary entry and a place in the expiry order,
        // under 256 bytes with the tables' spare room), at most 1,200,000 of
        // them: beyond that SAY is refused RATE_LIMITED. History holds its
        // last 2,048 messages, the journal's records wait in memory only
        // until their sync.
        let forgedBound = 1024
        let fullBound = 4 * 1024 + accepted * 256 / 1024
        let byKind = { (counts: [Kind: Int]) in
            Kind.allCases.compactMap { kind in counts[kind].map { "\(kind) \($0)" } }.joined(separator: ", ")
        }
        print(
            """
            abuse: \(totalSent) datagrams from 5,000 addresses in \(ms(floodTime)) (\(sentForged) forged only in \(ms(forgedTime)), then \(totalSent - sentForged) in \(ms(fullTime))); chatd used \(String(format: "%.1f", chatdCPU)) CPU s, this test \(String(format: "%.1f", ownCPU)); sent: \(byKind(flood.sent))
            abuse: answered: \(byKind(flood.answers)); SAYs accepted: \(byKind(flood.accepted)); refused RATE_LIMITED: \(byKind(flood.rateLimited)); worst reply to an endpoint without its cookie \(String(format: "%.2f", flood.worstFactor)) × its request
            abuse: the member received \(report.seqs.count) messages (last seq \(lastSeq.map(String.init) ?? "?")), \(report.duplicates) twice; delivery latency p50 \(ms(p50)), p99 \(ms(p99)), max \(ms(slowest)); its own \(report.ownLatencies.count) lines p99 \(ms(percentile(report.ownLatencies, 0.99)))
            abuse: chatd VmRSS \(atStart) KiB at start, \(beforeFlood) KiB before the flood (1,500 names, the member), peak \(peakForged) KiB in the forged flood (bound +\(forgedBound)), peak \(peak) KiB with the SAYs (bound +\(fullBound) for \(accepted) messages), \(afterFlood) KiB after; \(log.count) log lines
            """)
        let left = log.filter { $0.contains("member left") }
        for line in left.prefix(3) { print("abuse: chatd: \(line)") }
        if left.count > 3 { print("abuse: chatd: and \(left.count - 3) more members left") }
        // The flood was what it says: the generator kept to its rounds.
        #expect(seconds(floodTime) < 15, "the flood took \(ms(floodTime)) instead of 10 s: its rates were lower than they say")
        #expect(report.error == nil, "\(report.error ?? "")")
        #expect(report.latencies.count > 1000, "the room carried too little to judge: \(report.latencies.count)")
        #expect(p99 < .milliseconds(50), "the member's p99 \(ms(p99)) during the flood")
        if let lastSeq {
            #expect(report.seqs == Set(1...lastSeq), "the member is missing \(Int(lastSeq) - report.seqs.count) messages")
        } else {
            Issue.record("no last seq after the flood")
        }
        #expect(report.ownRefused == 0, "the member's own lines were refused")
        #expect(flood.pushes.isEmpty, "pushes to flooders: \(flood.pushes.prefix(3))")
        #expect(flood.notCookie.isEmpty, "other answers than COOKIE to endpoints without their cookie: \(flood.notCookie.prefix(3))")
        #expect(flood.overThreeTimes.isEmpty, "\(flood.overThreeTimes.prefix(3))")
        #expect(flood.answers[.forgedAck, default: 0] == 0, "ACKs of made-up push ids were answered")
        #expect(flood.rateLimited[.sayWithin, default: 0] == 0, "SAYs within messages_per_s were refused")
        #expect(flood.accepted[.sayWithin, default: 0] == flood.sent[.sayWithin, default: 0])
        #expect(flood.rateLimited[.sayOver, default: 0] > 0 && flood.accepted[.sayOver, default: 0] > 0)
        #expect(Double(flood.accepted[.sayOver, default: 0]) <= 250 * (2 + seconds(fullTime) + 1))
        let forgedOverAllowed = 250 * (40 + 20 * (seconds(floodTime) + 1))
        #expect(Double(flood.answers[.forgedSayOver, default: 0]) <= forgedOverAllowed, "the per-address limit did not hold")
        #expect(peakForged - beforeFlood < forgedBound, "forged traffic grew chatd by \(peakForged - beforeFlood) KiB")
        #expect(peak - beforeFlood < fullBound, "the flood grew chatd by \(peak - beforeFlood) KiB")
        #expect(afterFlood - beforeFlood < fullBound)
    }

    /// Handles what comes back until `deadline`.
    private func wait(until deadline: ContinuousClock.Instant, _ flood: Flood) throws {
        repeat {
            try flood.drain()
            Thread.sleep(forTimeInterval: 0.005)
        } while ContinuousClock.now < deadline
    }
}

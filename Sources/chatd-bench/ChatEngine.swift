// The chat room's load generator: M members in one room, S of them talking.
//
// Theory of operation
// -------------------
// Every member is a nonblocking UDP socket bound to its own loopback
// address (the server knows clients by address), all driven by one thread
// over one epoll set, like LoadEngine. A run goes through phases the
// command calls in turn:
//
//   register   INTRODUCE u<n> from every member (a window of them at a time,
//              retried), as `chatd-bench run` does;
//   join       JOIN 0 → COOKIE c → JOIN c, asking for the BATCH format with
//              `--ack cumulative`; a JOIN answer without `BATCH <window>`
//              (chatd before BATCH, chatfloor) or an ERROR to the BATCH JOIN
//              makes that member fall back to the basic format, one ACK per
//              push, as a client of the protocol must;
//   settle     nothing sent, whatever still arrives is answered;
//   send       the first S members SAY: open loop at a total rate R spread
//              evenly (message k at t0 + k/R from sender k mod S, as
//              ircload.c), or closed loop with W messages per sender in
//              flight, a message counting done when the observer (member S,
//              the first non-sender) has received it;
//   drain      until every member has every accepted message and every SAY
//              is answered (at most a few seconds);
//   leave      LEAVE from every member: NOT_JOINED says the server dropped it.
//
// Receiving: a push is acknowledged at once in the basic format, and in the
// BATCH format as PROTOCOL.md's "When a BATCH client acknowledges" says: at
// once for a duplicate or out-of-order push, else after
// min(4, max(1, window/2)) pushes or 10 ms after the oldest unacknowledged
// one, whichever comes first, with the member's contiguous seq. Each
// member records each seq once: a bitmap of 2048 seqs past its contiguous
// seq tells first receipts from duplicates; a hole wider than that (a
// server that never retransmits, like chatfloor) is skipped and counted.
// The text of every message starts with a stamp (ChatWire.swift) naming the
// sender, the token and the send time, so a first receipt yields the
// delivery latency with no lookup; the observer's receipt also frees the
// sender's closed-loop slot.
//
// The hot path allocates nothing: one recvmmsg batch and one sendmmsg batch
// are shared by all members (one member's socket is drained at a time, its
// ACKs go out in one sendmmsg), requests are written into reused buffers,
// member and SAY state live in flat buffers, and times are nanoseconds of
// the monotonic clock, read once per received batch.
//
// Request ids: a member has at most one control request (INTRODUCE, JOIN,
// LEAVE) in flight, with an id whose top bit is set; SAY ids have it clear
// and carry the SAY's slot in the sender's table in their low bits, so a
// reply finds its SAY without a search.

import ChatCore
import ChatSystem
import Histogram

/// How members acknowledge pushes.
enum AckMode: String, CaseIterable, Sendable {
    /// One ACK per push, the basic format.
    case perPush = "per-push"
    /// The BATCH format, asked for at JOIN; members fall back to per-push when the server does not offer it.
    case cumulative
}

/// What happened while recording (the send and drain phases).
struct ChatCounters: Sendable {
    /// SAY requests sent (first sends; resends after COOKIE not counted).
    var saysSent = 0
    /// SAYs answered SUCCESS.
    var accepted = 0
    /// First receipts of this run's messages, summed over members.
    var deliveries = 0
    /// Push datagrams received, and the entries (messages) they carried.
    var pushes = 0
    var entries = 0
    /// Pushes that brought a member nothing new (retransmissions of pushes it had).
    var duplicatePushes = 0
    /// Entries whose seq the member already had.
    var duplicateMessages = 0
    /// Entries older than the member's JOIN (left over from an earlier run).
    var staleMessages = 0
    /// New entries whose text is not this run's stamp (someone else talking in the room).
    var foreignMessages = 0
    /// Seqs a member stopped waiting for: a hole wider than its bitmap.
    var skipped = 0
    /// ACK datagrams sent.
    var acksSent = 0
    /// ERROR replies and datagrams that do not parse; the next two are among them.
    var errors = 0
    var rateLimited = 0
    var unavailable = 0
    /// SAYs with no answer within the timeout.
    var sayUnanswered = 0
    /// Closed loop: SAYs accepted but not seen by the observer within the timeout.
    var notObserved = 0
    /// Requests sent again with a new cookie after a COOKIE answer.
    var cookieRetries = 0
    /// Sends the kernel refused or could not take (a full buffer).
    var sendFailures = 0
    /// Datagrams from elsewhere, and replies to nothing in flight.
    var strays = 0
    /// Keepalive JOINs sent.
    var keepalives = 0
}

/// One second's progress, for the progress line.
struct ChatProgress: Sendable {
    enum Phase: String, Sendable { case registering, joining, settling, sending, draining, leaving }
    var phase: Phase
    var elapsed: Double
    /// Members done with the current setup phase (registered, joined, left).
    var done: Int
    var members: Int
    var deliveriesLastSecond: Int
    var counters: ChatCounters
}

final class ChatEngine {
    // MARK: State

    private enum Control: UInt8 { case none, introduce, join, leave }
    private enum Standing: UInt8 { case new, registered, joined, left, dropped }

    private struct Member {
        var cookie: UInt64 = 0
        var standing = Standing.new
        var control = Control.none
        var controlID: UInt32 = 0
        var controlSent: Int64 = 0
        var controlAttempts: Int32 = 0
        /// Whether its JOINs still ask for BATCH (false after the server refused it).
        var askBatch = false
        /// Whether the server speaks BATCH to it: cumulative ACKs.
        var batch = false
        /// BATCH: acknowledge once this many pushes are unacknowledged.
        var ackEvery: Int32 = 1
        var unacked: Int32 = 0
        var unackedSince: Int64 = 0
        /// The newest push id not yet acknowledged.
        var lastSid: UInt32 = 0
        /// The last seq given when it joined: older seqs are stale.
        var joinSeq: UInt64 = 0
        /// Every seq up to this one received (or skipped).
        var contiguous: UInt64 = 0
        /// First receipts of this run's messages.
        var received = 0
        var lastJoin: Int64 = 0
        var nextControl: UInt32 = 0
    }

    private struct SayEntry {
        var n: UInt64 = 0
        var id: UInt32 = 0
        var sent: Int64 = 0
        var flags: UInt8 = 0
    }

    private enum SayFlag {
        static let answered: UInt8 = 1
        static let observed: UInt8 = 2
        /// Its closed-loop slot was given back.
        static let freed: UInt8 = 4
        static let done: UInt8 = 8
    }

    private struct Sender {
        /// Messages it has sent; the next has number nextN.
        var nextN: UInt64 = 0
        /// The oldest message not done.
        var oldest: UInt64 = 0
        /// Closed loop: messages in its window.
        var outstanding = 0
        /// Counts sends, for fresh ids.
        var attempt: UInt32 = 0
    }

    let memberCount: Int
    let senderCount: Int
    /// Total open-loop rate in messages per second; 0 for the closed loop.
    let rate: Double
    let window: Int
    let textBytes: Int
    let ackMode: AckMode
    let observer: Int
    private let timeout: Int64
    private let keepalive: Int64
    private let ackDelay: Int64 = 10_000_000
    private let setupWindow: Int
    private let server: Endpoint
    private let sockets: [UDPSocket]
    private let addresses: [UInt32]
    private let names: [[UInt8]]
    private let epoll: Epoll
    private var events: [EpollEvent] = []
    private let members: UnsafeMutableBufferPointer<Member>
    /// Per member, `ringWords` words: bit (seq mod ringBits) set when seq, past its contiguous seq, arrived.
    private let ring: UnsafeMutableBufferPointer<UInt64>
    private static let ringWords = 32
    private static let ringBits = UInt64(ringWords * 64)
    private let senders: UnsafeMutableBufferPointer<Sender>
    /// Per sender, `tableSize` SAY entries; message n lives at n mod tableSize.
    private let table: UnsafeMutableBufferPointer<SayEntry>
    private let tableSize: Int
    private let tableBits: UInt32
    /// The delayed-ACK queue (BATCH): members in the order their oldest unacknowledged push came.
    private let ackQueue: UnsafeMutableBufferPointer<(member: Int32, since: Int64)>
    private var ackHead = 0
    private var ackCount = 0
    private let received: DatagramBatch
    private let replies: DatagramBatch
    private let output: UnsafeMutableRawBufferPointer
    private let scratch: UnsafeMutableRawBufferPointer
    /// Tokens are nonce + n, so that a run never repeats an earlier run's (address, token).
    let nonce: UInt64

    private(set) var histogram: Histogram<UInt64>
    private(set) var counters = ChatCounters()
    private(set) var firstError: String?
    private var recording = false
    private var sending = false
    private var phase = ChatProgress.Phase.registering
    private var phaseStart: Int64 = 0
    private var sendStart: Int64 = 0
    private var sendEnd: Int64 = 0
    /// Open loop: messages sent so far in the send phase (message k goes at sendStart + k/R).
    private var scheduled: UInt64 = 0
    private var deliveriesThisSecond = 0
    /// Setup phases: the next member to start, how many are in flight and done.
    private var nextToStart = 0
    private var controlsInFlight = 0
    private var phaseDone = 0
    private var fatal: String?
    /// Members that joined (the room the run measures) and that LEAVE found dropped.
    private(set) var joinedMembers = 0
    private(set) var droppedMembers = 0
    private(set) var leftMembers = 0
    /// Members that asked for BATCH and got it.
    private(set) var batchMembers = 0

    /// Opens and binds one socket per member.
    init(
        server: Endpoint, sources: [UInt32], senders senderCount: Int, rate: Double, window: Int, textBytes: Int,
        ackMode: AckMode, timeout: Duration, keepalive: Duration, setupWindow: Int, receiveBufferBytes: Int
    ) throws {
        precondition(sources.count > senderCount && senderCount > 0)
        self.server = server
        self.addresses = sources
        memberCount = sources.count
        self.senderCount = senderCount
        self.rate = rate
        self.window = window
        self.textBytes = textBytes
        self.ackMode = ackMode
        observer = senderCount
        self.timeout = timeout.nanoseconds
        self.keepalive = keepalive.nanoseconds
        self.setupWindow = setupWindow
        nonce = UInt64.random(in: 1...(UInt64(1) << 62))
        names = sources.map { ClientAddresses.name(for: $0) }
        histogram = Histogram(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000_000, numberOfSignificantValueDigits: .three)
        epoll = try Epoll(maxEvents: 256)
        events.reserveCapacity(256)
        var sockets: [UDPSocket] = []
        sockets.reserveCapacity(sources.count)
        for (index, source) in sources.enumerated() {
            let socket: UDPSocket
            do {
                socket = try UDPSocket(binding: Endpoint(.v4(source), port: 0), receiveBufferSize: receiveBufferBytes)
            } catch let error as SystemError where error.errno == 24 || error.errno == 23 {  // EMFILE, ENFILE
                throw BenchError("cannot open socket \(index + 1) of \(sources.count): \(error); raise the limit (ulimit -n) or use fewer --members")
            }
            try epoll.add(fd: socket.fd, events: .readable, tag: UInt64(index))
            sockets.append(socket)
        }
        self.sockets = sockets
        members = .allocate(capacity: sources.count)
        members.initialize(repeating: Member())
        for index in members.indices {
            members[index].askBatch = ackMode == .cumulative
            // Like the other modes, each member's ids start somewhere else.
            members[index].nextControl = UInt32(truncatingIfNeeded: index &* 1_000_003)
        }
        ring = .allocate(capacity: sources.count * Self.ringWords)
        ring.initialize(repeating: 0)
        self.senders = .allocate(capacity: senderCount)
        self.senders.initialize(repeating: Sender())
        // Room for every SAY a sender can have unfinished: its window, or a
        // timeout's worth of its share of the rate, with a margin.
        let perSender = rate > 0 ? rate / Double(senderCount) * (Double(self.timeout) / 1e9) : Double(window)
        var size = 64
        while Double(size) < 4 * perSender, size < 65536 { size *= 2 }
        tableSize = size
        tableBits = UInt32(size.trailingZeroBitCount)
        table = .allocate(capacity: senderCount * size)
        table.initialize(repeating: SayEntry())
        ackQueue = .allocate(capacity: 2 * sources.count + 4096)
        received = DatagramBatch(capacity: 32, datagramSize: 1024)
        replies = DatagramBatch(capacity: 32, datagramSize: 64)
        output = .allocate(byteCount: 1024, alignment: 8)
        scratch = .allocate(byteCount: 128, alignment: 8)
    }

    deinit {
        members.deallocate()
        ring.deallocate()
        senders.deallocate()
        table.deallocate()
        ackQueue.deallocate()
        output.deallocate()
        scratch.deallocate()
        for socket in sockets { try? socket.close() }
    }

    // MARK: - Phases

    /// Registers every member (INTRODUCE u<n>) within `limit`; throws on a
    /// refusal or when some never get an answer.
    func register(within limit: Duration, progress: (ChatProgress) -> Void) throws {
        try controlPhase(.registering, .introduce, within: limit, progress: progress)
    }

    /// Makes every member join (JOIN with its cookie) within `limit`.
    func join(within limit: Duration, progress: (ChatProgress) -> Void) throws {
        try controlPhase(.joining, .join, within: limit, progress: progress)
        joinedMembers = members.count { $0.standing == .joined }
        batchMembers = members.count { $0.standing == .joined && $0.batch }
    }

    /// Answers whatever arrives for `duration`, sending nothing new.
    func settle(for duration: Duration, progress: (ChatProgress) -> Void) throws {
        start(.settling)
        try loop(until: phaseStart + duration.nanoseconds, progress: progress) { false }
    }

    /// Records from now on: clears the counters and the histogram.
    func startRecording() {
        counters = ChatCounters()
        histogram.reset()
        firstError = nil
        for index in members.indices { members[index].received = 0 }
        recording = true
    }

    /// The senders talk for `duration`.
    func send(for duration: Duration, progress: (ChatProgress) -> Void) throws {
        start(.sending)
        sending = true
        sendStart = phaseStart
        sendEnd = sendStart + duration.nanoseconds
        scheduled = 0
        if rate == 0 {
            for sender in 0..<senderCount { topUp(sender, now: sendStart) }
        }
        try loop(until: sendEnd, progress: progress) { false }
        sending = false
    }

    /// Waits, at most `limit`, until every SAY is finished and every member
    /// has every accepted message; then a little longer, so that the last
    /// delayed ACKs reach the server within the measurement. Returns whether
    /// everything arrived.
    @discardableResult
    func drain(within limit: Duration, progress: (ChatProgress) -> Void) throws -> Bool {
        start(.draining)
        let deadline = phaseStart + limit.nanoseconds
        try loop(until: deadline, progress: progress) { self.complete }
        let done = complete
        try loop(until: min(deadline, now() + 2 * ackDelay), progress: progress) { false }
        return done
    }

    /// Every member LEAVEs, within `limit`: the answers tell which ones the
    /// server had dropped. Stops recording first.
    func leave(within limit: Duration, progress: (ChatProgress) -> Void) throws {
        recording = false
        // Whatever is still owed an ACK gets it now, so the server stops retransmitting.
        flushAcks(now: now(), all: true)
        try? controlPhase(.leaving, .leave, within: limit, progress: progress)
    }

    /// Every SAY finished, and every joined member has every accepted message.
    private var complete: Bool {
        for sender in 0..<senderCount where senders[sender].oldest < senders[sender].nextN { return false }
        return counters.deliveries >= counters.accepted * joinedMembers
    }

    /// Members that ended with fewer than all accepted messages.
    var incompleteMembers: Int {
        members.count { $0.standing != .new && $0.received < counters.accepted }
    }

    /// The fewest accepted messages a member received.
    var fewestReceived: Int { members.lazy.map(\.received).min() ?? 0 }

    private func start(_ phase: ChatProgress.Phase) {
        self.phase = phase
        phaseStart = now()
        deliveriesThisSecond = 0
    }

    /// Sends `control` from every member, at most `setupWindow` at a time,
    /// retried every timeout, until all are answered or `limit` passes.
    private func controlPhase(_ phase: ChatProgress.Phase, _ control: Control, within limit: Duration, progress: (ChatProgress) -> Void) throws {
        start(phase)
        nextToStart = 0
        controlsInFlight = 0
        phaseDone = 0
        fatal = nil
        // LEAVE goes to the members that joined; the others have nothing to leave.
        let targets = control == .leave ? members.count { $0.standing == .joined } : memberCount
        let deadline = phaseStart + limit.nanoseconds
        try loop(until: deadline, progress: progress) {
            // Start the next members while the window has room.
            while self.controlsInFlight < self.setupWindow, self.nextToStart < self.memberCount {
                let member = self.nextToStart
                self.nextToStart += 1
                if control == .leave && self.members[member].standing != .joined { continue }
                self.members[member].controlAttempts = 0
                self.sendControl(member, control, now: self.now())
                self.controlsInFlight += 1
            }
            return self.fatal != nil || self.phaseDone == targets
        }
        if let fatal { throw BenchError(fatal) }
        guard phaseDone == targets else {
            let what = control == .introduce ? "registered" : control == .join ? "joined" : "answered LEAVE"
            throw BenchError("only \(phaseDone) of \(targets) members \(what) within \(limit): is the server at \(server) running?")
        }
    }

    // MARK: - The loop

    private func loop(until end: Int64, progress: (ChatProgress) -> Void, done: () -> Bool) throws {
        var time = now()
        var nextTick = time + 20_000_000
        var nextSecond = time + 1_000_000_000
        var nextKeepaliveScan = time + 1_000_000_000
        while time < end, !done() {
            var next = min(end, nextTick, nextSecond)
            if sending && rate > 0 { next = min(next, sendStart + Int64(Double(scheduled) * 1e9 / rate)) }
            if ackCount > 0 { next = min(next, ackQueue[ackHead].since + ackDelay) }
            let waitMilliseconds = Int32(clamping: max(0, (next - time + 999_999) / 1_000_000))
            try epoll.wait(timeoutMilliseconds: waitMilliseconds, into: &events)
            for event in events { drain(member: Int(event.tag)) }
            time = now()
            if sending && rate > 0 { sendScheduled(now: time) }
            if ackCount > 0 { flushAcks(now: time, all: false) }
            if time >= nextTick {
                nextTick = time + 20_000_000
                tick(now: time)
            }
            if time >= nextKeepaliveScan {
                nextKeepaliveScan = time + 1_000_000_000
                if !inSetup && phase != .leaving { sendKeepalives(now: time) }
            }
            if time >= nextSecond {
                nextSecond += 1_000_000_000
                progress(ChatProgress(
                    phase: phase, elapsed: Double(time - phaseStart) / 1e9, done: phaseDone, members: memberCount,
                    deliveriesLastSecond: deliveriesThisSecond, counters: counters))
                deliveriesThisSecond = 0
            }
        }
    }

    /// Open loop: sends every message whose time has come (a late loop sends
    /// the ones it owes at once, as ircload.c does).
    private func sendScheduled(now time: Int64) {
        while time < sendEnd, sendStart + Int64(Double(scheduled) * 1e9 / rate) <= time {
            sendSay(Int(scheduled % UInt64(senderCount)), now: time)
            scheduled += 1
        }
    }

    /// Retries control requests that timed out, and gives up SAYs that did.
    private func tick(now time: Int64) {
        if controlsInFlight > 0 {
            for member in 0..<memberCount where members[member].control != .none && time - members[member].controlSent > timeout {
                let attempts = members[member].controlAttempts
                if inSetup && attempts >= 8 {
                    fatal = "member \(IPAddress.v4(addresses[member])) got no answer to 8 attempts from \(server)"
                    continue
                }
                if !inSetup && attempts >= 3 {
                    // A keepalive or LEAVE without an answer: counted; a member
                    // silent to LEAVE is counted neither left nor dropped.
                    members[member].control = .none
                    controlsInFlight -= 1
                    if phase == .leaving { phaseDone += 1 } else if recording { counters.errors += 1 }
                    continue
                }
                sendControl(member, members[member].control, now: time)
            }
        }
        for sender in 0..<senderCount { expireSays(sender, now: time) }
    }

    /// Keepalive JOINs for members whose last JOIN is `keepalive` old, so a
    /// long run keeps its members past the server's presence_ttl_s.
    private func sendKeepalives(now time: Int64) {
        for member in 0..<memberCount
        where members[member].standing == .joined && members[member].control == .none
            && time - members[member].lastJoin >= keepalive
        {
            members[member].controlAttempts = 0
            sendControl(member, .join, now: time)
            controlsInFlight += 1
            if recording { counters.keepalives += 1 }
        }
    }

    /// Reads every queued datagram of one member, answering pushes.
    private func drain(member: Int) {
        let socket = sockets[member]
        while true {
            let count: Int
            do {
                count = try socket.receive(into: received)
            } catch {
                noteError("receive on member \(member): \(error)")
                return
            }
            guard count > 0 else { return }
            let time = now()
            replies.removeAll()
            for index in 0..<count {
                guard received.source(at: index) == server else {
                    if recording { counters.strays += 1 }
                    continue
                }
                handle(received.payload(at: index), index: index, member: member, now: time)
            }
            if replies.count > 0 {
                let result = socket.send(replies)
                if recording {
                    counters.acksSent += result.sent
                    counters.sendFailures += result.wouldBlock + result.failed
                }
                if let error = result.firstError { noteError("send on member \(member): \(error)") }
            }
            if count < received.capacity { return }
        }
    }

    private func handle(_ datagram: UnsafeRawBufferPointer, index: Int, member: Int, now time: Int64) {
        guard let (id, rest) = Wire.readReplyHeader(datagram) else {
            if recording {
                counters.errors += 1
                noteError(datagram)
            }
            return
        }
        let kind = Wire.replyKind(datagram, from: rest)
        if case .message(let entries) = kind {
            handlePush(datagram, id: id, entries: entries, index: index, member: member, now: time)
        } else if id & 0x8000_0000 != 0 {
            handleControlReply(datagram, id: id, rest: rest, kind: kind, member: member, now: time)
        } else if member < senderCount {
            handleSayReply(datagram, id: id, kind: kind, sender: member, now: time)
        } else if recording {
            counters.strays += 1
        }
    }

    // MARK: - Pushes

    private func handlePush(_ push: UnsafeRawBufferPointer, id: UInt32, entries: Int, index: Int, member: Int, now time: Int64) {
        let joined = members[member].standing == .joined
        let before = members[member].contiguous
        var position = entries
        var firstSeq: UInt64 = 0
        var entryCount = 0
        var fresh = 0
        while position < push.count {
            guard let entry = Wire.nextEntry(push, from: position) else {
                if recording {
                    counters.errors += 1
                    noteError(push, prefix: "push off the grammar: ")
                }
                break
            }
            position = entry.next
            if entryCount == 0 { firstSeq = entry.seq }
            entryCount += 1
            guard joined, entry.seq > members[member].joinSeq else {
                if recording { counters.staleMessages += 1 }
                continue
            }
            guard note(entry.seq, member: member) else {
                if recording { counters.duplicateMessages += 1 }
                continue
            }
            fresh += 1
            delivered(push, entry, member: member, now: time)
        }
        if recording {
            counters.pushes += 1
            counters.entries += entryCount
            if fresh == 0 && entryCount > 0 { counters.duplicatePushes += 1 }
        }
        guard members[member].batch else {
            acknowledge(id: id, through: nil, replyingTo: index)
            return
        }
        // PROTOCOL.md, "When a BATCH client acknowledges".
        members[member].lastSid = id
        if fresh == 0 || firstSeq > before + 1 || members[member].unacked + 1 >= members[member].ackEvery {
            members[member].unacked = 0
            acknowledge(id: id, through: members[member].contiguous, replyingTo: index)
        } else {
            members[member].unacked += 1
            if members[member].unacked == 1 {
                members[member].unackedSince = time
                enqueueAck(member, since: time)
            }
        }
    }

    /// Marks `seq` received by `member`; false when it already was.
    private func note(_ seq: UInt64, member: Int) -> Bool {
        let words = ring.baseAddress! + member * Self.ringWords
        var contiguous = members[member].contiguous
        guard seq > contiguous else { return false }
        // A hole wider than the bitmap: give up the oldest seqs missing.
        while seq - contiguous > Self.ringBits {
            contiguous += 1
            let bit = contiguous & (Self.ringBits - 1)
            if words[Int(bit >> 6)] & (1 << (bit & 63)) != 0 {
                words[Int(bit >> 6)] &= ~(1 << (bit & 63))
            } else if recording {
                counters.skipped += 1
            }
        }
        let bit = seq & (Self.ringBits - 1)
        let mask: UInt64 = 1 << (bit & 63)
        guard words[Int(bit >> 6)] & mask == 0 else {
            members[member].contiguous = contiguous
            return false
        }
        words[Int(bit >> 6)] |= mask
        // Move the contiguous seq over every seq now present.
        while true {
            let next = (contiguous + 1) & (Self.ringBits - 1)
            let nextMask: UInt64 = 1 << (next & 63)
            guard words[Int(next >> 6)] & nextMask != 0 else { break }
            words[Int(next >> 6)] &= ~nextMask
            contiguous += 1
        }
        members[member].contiguous = contiguous
        return true
    }

    /// A first receipt: a delivery if the text is this run's stamp.
    private func delivered(_ push: UnsafeRawBufferPointer, _ entry: PushEntry, member: Int, now time: Int64) {
        guard let stamp = Wire.readStamp(push, from: entry.textStart, to: entry.textEnd), stamp.sender < senderCount,
            stamp.token &- nonce < senders[stamp.sender].nextN
        else {
            if recording { counters.foreignMessages += 1 }
            return
        }
        deliveriesThisSecond += 1
        members[member].received += 1
        if recording {
            counters.deliveries += 1
            histogram.record(UInt64(max(1, time - stamp.sentAt)))
        }
        if member == observer && rate == 0 { observed(stamp.sender, stamp.token &- nonce, now: time) }
    }

    /// Adds the ACK of push `id` to the replies of the batch being handled.
    private func acknowledge(id: UInt32, through: UInt64?, replyingTo index: Int) {
        let length = Wire.writeAck(id: id, through: through, into: scratch)
        replies.append(UnsafeRawBufferPointer(rebasing: scratch[..<length]), replyingTo: index, of: received)
    }

    private func enqueueAck(_ member: Int, since: Int64) {
        guard ackCount < ackQueue.count else {
            // Cannot happen with the queue's size (one live entry per member, and
            // stale ones last 10 ms); acknowledging at once keeps it correct anyway.
            sendAck(member)
            return
        }
        ackQueue[(ackHead + ackCount) % ackQueue.count] = (Int32(member), since)
        ackCount += 1
    }

    /// Sends the delayed ACKs that are due (all of them with `all`).
    private func flushAcks(now time: Int64, all: Bool) {
        while ackCount > 0 {
            let (member, since) = ackQueue[ackHead]
            guard all || time - since >= ackDelay else { return }
            ackHead = (ackHead + 1) % ackQueue.count
            ackCount -= 1
            // A stale entry: the member acknowledged since, and a later push queued its own.
            if members[Int(member)].unacked > 0 && members[Int(member)].unackedSince == since { sendAck(Int(member)) }
        }
    }

    private func sendAck(_ member: Int) {
        members[member].unacked = 0
        let length = Wire.writeAck(id: members[member].lastSid, through: members[member].contiguous, into: scratch)
        transmit(UnsafeRawBufferPointer(rebasing: scratch[..<length]), from: member)
        if recording { counters.acksSent += 1 }
    }

    // MARK: - Control requests

    private func sendControl(_ member: Int, _ control: Control, now time: Int64) {
        let id = 0x8000_0000 | (members[member].nextControl & 0x7fff_ffff)
        members[member].nextControl &+= 1
        members[member].control = control
        members[member].controlID = id
        members[member].controlSent = time
        members[member].controlAttempts += 1
        let length: Int
        switch control {
        case .introduce: length = Wire.writeRequest(id: id, introducing: names[member], into: output)
        case .join:
            length = Wire.writeJoin(id: id, cookie: members[member].cookie, batch: members[member].askBatch, into: output)
            members[member].lastJoin = time
        case .leave: length = Wire.writeLeave(id: id, cookie: members[member].cookie, into: output)
        case .none: return
        }
        transmit(UnsafeRawBufferPointer(rebasing: output[..<length]), from: member)
    }

    private func handleControlReply(
        _ reply: UnsafeRawBufferPointer, id: UInt32, rest: Int, kind: ChatReplyKind, member: Int, now time: Int64
    ) {
        let control = members[member].control
        guard control != .none, members[member].controlID == id else {
            if recording { counters.strays += 1 }
            return
        }
        if case .cookie(let cookie) = kind {
            // A new cookie is a new attempt of the same request, not a failure.
            members[member].cookie = cookie
            members[member].controlAttempts -= 1
            if recording { counters.cookieRetries += 1 }
            sendControl(member, control, now: time)
            return
        }
        switch (control, kind) {
        case (.introduce, .success):
            guard Wire.rest(reply, from: rest, is: Wire.success, names[member]) else {
                return refuse(member, reply, "cannot register \(String(decoding: names[member], as: UTF8.self)): the server answered ")
            }
            members[member].standing = .registered
        case (.join, .success(let fields)):
            guard let (lastSeq, window) = Wire.readJoinSuccess(reply, fields: fields) else {
                return refuse(member, reply, "cannot join: the server answered ")
            }
            if members[member].standing != .joined {
                members[member].joinSeq = lastSeq
                members[member].contiguous = lastSeq
                members[member].standing = .joined
            }
            members[member].batch = window != nil
            if let window { members[member].ackEvery = Int32(min(4, max(1, window / 2))) }
        case (.join, .error) where members[member].askBatch:
            // A server that does not know BATCH: join in the basic format.
            members[member].askBatch = false
            members[member].controlAttempts -= 1
            sendControl(member, .join, now: time)
            return
        case (.leave, .success):
            members[member].standing = .left
            leftMembers += 1
        case (.leave, .error(let reason)) where Wire.starts(reply, at: reason, with: Wire.notJoined):
            members[member].standing = .dropped
            droppedMembers += 1
        default:
            if inSetup {
                return refuse(member, reply, "\(control == .introduce ? "INTRODUCE" : "JOIN") refused: the server answered ")
            }
            // A keepalive JOIN or a LEAVE refused: counted, and the run goes on.
            countError(reply, kind)
        }
        members[member].control = .none
        controlsInFlight -= 1
        phaseDone += 1
    }

    /// A setup request refused: the phase stops with the server's answer.
    private func refuse(_ member: Int, _ reply: UnsafeRawBufferPointer, _ what: String) {
        let text = String(decoding: reply.prefix(120), as: UTF8.self).map { $0.isASCII && !$0.isNewline ? String($0) : "?" }.joined()
        if fatal == nil { fatal = "member \(IPAddress.v4(addresses[member])): " + what + "\"" + text + "\"" }
        members[member].control = .none
        controlsInFlight -= 1
    }

    /// Registering and joining: a refusal or silence stops the run.
    private var inSetup: Bool { phase == .registering || phase == .joining }

    private func countError(_ reply: UnsafeRawBufferPointer, _ kind: ChatReplyKind) {
        guard recording || phase == .leaving else { return }
        counters.errors += 1
        if case .error(let reason) = kind {
            if Wire.starts(reply, at: reason, with: Wire.rateLimited) { counters.rateLimited += 1 }
            if Wire.starts(reply, at: reason, with: Wire.unavailable) { counters.unavailable += 1 }
        }
        noteError(reply)
    }

    // MARK: - SAY

    private func sendSay(_ sender: Int, now time: Int64) {
        let n = senders[sender].nextN
        if n - senders[sender].oldest >= UInt64(tableSize) {
            // The table is full of unfinished SAYs: the oldest is given up.
            let oldest = senders[sender].oldest
            expire(sender, slot: Int(oldest & UInt64(tableSize - 1)))
            advance(sender)
        }
        senders[sender].nextN = n + 1
        table[sender * tableSize + Int(n & UInt64(tableSize - 1))] = SayEntry(n: n, id: 0, sent: time, flags: 0)
        if recording { counters.saysSent += 1 }
        if rate == 0 { senders[sender].outstanding += 1 }
        transmitSay(sender, n: n)
    }

    /// (Re)sends message n of `sender` under a fresh id, with its first send time in the stamp.
    private func transmitSay(_ sender: Int, n: UInt64) {
        let slot = Int(n & UInt64(tableSize - 1))
        let attempt = senders[sender].attempt
        senders[sender].attempt &+= 1
        let id = ((attempt << tableBits) | UInt32(slot)) & 0x7fff_ffff
        table[sender * tableSize + slot].id = id
        let length = Wire.writeSay(
            id: id, cookie: members[sender].cookie, token: nonce &+ n, sender: sender,
            sentAt: table[sender * tableSize + slot].sent, textBytes: textBytes, into: output)
        transmit(UnsafeRawBufferPointer(rebasing: output[..<length]), from: sender)
    }

    private func handleSayReply(_ reply: UnsafeRawBufferPointer, id: UInt32, kind: ChatReplyKind, sender: Int, now time: Int64) {
        let slot = Int(id & UInt32(tableSize - 1))
        let index = sender * tableSize + slot
        let entry = table[index]
        guard entry.id == id, entry.flags & (SayFlag.answered | SayFlag.done) == 0, entry.n >= senders[sender].oldest,
            entry.n < senders[sender].nextN
        else {
            if recording { counters.strays += 1 }
            return
        }
        switch kind {
        case .cookie(let cookie):
            members[sender].cookie = cookie
            if recording { counters.cookieRetries += 1 }
            transmitSay(sender, n: entry.n)
            return
        case .success(let fields) where Wire.readSaySuccess(reply, fields: fields) != nil:
            table[index].flags |= SayFlag.answered
            if recording { counters.accepted += 1 }
            if rate > 0 || entry.flags & SayFlag.observed != 0 { table[index].flags |= SayFlag.done }
        default:
            countError(reply, kind)
            table[index].flags |= SayFlag.answered | SayFlag.done
            free(sender, index: index, now: time)
        }
        advance(sender)
    }

    /// Closed loop: the observer received message n of `sender`.
    private func observed(_ sender: Int, _ n: UInt64, now time: Int64) {
        guard n >= senders[sender].oldest else { return }
        let index = sender * tableSize + Int(n & UInt64(tableSize - 1))
        guard table[index].n == n, table[index].flags & SayFlag.observed == 0 else { return }
        table[index].flags |= SayFlag.observed
        if table[index].flags & SayFlag.answered != 0 { table[index].flags |= SayFlag.done }
        free(sender, index: index, now: time)
        advance(sender)
    }

    /// Gives back a closed-loop slot, and fills the window again.
    private func free(_ sender: Int, index: Int, now time: Int64) {
        guard rate == 0, table[index].flags & SayFlag.freed == 0 else { return }
        table[index].flags |= SayFlag.freed
        senders[sender].outstanding -= 1
        topUp(sender, now: time)
    }

    private func topUp(_ sender: Int, now time: Int64) {
        while sending, time < sendEnd, senders[sender].outstanding < window { sendSay(sender, now: now()) }
    }

    /// Moves the sender's oldest past every finished SAY.
    private func advance(_ sender: Int) {
        while senders[sender].oldest < senders[sender].nextN {
            let index = sender * tableSize + Int(senders[sender].oldest & UInt64(tableSize - 1))
            guard table[index].flags & SayFlag.done != 0 else { return }
            senders[sender].oldest += 1
        }
    }

    /// Gives up the oldest SAYs that have waited longer than the timeout.
    private func expireSays(_ sender: Int, now time: Int64) {
        while senders[sender].oldest < senders[sender].nextN {
            let slot = Int(senders[sender].oldest & UInt64(tableSize - 1))
            guard time - table[sender * tableSize + slot].sent > timeout else { return }
            expire(sender, slot: slot)
            advance(sender)
        }
    }

    private func expire(_ sender: Int, slot: Int) {
        let index = sender * tableSize + slot
        let flags = table[index].flags
        guard flags & SayFlag.done == 0 else { return }
        if recording {
            if flags & SayFlag.answered == 0 {
                counters.sayUnanswered += 1
            } else if rate == 0 && flags & SayFlag.observed == 0 {
                counters.notObserved += 1
            }
        }
        table[index].flags |= SayFlag.done
        free(sender, index: index, now: now())
    }

    // MARK: - Helpers

    private func transmit(_ bytes: UnsafeRawBufferPointer, from member: Int) {
        do {
            if case .processed = try sockets[member].send(bytes, to: server) { return }
            if recording { counters.sendFailures += 1 }
        } catch {
            if recording { counters.sendFailures += 1 }
            noteError("send from member \(member): \(error)")
        }
    }

    private func now() -> Int64 {
        SystemClock.monotonicNow().nanoseconds
    }

    private func noteError(_ reply: UnsafeRawBufferPointer, prefix: String = "unexpected datagram: ") {
        guard firstError == nil else { return }
        let text = String(decoding: reply.prefix(120), as: UTF8.self)
        firstError = prefix + "\"" + text.map { $0.isASCII && !$0.isNewline ? String($0) : "?" }.joined() + "\""
    }

    private func noteError(_ message: String) {
        if firstError == nil { firstError = message }
    }
}

// ChatService against a simulated disk: datagrams, time, and the outcomes
// of storage in whatever order and with whatever failures the steps choose.
// After every step, what a crash would bring back (the snapshot on disk,
// then the journal on disk replayed onto it) must hold exactly the
// registrations that clients were told of (`registered` and `renamed`
// events, applied as facts), and every chat message whose SUCCESS went out,
// with its text, under a seq no other message was ever told with; and every
// push (basic or BATCH) carries messages already on disk, with the text
// their senders were told of. That is the point of the crash-safety rules in
// ChatService's theory comment: compacting more than a snapshot covers,
// starting a snapshot while a compaction is pending, or a snapshot that
// keeps a change whose sync then fails each break it. The simulation also
// checks the storage protocol itself: one journal group, one snapshot and
// one compaction in flight at most, and no snapshot beside a compaction;
// and the administrator's requests: a removal is confirmed or undone, with
// its ticket, once its group is done, and a requested snapshot is answered
// by a snapshot started after the request (it must hold every change made
// before it), with nothing left waiting once no storage work is in flight.
//
// A step is two bytes: what happens, and a byte that picks the details.
//
//   op % 10  0-4  a datagram from 10.0.0.<op / 10 % 10>: CONNECT (detail % 4
//                 == 0), SAY with the right cookie and token detail / 4 % 8
//                 (detail % 4 == 1), INTRODUCE n<detail / 4 % 14> (2), or
//                 (3) by detail / 4 % 4: JOIN, JOIN BATCH, an ACK of one of
//                 the pushes this address received (picked by detail / 16),
//                 or a cumulative ACK of its newest push through its newest seq
//            5    time passes (0 to 3 s) and the service's deadlines fire
//            6    the journal group in flight is synced, or fails (detail % 4 == 0)
//            7    the snapshot in flight is written, or fails
//            8    the compaction in flight is done, or fails
//            9    an administrator asks for a snapshot (detail % 4 == 0), or
//                 removes the registration of 10.0.0.<detail / 4 % 10>

import ChatCore

public struct ServiceSimulation {
    private var service: ChatService
    private var now = Instant(nanoseconds: 0)
    private var step = 0
    private var reply: [UInt8] = []
    /// What clients were told: the confirmed registrations, applied as facts.
    private var confirmed = Registry(maxUsers: 1000)
    /// What a crash would bring back. The invariant can only break when the
    /// disk or `confirmed` changes, and reading the disk costs more than
    /// everything else in a step, so it is read again only after a snapshot
    /// or a compaction; a sync only appends, and its records are replayed
    /// onto what the disk held before, as recovery would replay them.
    private var recovered = Registry(maxUsers: 1000)
    private var diskChanged = false
    private var confirmedChanged = false
    /// Messages whose SUCCESS went out, by seq; and what a crash would bring back.
    private var toldMessages: [UInt64: String] = [:]
    private var recoveredMessages: [UInt64: String] = [:]
    private var recoveredLastSeq: UInt64 = 0
    /// The text each SAY sent, by request id.
    private var sayTexts: [UInt32: String] = [:]
    /// Push ids each address received, oldest first, and the newest seq in them.
    private var pushesReceived: [IPAddress: (ids: [UInt32], newest: UInt64)] = [:]
    /// Pushes seen, and those carrying more than one message (for tests).
    public private(set) var pushes = 0
    public private(set) var batchPushes = 0
    /// ACKs the service took as delivering a push (for tests).
    public var acks: Int { service.counters.acks }
    /// Removals confirmed and undone, and snapshot requests answered (for tests).
    public private(set) var removals = 0
    public private(set) var removalsFailed = 0
    public private(set) var snapshotRequestsAnswered = 0

    /// Removals waiting for their group, by ticket.
    private var removalTickets: Set<UInt64> = []
    /// Snapshot requests waiting, by ticket: how many snapshots had started
    /// before the request. The one that answers it must start after.
    private var snapshotRequests: [UInt64: Int] = [:]
    private var snapshotsStarted = 0
    /// The number of the snapshot in flight, and of the last one written or failed.
    private var pendingSnapshotNumber = 0
    private var finishedSnapshotNumber = 0

    // The disk, as the shell would leave it, and the work handed to it.
    private var journal = Journal.header
    private var snapshot: [UInt8]?
    private var historyFile: [UInt8]?
    private var pendingCommit: [UInt8]?
    private var pendingSnapshot: ChatService.SnapshotJob?
    private var pendingCompaction: Int?

    public init(seed: UInt64 = 0) {
        service = ChatService(
            configuration: .init(
                maxUsers: 12, ratePerIP: 0, burstPerIP: 1, journaling: true, snapshotInterval: .seconds(5)),
            registry: Registry(maxUsers: 12), journalLength: Journal.header.count, now: now, seed: seed)
    }

    /// Runs a whole input: its bytes taken two at a time as steps.
    public mutating func run(_ steps: some Collection<UInt8>) throws(FuzzFailure) {
        var bytes = steps.makeIterator()
        while let op = bytes.next() {
            try self.step(op, bytes.next() ?? 0)
        }
    }

    public mutating func step(_ op: UInt8, _ detail: UInt8) throws(FuzzFailure) {
        step += 1
        let fails = detail % 4 == 0
        switch op % 10 {
        case 0...4:
            let source = Endpoint(.v4(0x0a00_0000 + UInt32(op / 10 % 10)), port: 1)
            let bytes: [UInt8]
            switch detail % 4 {
            case 0: bytes = Array("CHAT/1 \(step) CONNECT".utf8)
            case 1:
                let text = "m\(step)"
                sayTexts[UInt32(step)] = text
                bytes = ChatRequest.say(
                    id: UInt32(step), cookie: service.cookie(for: source), token: UInt64(detail / 4 % 8),
                    text: Array(text.utf8)
                ).bytes
            case 2: bytes = Array("CHAT/1 \(step) INTRODUCE n\(detail / 4 % 14)".utf8)
            default:
                let cookie = service.cookie(for: source)
                let received = pushesReceived[source.address] ?? ([], 0)
                switch detail / 4 % 4 {
                case 0: bytes = ChatRequest.join(id: UInt32(step), cookie: cookie).bytes
                case 1: bytes = ChatRequest.join(id: UInt32(step), cookie: cookie, batch: true).bytes
                case 2:
                    let id = received.ids.isEmpty ? UInt32(step) : received.ids[Int(detail / 16) % received.ids.count]
                    bytes = ChatRequest.ack(id: id).bytes
                default:
                    bytes = ChatRequest.ack(id: received.ids.last ?? UInt32(step), through: received.newest).bytes
                }
            }
            let answered = bytes.withUnsafeBytes {
                service.handle(datagram: $0, from: source, socket: 0, now: now, reply: &reply)
            }
            if answered { try noteTold(reply, to: source) }
        case 5:
            now = now + .seconds(Int64(detail % 4))
            service.handleTimeout(now: now)
        case 6:
            guard let lines = pendingCommit.take() else { break }
            if fails {
                service.commitFailed(error: "EIO", journalLength: journal.count)
            } else {
                journal += lines
                do {
                    let replay = try Journal.replay(Journal.header + lines, into: &recovered)
                    recover(replay.messages)
                } catch {
                    throw failure("a synced journal group does not replay: \(error)")
                }
                confirmedChanged = true  // compared below, against the disk as it now is
                service.committed(journalLength: journal.count, now: now)
            }
        case 7:
            guard let job = pendingSnapshot.take() else { break }
            finishedSnapshotNumber = pendingSnapshotNumber
            if fails {
                service.snapshotFailed(error: "ENOSPC")
            } else {
                historyFile = HistoryFile.encode(job.messages, lastSeq: job.lastSeq)
                let bytes = Snapshot.encode(job.records, savedAt: 0, replacing: job.replacing)
                snapshot = bytes
                diskChanged = true
                let users = (try? Snapshot.load(bytes, maxUsers: 1000))?.count
                guard users == job.users else {
                    throw failure("a snapshot of \(users.map(String.init) ?? "no") users said to hold \(job.users)")
                }
                service.snapshotWritten(.init(savedAt: 0, bytes: 0, duration: .zero))
            }
        case 9:
            let ticket = UInt64(step)
            if fails {
                snapshotRequests[ticket] = snapshotsStarted
                service.requestSnapshot(ticket: ticket)
                break
            }
            let address = IPAddress.v4(0x0a00_0000 + UInt32(detail / 4 % 10))
            let held = service.registry.username(for: address)
            let outcome = service.removeRegistration(of: address, ticket: ticket, now: now)
            guard outcome == (held.map { .pending($0) } ?? .notRegistered) else {
                throw failure("removing \(address), which held \(held?.text ?? "nothing"): \(outcome)")
            }
            if held != nil { removalTickets.insert(ticket) }
        default:
            guard let count = pendingCompaction.take() else { break }
            if fails {
                service.compactionFailed(error: "EIO")
            } else {
                // As JournalWriter compacts: the header, then what the snapshot does not cover.
                journal = Journal.header + journal[count...]
                diskChanged = true
                service.compacted(journalLength: journal.count)
            }
        }
        try collectOutputs()
        try checkRecovery()
    }

    private mutating func collectOutputs() throws(FuzzFailure) {
        while let work = service.pollStorageWork() {
            switch work {
            case .commit(let lines):
                guard pendingCommit == nil else { throw failure("a second journal group while one is in flight") }
                pendingCommit = lines
            case .writeSnapshot(let job):
                guard pendingSnapshot == nil, pendingCompaction == nil else {
                    throw failure("a snapshot while another or a compaction is in flight")
                }
                pendingSnapshot = job
                snapshotsStarted += 1
                pendingSnapshotNumber = snapshotsStarted
            case .compact(let count):
                guard pendingCompaction == nil, pendingSnapshot == nil,
                    count > Journal.header.count, count <= journal.count
                else { throw failure("compaction of \(count) bytes of a \(journal.count)-byte journal") }
                pendingCompaction = count
            }
        }
        while let event = service.pollEvent() {
            switch event {
            case .registered(let name, let client, _), .renamed(_, let name, let client, _):
                confirmed.restore(name, at: client.address)
                confirmedChanged = true
            case .removed(_, let address, let ticket), .removalFailed(_, let address, let ticket, _):
                guard removalTickets.remove(ticket) != nil else {
                    throw failure("removal \(ticket) of \(address) reported twice, or never asked for")
                }
                if case .removed = event {
                    removals += 1
                    confirmed.remove(address)
                    confirmedChanged = true
                } else {
                    removalsFailed += 1
                }
            case .snapshotRequestFinished(let ticket, _, _, let error):
                guard let startedBefore = snapshotRequests.removeValue(forKey: ticket) else {
                    throw failure("snapshot request \(ticket) answered twice, or never asked for")
                }
                guard finishedSnapshotNumber > startedBefore else {
                    throw failure("snapshot request \(ticket) answered by a snapshot started before it")
                }
                if error == nil { snapshotRequestsAnswered += 1 }
            default: break
            }
        }
        while let transmit = service.pollTransmit() { try noteTold(transmit.bytes, to: transmit.destination) }
        if pendingCommit == nil, !removalTickets.isEmpty {
            throw failure("removals \(removalTickets.sorted()) wait with no journal group in flight")
        }
        if pendingSnapshot == nil, pendingCompaction == nil, !snapshotRequests.isEmpty {
            throw failure("snapshot requests \(snapshotRequests.keys.sorted()) wait with nothing in flight")
        }
    }

    /// A SAY's SUCCESS: the client now knows its message by that seq. A
    /// push: every message in it is on disk, as its sender was told.
    private mutating func noteTold(_ bytes: [UInt8], to destination: Endpoint) throws(FuzzFailure) {
        if bytes.count > maxDatagramSize { throw failure("a datagram of \(bytes.count) bytes") }
        if case .message(let id, let messages)? = ChatInbound(bytes) {
            for message in messages {
                let text = message.textString
                guard recoveredMessages[message.seq] == text, toldMessages[message.seq].map({ $0 == text }) ?? true
                else { throw failure("push of message \(message.seq) (\(text)), which is not on disk as told") }
            }
            pushes += 1
            if messages.count > 1 { batchPushes += 1 }
            var received = pushesReceived[destination.address] ?? ([], 0)
            received.ids = received.ids.suffix(15) + [id]
            received.newest = max(received.newest, messages.last!.seq)
            pushesReceived[destination.address] = received
            return
        }
        guard case .success(let id, let fields)? = ChatInbound(bytes), fields.count == 1,
            let seq = UInt64(fields[0]), let text = sayTexts[id]
        else { return }
        // A repeated token is told its first message's seq, whose text was
        // told first (the repeat's answer waits behind it): that text stands.
        if toldMessages[seq] == nil { toldMessages[seq] = text }
        confirmedChanged = true
    }

    private mutating func recover(_ messages: [ChatMessage]) {
        for message in messages {
            recoveredMessages[message.seq] = message.textString
            recoveredLastSeq = max(recoveredLastSeq, message.seq)
        }
    }

    /// What a crash now would bring back must be what clients were told.
    private mutating func checkRecovery() throws(FuzzFailure) {
        guard diskChanged || confirmedChanged else { return }
        if diskChanged {
            recovered = Registry(maxUsers: 1000)
            (recoveredMessages, recoveredLastSeq) = ([:], 0)
            do {
                if let snapshot { recovered = try Snapshot.load(snapshot, maxUsers: 1000) }
                if let historyFile {
                    let (messages, lastSeq) = try HistoryFile.decode(historyFile)
                    recover(messages)
                    recoveredLastSeq = lastSeq
                }
                recover(try Journal.replay(journal, into: &recovered).messages)
            } catch {
                throw failure("the files on disk do not load: \(error)")
            }
        }
        (diskChanged, confirmedChanged) = (false, false)
        for (seq, text) in toldMessages where recoveredMessages[seq] != text {
            throw failure("a crash now would lose message \(seq) (\(text)), which its sender was told of")
        }
        if let highest = toldMessages.keys.max(), recoveredLastSeq < highest {
            throw failure("a crash now would give seq \(highest) again (the disk knows up to \(recoveredLastSeq))")
        }
        let (onDisk, told) = (Self.names(recovered), Self.names(confirmed))
        guard onDisk == told else {
            throw failure(
                "a crash now would bring back \(onDisk.sorted { $0.key.description < $1.key.description }), "
                    + "clients were told \(told.sorted { $0.key.description < $1.key.description })")
        }
    }

    private static func names(_ registry: Registry) -> [IPAddress: String] {
        var all: [IPAddress: String] = [:]
        for entry in registry.entries { all[entry.address] = entry.username.text }
        return all
    }

    private func failure(_ what: String) -> FuzzFailure {
        FuzzFailure(description: "service simulation, step \(step): \(what)")
    }
}

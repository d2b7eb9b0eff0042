// chatd's server as one state machine: every decision the server makes,
// with no I/O. The shell (ChatServer) feeds it datagrams, the time and the
// outcomes of storage, and carries out what it asks for.
//
// Theory of operation
// -------------------
// Inputs, each with the time where time matters:
//
//   handle(datagram:from:socket:now:reply:)  one datagram; returns whether
//                        `reply` holds an answer to send back at once (the
//                        common case, kept free of allocation)
//   handleTimeout(now:)  deadlines that have passed (nextTimeout() says when)
//   committed / commitFailed             the journal group in flight
//   snapshotWritten / snapshotFailed     the snapshot in flight
//   compacted / compactionFailed         the journal compaction in flight
//   reconfigure(_:now:), stop(), writeFinalSnapshot()
//   removeRegistration(of:ticket:now:), requestSnapshot(ticket:)
//                        an administrator's (chatctl's); each outcome is
//                        an event carrying the ticket, for the shell to
//                        route back to the connection that asked
//
// Outputs, drained by the shell after each input or batch of inputs:
//
//   pollStorageWork()    journal lines to append and sync, a snapshot to
//                        write, a compaction; each answered by an input above
//   pollTransmit()       datagrams to send that are not the answer of the
//                        moment: replies held for a sync, UNAVAILABLE,
//                        pushes and their retransmissions
//   pollEvent()          what happened, for the log, each reported once it
//                        is true (a registration once it is on disk)
//   nextTimeout()        when to call handleTimeout next
//
// A datagram goes through, in order: the ACK of a push in flight (taken
// before the limit, see ChatService+Room.swift), the per-address rate limit
// (before parsing, so a flood costs one hash lookup a datagram), the answer
// (RequestHandler, the protocol's table, or the room's), the amplification
// rule (no reply over 3 times its request, unless the request showed its
// endpoint's cookie), then durability. With durability "sync" a
// change is applied at once, so the next request sees it, but its SUCCESS
// waits in the CommitQueue until the journal line is synced, and so does any
// other reply to that address, since it reflects the unconfirmed change. If
// the sync fails every pending change is undone; a held INTRODUCE whose
// answer came from the registry (SUCCESS, TAKEN, SERVER_FULL) is then
// answered UNAVAILABLE (it was decided on state that did not last), a held
// CONNECT is answered afresh from the registry (it only reads it), and any
// other held reply (MALFORMED, a name off the rule) goes out as it was.
// No request that changes anything is ever run a second time.
//
// An administrator's removal of a registration is durable exactly like an
// INTRODUCE: applied at once (the address's member leaves the room, and a
// CONNECT from it hears CLIENT_NOT_FOUND, held like any reply to an address
// with a pending change), journaled in the next group, and reported
// (`.removed`) once that group is on disk; if the sync fails the name is
// back and `.removalFailed` says so. It has no datagram to hold, so its
// Held carries only the event.
//
// Deadlines live in one TimerQueue: the snapshot interval, the cookie
// secret's rotation, each push's retransmission and each member's presence;
// an ACK cancels a retransmission, which is why it cancels lazily.
//
// Snapshots and the journal: the crash-safety rules
// --------------------------------------------------
// 1. A snapshot holds pending changes as they stand on disk
//    (CommitQueue.confirmedNames): one whose sync then fails must not live
//    on in the file.
// 2. A snapshot covers the journal bytes on disk when it was taken; once
//    it is written those bytes, and only those, may be compacted away.
// 3. No snapshot starts while a compaction is queued or running (the length
//    it would cover would count bytes of a file that is about to change),
//    nor while another snapshot is being written (two writers would race on
//    the file).
// 4. A failed snapshot marks the registry dirty again and keeps the journal
//    whole; a failed compaction only leaves lines the snapshot covers too,
//    which replay applies again harmlessly (Journal.swift).
// A snapshot an administrator requests must hold every change made before
// the request, as far as rule 1 lets it; so it is one queued after the
// request: at once when nothing is in flight, else, by rule 3, once the
// snapshot in flight and the compaction it starts are done, one snapshot
// for every request that waited. The final snapshot is nobody's: requests
// still waiting at `stop()` fail.
// Under durability "periodic" there is no journal: changes are answered at
// once and reach the disk with the next snapshot.

public struct ChatService {
    /// What the service takes from the config; `reconfigure` changes it.
    public struct Configuration: Equatable, Sendable {
        public var maxUsers: Int
        /// Per-address token bucket: tokens per second (0: no limit) and most saved up.
        public var ratePerIP: Double
        public var burstPerIP: Int
        /// Durability "sync": changes are journaled and confirmed only once synced.
        public var journaling: Bool
        public var snapshotInterval: Duration
        /// Report every answered request (for debug logging), not only the notable ones.
        public var reportsEveryRequest: Bool
        /// The chat room's limits and the retry rules for its pushes.
        public var room: RoomConfiguration

        public init(
            maxUsers: Int, ratePerIP: Double, burstPerIP: Int, journaling: Bool, snapshotInterval: Duration,
            reportsEveryRequest: Bool = false, room: RoomConfiguration = RoomConfiguration()
        ) {
            self.room = room
            self.maxUsers = maxUsers
            self.ratePerIP = ratePerIP
            self.burstPerIP = burstPerIP
            self.journaling = journaling
            self.snapshotInterval = snapshotInterval
            self.reportsEveryRequest = reportsEveryRequest
        }
    }

    /// A datagram to send. `socket` is the shell's token for the socket the
    /// request came in on, handed back unchanged.
    public struct Transmit: Equatable, Sendable {
        public var destination: Endpoint
        public var socket: Int
        public var bytes: [UInt8]
    }

    /// Storage the shell must carry out, answering with the matching input.
    public enum StorageWork: Sendable {
        /// Append these journal bytes and sync them: `committed` or `commitFailed`.
        case commit([UInt8])
        /// Encode and write the snapshot atomically: `snapshotWritten` or `snapshotFailed`.
        case writeSnapshot(SnapshotJob)
        /// Drop the first `count` bytes of the journal: `compacted` or `compactionFailed`.
        case compact(droppingFirst: Int)
    }

    /// A snapshot to write: the history file (`HistoryFile.encode(messages,
    /// lastSeq:)`) first, then `Snapshot.encode(records, savedAt:, replacing:)`.
    public struct SnapshotJob: Sendable {
        public var records: Registry.Records
        /// Pending changes as they stand on disk (rule 1).
        public var replacing: [IPAddress: Username?]
        /// Registrations the file will hold.
        public var users: Int
        /// The room's history, confirmed messages only (rule 1 again).
        public var messages: [ChatMessage]
        public var lastSeq: UInt64
    }

    /// What the shell learnt from writing a snapshot.
    public struct SnapshotReport: Equatable, Sendable {
        /// Seconds since 1970, UTC, as written in the file.
        public var savedAt: Int64
        public var bytes: Int
        public var duration: Duration

        public init(savedAt: Int64, bytes: Int, duration: Duration) {
            self.savedAt = savedAt
            self.bytes = bytes
            self.duration = duration
        }
    }

    /// Something that happened, reported once it is true.
    public enum Event: Equatable, Sendable {
        /// A new address holds a name (on disk, with durability "sync").
        case registered(Username, client: Endpoint, requestID: UInt32)
        /// An address holds another name, or another spelling of its name.
        case renamed(from: Username, to: Username, client: Endpoint, requestID: UInt32)
        /// Any other answer; only with `reportsEveryRequest`.
        case answered(RequestHandler.Event, client: Endpoint, requestID: UInt32)
        /// Off the grammar, or another version of the protocol; answered with an error.
        case malformed(client: Endpoint, requestID: UInt32)
        case rateLimited(client: Endpoint)
        case registryFull(Username, client: Endpoint, requestID: UInt32)
        /// `client` became the member of its address (or moved there).
        case memberJoined(Username, client: Endpoint)
        case memberLeft(Username?, client: Endpoint, reason: LeaveReason)
        /// A message is in history and being pushed (on disk, with durability "sync").
        case messageAccepted(seq: UInt64, from: Username, client: Endpoint, bytes: Int)
        /// A journal sync failed: its changes were undone and answered UNAVAILABLE.
        case journalFailed(error: String)
        case snapshotWritten(SnapshotReport, users: Int)
        case snapshotFailed(error: String)
        case compactionFailed(error: String)
        /// An administrator removed a registration (on disk, with durability "sync").
        case removed(Username, address: IPAddress, ticket: UInt64)
        /// The removal's journal sync failed: the registration is back.
        case removalFailed(Username, address: IPAddress, ticket: UInt64, error: String)
        /// The snapshot `requestSnapshot(ticket:)` asked for was written (report) or failed (error).
        case snapshotRequestFinished(ticket: UInt64, report: SnapshotReport?, users: Int, error: String?)
    }

    /// What `removeRegistration` did.
    public enum RemovalOutcome: Equatable, Sendable {
        case notRegistered
        /// Done (durability "periodic"): the `.removed` event is reported too.
        case removed(Username)
        /// Done in memory, waiting for its journal sync (durability "sync"): a
        /// `.removed` or `.removalFailed` event with the same ticket follows.
        case pending(Username)
    }

    /// Counts of what the service has seen.
    public struct Counters: Equatable, Sendable {
        public var received = 0
        /// Not CHAT/1 at all: dropped unanswered.
        public var dropped = 0
        public var malformed = 0
        /// Dropped by the per-address rate limit.
        public var rateLimited = 0
        /// Not answered because the reply would be over 3 times the request's size.
        public var amplificationDropped = 0
        /// Chat requests answered COOKIE (no cookie, or a wrong one).
        public var cookieChallenges = 0
        public var messagesAccepted = 0
        /// Push datagrams sent, retransmissions included, and the retransmissions alone.
        public var pushes = 0
        public var retransmissions = 0
        /// ACKs that matched a push in flight.
        public var acks = 0
        public var membersDropped = 0
    }

    /// No reply is more than this many times the size of its request, so a
    /// forged source cannot use chatd to multiply traffic at a victim.
    public static let amplificationLimit = 3

    public private(set) var configuration: Configuration
    public internal(set) var registry: Registry
    public internal(set) var counters = Counters()
    /// When the last snapshot was written (seconds since 1970), if one was since start.
    public private(set) var lastSnapshot: Int64?
    /// Why registrations and messages are refused now (the last journal sync failed), if they are.
    public private(set) var journalError: String?
    /// Why the last snapshot failed, until one is written.
    public private(set) var snapshotError: String?

    /// Milliseconds since 1970, UTC: the time a message accepted now is
    /// stamped with. The shell sets it before each batch of datagrams.
    public var wallClock: Int64 = 0

    private var limiter: RateLimiter
    /// The per-address limit on SAY, beside the per-datagram one.
    var messageLimiter: RateLimiter
    var cookies: Cookies
    var room: ChatRoom
    var commits = CommitQueue<Held>()
    var timers = TimerQueue<Timer>()
    private var storageWork: [StorageWork] = []
    var transmits = OutputQueue<Transmit>()
    var events = OutputQueue<Event>()
    /// Journal bytes known to be on disk.
    private var journalLength: Int
    /// The registry or the history changed since the last snapshot started.
    var dirty = false
    /// `tickets`: the administrators' requests it answers.
    private var snapshotInFlight: (covers: Int, users: Int, seqsThrough: UInt64, tickets: [UInt64])?
    /// Requests for a snapshot that the next one answers.
    private var snapshotTickets: [UInt64] = []
    /// Without a journal: the seq the history file on disk reserves up to.
    /// Messages are pushed before they reach the disk then, so the file
    /// claims seqs ahead of use; after a crash seqs go on past the claim,
    /// and no seq anyone saw is given again.
    var seqsReserved: UInt64
    private var compacting = false
    private var stopping = false

    enum Timer: Hashable, Sendable {
        case snapshot
        case cookieRotation
        /// The earliest retransmission (or, after its last send, give-up)
        /// among a member's pushes.
        case pushes(AddressKey)
        /// When a member's silence would reach the presence TTL.
        case presence(AddressKey)
    }

    /// How long each cookie secret is current; the one before stays valid as long again.
    public static let cookieRotationInterval: Duration = .seconds(600)

    /// A reply waiting for a journal sync, with what to do if the sync fails;
    /// for an administrator's removal, only the events it ends in.
    struct Held: Sendable {
        /// Nil when the reply broke the amplification rule: the change still counts.
        var transmit: Transmit?
        var requestSize: Int
        var ifSyncFails: IfSyncFails
        /// Reported once the sync succeeds.
        var event: Event?
        /// A message to put into history and push once the sync succeeds.
        var publish: ChatMessage? = nil
    }

    enum IfSyncFails: Sendable {
        case sendAsIs
        case refuse(id: UInt32)
        /// `SUCCESS <seq>` to a retransmitted SAY: true if `seq` is on disk
        /// (an earlier group), else refused like the message itself.
        case sendIfStored(id: UInt32, seq: UInt64)
        case answerConnect(id: UInt32)
        /// An administrator's removal, which has no datagram: report it failed.
        case reportRemovalFailed(Username, address: IPAddress, ticket: UInt64)
    }

    /// - Parameters:
    ///   - registry: as loaded from the snapshot and journal.
    ///   - journalLength: bytes of the journal on disk, its header included (0 without one).
    ///   - history: the room's messages as loaded from the history file and
    ///     the journal, oldest first; `lastSeq` the newest seq ever given
    ///     that is known (the history file keeps it when history is empty).
    ///   - seqsReserved: without a journal, the seq the history file on
    ///     disk claims up to (the shell writes a claim before serving).
    ///   - seed: random, for the rate limiters' hashes and push ids.
    ///   - cookieKey: 128 random bits for the cookie secrets; derived from
    ///     `seed` when nil (for tests: 64 bits are not enough in service).
    public init(
        configuration: Configuration, registry: Registry, journalLength: Int, history: [ChatMessage] = [],
        lastSeq: UInt64 = 0, seqsReserved: UInt64? = nil, now: Instant, seed: UInt64,
        cookieKey: (UInt64, UInt64)? = nil
    ) {
        self.seqsReserved = seqsReserved ?? lastSeq + Self.seqReservation
        precondition(configuration.snapshotInterval > .zero, "a snapshot interval must be positive")
        self.configuration = configuration
        self.registry = registry
        self.registry.maxUsers = configuration.maxUsers
        self.journalLength = journalLength
        // Each use gets a key of its own, through SipHash: none reveals another.
        func derived(_ n: UInt64) -> UInt64 { SipHash.hash(key: (seed, ~seed), n, 0, 0) }
        limiter = RateLimiter(rate: configuration.ratePerIP, burst: Double(configuration.burstPerIP), seed: seed)
        messageLimiter = RateLimiter(
            rate: configuration.room.messagesPerSecond, burst: Double(configuration.room.messagesBurst),
            seed: derived(1))
        cookies = Cookies(key: cookieKey ?? (derived(2), derived(3)))
        room = ChatRoom(
            capacity: configuration.room.history, messages: history, lastSeq: lastSeq,
            pushKey: (derived(4), derived(5)))
        timers.schedule(.snapshot, at: now + configuration.snapshotInterval)
        timers.schedule(.cookieRotation, at: now + Self.cookieRotationInterval)
    }

    // MARK: - Datagrams

    /// Handles one datagram from `source`. Returns true when `reply` holds
    /// the answer to send to `source` now; false when there is nothing to
    /// send now (dropped, or held for a sync: see `pollTransmit`). A
    /// CONNECT allocates nothing unless the name is longer than 15 bytes.
    public mutating func handle(
        datagram: UnsafeRawBufferPointer, from source: Endpoint, socket: Int, now: Instant, reply: inout [UInt8]
    ) -> Bool {
        counters.received += 1
        if !room.pushes.isEmpty, acknowledged(datagram, from: source, now: now) { return false }
        guard limiter.allow(source.address, now: now) else {
            counters.rateLimited += 1
            events.append(.rateLimited(client: source))
            return false
        }
        if !room.members.isEmpty { heard(from: source, now: now) }
        // A datagram cut to the shell's buffer is still longer than 512
        // bytes, so it is still seen as oversized.
        let parse = RequestParse(datagram)
        switch parse {
        case .chat(let request):
            return handleChat(request, from: source, socket: socket, size: datagram.count, now: now, reply: &reply)
        case .invalidMessage(let id, let cookie, let detail):
            return handleChat(
                .say(id: id, cookie: cookie, token: 0, text: []), invalid: detail, from: source, socket: socket,
                size: datagram.count, now: now, reply: &reply)
        default: break
        }
        let result = RequestHandler.handle(parse, from: source.address, registry: &registry)
        guard let response = result.reply else {
            counters.dropped += 1
            return false
        }
        reply.removeAll(keepingCapacity: true)
        response.write(into: &reply)
        let fits = reply.count <= Self.amplificationLimit * datagram.count
        if !fits { counters.amplificationDropped += 1 }
        let id = response.id
        let change = result.event.change
        if change != nil { dirty = true }
        guard configuration.journaling, change != nil || commits.isPending(source.address) else {
            report(result.event, client: source, requestID: id)
            return fits
        }
        var held = Held(
            transmit: fits ? Transmit(destination: source, socket: socket, bytes: reply) : nil,
            requestSize: datagram.count, ifSyncFails: .sendAsIs, event: nil)
        // What the answer was decided on: the registry as it will not stay,
        // or only the request's own bytes.
        switch result.event {
        case .connected, .notFound: held.ifSyncFails = .answerConnect(id: id)
        case .registered, .renamed, .reintroduced, .taken, .full: held.ifSyncFails = .refuse(id: id)
        case .dropped, .malformed, .unsupportedVersion, .invalidUsername: break
        }
        if let change {
            held.event = Self.changeEvent(result.event, client: source, requestID: id)
            commits.record(address: source.address, name: change.name, previous: change.previous, reply: held)
        } else {
            report(result.event, client: source, requestID: id)
            commits.hold(held)
        }
        return false
    }

    /// Reports what an answer did, unless it is a change held for its sync.
    private mutating func report(_ event: RequestHandler.Event, client: Endpoint, requestID: UInt32) {
        switch event {
        case .dropped:
            break
        case .malformed, .unsupportedVersion:
            counters.malformed += 1
            events.append(.malformed(client: client, requestID: requestID))
        case .full(let name):
            events.append(.registryFull(name, client: client, requestID: requestID))
        case .registered, .renamed, .reintroduced:
            if let change = Self.changeEvent(event, client: client, requestID: requestID) {
                events.append(change)
            } else if configuration.reportsEveryRequest {
                events.append(.answered(event, client: client, requestID: requestID))
            }
        case .connected, .notFound, .invalidUsername, .taken:
            if configuration.reportsEveryRequest {
                events.append(.answered(event, client: client, requestID: requestID))
            }
        }
    }

    private static func changeEvent(_ event: RequestHandler.Event, client: Endpoint, requestID: UInt32) -> Event? {
        guard let change = event.change else { return nil }
        guard let previous = change.previous else {
            return .registered(change.name, client: client, requestID: requestID)
        }
        return .renamed(from: previous, to: change.name, client: client, requestID: requestID)
    }

    // MARK: - Time

    /// When `handleTimeout` should be called next; nil when nothing waits.
    public mutating func nextTimeout() -> Instant? {
        timers.nextDeadline()
    }

    /// Acts on every deadline at or before `now`.
    public mutating func handleTimeout(now: Instant) {
        while let timer = timers.popDue(now: now) {
            switch timer {
            case .snapshot:
                timers.schedule(.snapshot, at: now + configuration.snapshotInterval)
                startSnapshot()
            case .cookieRotation:
                timers.schedule(.cookieRotation, at: now + Self.cookieRotationInterval)
                cookies.rotate()
            case .pushes(let key):
                pushesDue(key, now: now)
            case .presence(let key):
                presenceDue(key, now: now)
            }
        }
    }

    // MARK: - Storage

    /// The next piece of storage work, or nil. Changes handled since the
    /// last call become one journal group (one write, one sync), unless a
    /// group is in flight: then they wait and share the next one.
    public mutating func pollStorageWork() -> StorageWork? {
        if !storageWork.isEmpty { return storageWork.removeFirst() }
        while configuration.journaling, let lines = commits.startCommit() {
            if !lines.isEmpty { return .commit(lines) }
            // Only replies held behind a group that has been confirmed since
            // (a group with a message to publish always has its line).
            release(commits.commitSucceeded(), now: .zero)
        }
        return nil
    }

    /// The journal group in flight is on disk; the journal holds
    /// `journalLength` bytes. Messages it held are pushed from `now`.
    public mutating func committed(journalLength: Int, now: Instant) {
        self.journalLength = journalLength
        journalError = nil
        release(commits.commitSucceeded(), now: now)
    }

    /// The journal group in flight could not be written; the journal is
    /// back at `journalLength` bytes. Every pending change is undone.
    public mutating func commitFailed(error: String, journalLength: Int) {
        self.journalLength = journalLength
        journalError = error
        events.append(.journalFailed(error: error))
        // Messages waiting for this sync take no seq after all.
        room.nextSeq = room.lastSeq + 1
        room.tokens.forget(after: room.lastSeq)
        for held in commits.commitFailed(registry: &registry) {
            switch held.ifSyncFails {
            case .sendAsIs:
                if let transmit = held.transmit { transmits.append(transmit) }
            case .refuse(let id):
                answer(held, with: .error(id: id, reason: .unavailable))
            case .sendIfStored(let id, let seq):
                if seq <= room.lastSeq {
                    if let transmit = held.transmit { transmits.append(transmit) }
                } else {
                    answer(held, with: .error(id: id, reason: .unavailable))
                }
            case .answerConnect(let id):
                guard let destination = held.transmit?.destination else { continue }
                let result = RequestHandler.handle(.request(.connect(id: id)), from: destination.address, registry: &registry)
                if let response = result.reply { answer(held, with: response) }
            case .reportRemovalFailed(let name, let address, let ticket):
                events.append(.removalFailed(name, address: address, ticket: ticket, error: error))
            }
        }
        dropUnregisteredMembers()
    }

    private mutating func answer(_ held: Held, with response: Response) {
        guard var transmit = held.transmit else { return }
        transmit.bytes = response.bytes
        guard transmit.bytes.count <= Self.amplificationLimit * held.requestSize else {
            counters.amplificationDropped += 1
            return
        }
        transmits.append(transmit)
    }

    private mutating func release(_ held: [Held], now: Instant) {
        for reply in held {
            if let event = reply.event { events.append(event) }
            if let transmit = reply.transmit { transmits.append(transmit) }
            if let message = reply.publish { publish(message, now: now) }
        }
    }

    mutating func startSnapshot() {
        guard dirty, snapshotInFlight == nil, !compacting, !stopping else { return }
        queueSnapshot()
    }

    /// Seqs the history file claims ahead of use without a journal: at
    /// 5 messages a second from each of 100 addresses, about 20 s' worth.
    public static let seqReservation: UInt64 = 10_000

    private mutating func queueSnapshot() {
        let confirmed = commits.confirmedNames
        var users = registry.count
        for (address, name) in confirmed {
            // Pending registrations are left out, pending removals put back.
            users += (name == nil ? 0 : 1) - (registry.username(for: address) == nil ? 0 : 1)
        }
        // The final snapshot claims no seq ahead: nothing is given after it.
        let seqsThrough = configuration.journaling || stopping ? room.lastSeq : room.lastSeq + Self.seqReservation
        // It holds every change made so far: it answers every request waiting.
        snapshotInFlight = (journalLength, users, seqsThrough, snapshotTickets)
        snapshotTickets = []
        // Pending changes left out now must go into a later snapshot.
        dirty = !confirmed.isEmpty
        storageWork.append(
            .writeSnapshot(
                SnapshotJob(
                    records: registry.records, replacing: confirmed, users: users, messages: Array(room.history),
                    lastSeq: seqsThrough)))
    }

    public mutating func snapshotWritten(_ report: SnapshotReport) {
        guard let written = snapshotInFlight.take() else { return }
        seqsReserved = max(seqsReserved, written.seqsThrough)
        lastSnapshot = report.savedAt
        snapshotError = nil
        events.append(.snapshotWritten(report, users: written.users))
        for ticket in written.tickets {
            events.append(.snapshotRequestFinished(ticket: ticket, report: report, users: written.users, error: nil))
        }
        // The snapshot holds every change in those journal bytes: drop them.
        if configuration.journaling, written.covers > Journal.header.count {
            compacting = true
            storageWork.append(.compact(droppingFirst: written.covers))
        }
        startRequestedSnapshot()
    }

    public mutating func snapshotFailed(error: String) {
        guard let failed = snapshotInFlight.take() else { return }
        dirty = true
        snapshotError = error
        events.append(.snapshotFailed(error: error))
        for ticket in failed.tickets {
            events.append(.snapshotRequestFinished(ticket: ticket, report: nil, users: failed.users, error: error))
        }
        startRequestedSnapshot()
    }

    /// The journal now holds `journalLength` bytes, none of them covered by the snapshot.
    public mutating func compacted(journalLength: Int) {
        compacting = false
        self.journalLength = journalLength
        startRequestedSnapshot()
    }

    public mutating func compactionFailed(error: String) {
        compacting = false
        events.append(.compactionFailed(error: error))
        startRequestedSnapshot()
    }

    // MARK: - Administration

    /// Writes a snapshot now (chatctl snapshot), dirty or not, holding every
    /// change made before this call: reported by `.snapshotRequestFinished`
    /// with `ticket`, once written or failed. While a snapshot or a
    /// compaction is in flight it waits for them (see the theory comment).
    public mutating func requestSnapshot(ticket: UInt64) {
        guard !stopping else {
            events.append(Self.stoppingFinished(ticket, users: registry.count))
            return
        }
        snapshotTickets.append(ticket)
        startRequestedSnapshot()
    }

    private mutating func startRequestedSnapshot() {
        guard !snapshotTickets.isEmpty, snapshotInFlight == nil, !compacting, !stopping else { return }
        queueSnapshot()
    }

    private static func stoppingFinished(_ ticket: UInt64, users: Int) -> Event {
        .snapshotRequestFinished(ticket: ticket, report: nil, users: users, error: "chatd is stopping")
    }

    /// Frees the registration of `address` for an administrator (chatctl
    /// remove). Its member, if any, leaves the room at once; with a journal
    /// the removal is confirmed like an INTRODUCE, once its line is synced.
    public mutating func removeRegistration(of address: IPAddress, ticket: UInt64, now: Instant) -> RemovalOutcome {
        guard let name = registry.username(for: address) else { return .notRegistered }
        // Before the registry forgets the name, so that the event still has it.
        drop(AddressKey(address), reason: .removed)
        registry.remove(address)
        dirty = true
        let removed = Event.removed(name, address: address, ticket: ticket)
        guard configuration.journaling else {
            events.append(removed)
            return .removed(name)
        }
        commits.record(
            removalOf: address, previous: name,
            reply: Held(
                transmit: nil, requestSize: 0,
                ifSyncFails: .reportRemovalFailed(name, address: address, ticket: ticket), event: removed))
        return .pending(name)
    }

    // MARK: - Outputs

    /// The next datagram to send that is not the answer of the moment.
    public mutating func pollTransmit() -> Transmit? {
        pushPublished()
        return transmits.poll()
    }

    /// The next event to report.
    public mutating func pollEvent() -> Event? { events.poll() }

    // MARK: - Life cycle

    /// Applies a new configuration. Whether to journal is fixed for the
    /// process's life: switching it needs a restart, and is ignored here.
    public mutating func reconfigure(_ new: Configuration, now: Instant) {
        precondition(new.snapshotInterval > .zero, "a snapshot interval must be positive")
        if new.snapshotInterval != configuration.snapshotInterval {
            timers.schedule(.snapshot, at: now + new.snapshotInterval)
        }
        registry.maxUsers = new.maxUsers
        limiter.rate = new.ratePerIP
        limiter.burst = Double(new.burstPerIP)
        messageLimiter.rate = new.room.messagesPerSecond
        messageLimiter.burst = Double(new.room.messagesBurst)
        if new.room.history != room.history.capacity {
            room.history.resize(to: new.room.history)
            dirty = true
        }
        let journaling = configuration.journaling
        let roomChanged = new.room != configuration.room
        configuration = new
        configuration.journaling = journaling
        if roomChanged { reconfigureMembers(now: now) }
    }

    /// No more periodic snapshots: the shell is stopping. Changes already
    /// handled still get their sync and their answer.
    public mutating func stop() {
        stopping = true
        timers.cancel(.snapshot)
        timers.cancel(.cookieRotation)
        // Requests still waiting fail now: the final snapshot, written once
        // everything has settled, is the shell's, and its outcome the exit's.
        for ticket in snapshotTickets { events.append(Self.stoppingFinished(ticket, users: registry.count)) }
        snapshotTickets = []
    }

    /// Whether the shell waits for the journal thread (a group or a compaction in flight).
    public var awaitsJournal: Bool { commits.isCommitting || compacting }
    /// Journal bytes on disk, its header included (0 without a journal).
    public var journalBytes: Int { journalLength }
    /// Whether the shell waits for the snapshot writer.
    public var awaitsSnapshot: Bool { snapshotInFlight != nil }
    /// Nothing in flight and nothing queued: every change is answered and,
    /// with a journal, on disk.
    public var isSettled: Bool {
        !awaitsJournal && !awaitsSnapshot && storageWork.isEmpty && commits.isEmpty
            && transmits.isDrained && room.publishedAt == nil
    }

    /// Queues the snapshot written at exit, whether or not anything changed.
    /// Call it once settled, so that it holds every change.
    public mutating func writeFinalSnapshot() {
        precondition(isSettled, "the final snapshot must hold every change")
        queueSnapshot()
    }
}

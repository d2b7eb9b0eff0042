// chatd's event loop: one thread, one epoll set.
//
//   sockets readable  -> drain datagrams: RequestHandler, reply, log
//   signalfd          -> SIGTERM/SIGINT: leave the loop; SIGHUP: reload config
//   snapshot timer    -> every snapshot interval: save the registry if it changed
//   snapshot writer   -> a background write finished: log it, or retry later
//   journal thread    -> a commit is on disk (send the replies it held) or
//                        failed (undo, answer UNAVAILABLE); a compaction ended
//   housekeeping (1s) -> STATUS= for systemd when it changed, overdue log summaries
//   watchdog timer    -> WATCHDOG=1 at half systemd's interval, if the loop is healthy
//
// Everything the protocol decides happens in ChatCore's RequestHandler; the
// server moves bytes, keeps time, talks to systemd and decides what to log.
// This file holds the state, the loop and the datagram path; the other
// concerns have files of their own: Server+Durability (the journal and held
// replies), Server+Snapshots, Server+Signals (stop, reload), Server+Timers
// (STATUS=, log summaries, the watchdog).
// Only epoll_wait blocks. Snapshots are encoded and written on a background
// thread from a copy of the registry's records, which costs the loop almost
// nothing: the records are copy-on-write chunks, so the loop's next changes
// copy only the chunks they touch. Only the final snapshot, at exit, is
// written on the loop.
//
// The watchdog is pinged from the loop itself, never from a thread of its
// own, so a loop that hangs stops the pings and systemd restarts chatd.
//
// Warnings that a flood could repeat (malformed datagrams, failed sends,
// failed snapshots) go through a Throttle: at most one line per kind per 10 s,
// carrying the count. The loop stops only on a signal or if epoll or the
// signalfd themselves fail, which would mean the process can no longer work.

import ChatConfig
import ChatCore
import ChatSystem
import Logging
import Synchronization

public final class Server {
    /// What the server takes from the config.
    public struct Settings: Equatable, Sendable {
        public var listen: Endpoint
        public var snapshotPath: String
        public var snapshotInterval: Duration
        public var maxUsers: Int
        public var logLevel: Logger.Level
        public var logTarget: LogTarget
        public var durability: Durability
        public var journalPath: String
        public var ratePerIP: Double
        public var burstPerIP: Int

        public init(_ config: Config) {
            listen = Endpoint(config.server.bind, port: config.server.port)
            snapshotPath = config.registry.snapshotPath
            snapshotInterval = .seconds(config.registry.snapshotIntervalSeconds)
            maxUsers = config.registry.maxUsers
            logLevel = Logger.Level(config.log.level)
            logTarget = config.log.target
            durability = config.registry.durability
            journalPath = config.registry.journalPath
            ratePerIP = config.limits.ratePerIP
            burstPerIP = config.limits.burstPerIP
        }
    }

    /// Counters of what the loop has seen, logged at exit.
    public struct Statistics: Sendable {
        public var received = 0
        public var answered = 0
        public var dropped = 0
        public var malformed = 0
        public var sendErrors = 0
        /// Dropped by the per-address rate limit.
        public var rateLimited = 0
        /// Not answered because the reply would be over 3 times the request's size.
        public var amplificationDropped = 0
    }

    /// Where the listening sockets came from, which decides whether the
    /// config's bind and port mean anything.
    public enum SocketOrigin: Sendable {
        case config
        case systemd
    }

    var settings: Settings
    var registry: Registry
    var logger: Logger
    let sockets: [UDPSocket]
    let origin: SocketOrigin
    let reloadConfig: () throws -> Config
    let epoll: Epoll
    let signals: SignalFD
    let snapshotTimer: TimerFD
    let housekeepingTimer: TimerFD
    let watchdogTimer: TimerFD?
    let snapshotWriter: BackgroundThread
    /// The outcome of the background write in flight, set by the writer thread.
    let writeOutcome = OutcomeBox()
    var writing = false
    /// The journal (durability "sync").
    let journal: JournalWriter?
    /// Changes applied but not yet on disk, and the replies waiting for them.
    var commits = CommitQueue<HeldReply>()
    /// Bytes of the journal known to be on disk.
    var journalLength = 0
    /// A compaction is queued. Until it is done, `journalLength` counts bytes
    /// of the file before it, so no snapshot may start: the length it covers
    /// would be cut from the compacted file, confirmed lines with it.
    var compacting = false
    var throttle = Throttle<Warning>(window: .seconds(10))
    var limiter: RateLimiter
    /// `logger.logLevel <= .debug`, kept apart: asking the logger copies its
    /// handler, a cost on every datagram.
    var debugLogging: Bool
    /// Reused for every batch: received requests, replies to send, one reply's bytes.
    let incoming = DatagramBatch()
    let outgoing = DatagramBatch()
    var reply: [UInt8] = []

    /// The registry changed since the last snapshot was written.
    var dirty = false
    var running = true
    var lastSnapshot: Int64?
    /// The latest event worth showing in STATUS= (a reload, a failure).
    var statusNote: String?
    var sentStatus = ""
    var lastHousekeeping = SystemClock.monotonicNow()
    /// Reloads handled so far, for `chatd --reload`.
    var reloads = 0
    public internal(set) var statistics = Statistics()

    enum Tag: UInt64 {
        case signals = 1, snapshotTimer, snapshotWriter, journal, housekeeping, watchdog
        /// Sockets are tagged socketBase + index.
        static let socketBase: UInt64 = 100
    }

    /// Repeatable warnings, summarised by the throttle: the first at once,
    /// then at most one line per kind per 10 s with a count.
    enum Warning: Hashable, Sendable {
        case malformed, receiveFailed, sendFailed, snapshotFailed, registryFull, journalFailed, rateLimited

        var message: Logger.Message {
            switch self {
            case .malformed: "malformed datagrams received"
            case .receiveFailed: "receive failed"
            case .sendFailed: "replies not sent"
            case .snapshotFailed: "snapshot failed, keeping the previous one; will retry"
            case .registryFull: "registrations refused: registry full"
            case .journalFailed: "registrations not saved: cannot write the journal; answered UNAVAILABLE"
            case .rateLimited: "datagrams dropped: over the per-address rate limit"
            }
        }
    }

    /// - Parameters:
    ///   - sockets: bound, listening sockets (from the config or from systemd).
    ///   - signals: created before any thread started, so SIGTERM, SIGINT and
    ///     SIGHUP are blocked everywhere and arrive here.
    ///   - reloadConfig: reads and checks the config again for SIGHUP.
    ///   - journal: the journal to append to and compact (durability "sync"; nil otherwise).
    public init(
        settings: Settings, registry: Registry, sockets: [UDPSocket], origin: SocketOrigin, signals: SignalFD,
        journal: JournalWriter?, logger: Logger, reloadConfig: @escaping () throws -> Config
    ) throws {
        precondition(!sockets.isEmpty, "a server needs a socket")
        self.settings = settings
        self.registry = registry
        self.sockets = sockets
        self.origin = origin
        self.signals = signals
        self.logger = logger
        self.logger.logLevel = settings.logLevel
        self.reloadConfig = reloadConfig
        limiter = RateLimiter(
            rate: settings.ratePerIP, burst: Double(settings.burstPerIP), seed: .random(in: .min ... .max))
        debugLogging = settings.logLevel <= .debug
        epoll = try Epoll()
        snapshotTimer = try TimerFD()
        housekeepingTimer = try TimerFD()
        watchdogTimer = Systemd.watchdogInterval() == nil ? nil : try TimerFD()
        snapshotWriter = try BackgroundThread()
        self.journal = journal
        journalLength = journal?.initialLength ?? 0
        for (index, socket) in sockets.enumerated() {
            try epoll.add(fd: socket.fd, events: .readable, tag: Tag.socketBase + UInt64(index))
        }
        try epoll.add(fd: signals.fd, events: .readable, tag: Tag.signals.rawValue)
        try epoll.add(fd: snapshotTimer.fd, events: .readable, tag: Tag.snapshotTimer.rawValue)
        try epoll.add(fd: snapshotWriter.fd, events: .readable, tag: Tag.snapshotWriter.rawValue)
        if let journal {
            try epoll.add(fd: journal.fd, events: .readable, tag: Tag.journal.rawValue)
        }
        try epoll.add(fd: housekeepingTimer.fd, events: .readable, tag: Tag.housekeeping.rawValue)
        if let watchdogTimer {
            try epoll.add(fd: watchdogTimer.fd, events: .readable, tag: Tag.watchdog.rawValue)
        }
    }

    /// Where the server listens, for logs and STATUS=.
    public var listening: String {
        sockets.map { (try? $0.localEndpoint.description) ?? "fd \($0.fd)" }.joined(separator: ", ")
    }

    /// Tells systemd the service is ready, serves until SIGTERM or SIGINT,
    /// then writes the final snapshot. Returns whether that snapshot was written.
    public func run() throws -> Bool {
        try snapshotTimer.arm(after: settings.snapshotInterval, interval: settings.snapshotInterval)
        try housekeepingTimer.arm(after: .seconds(1), interval: .seconds(1))
        if let watchdogTimer, let interval = Systemd.watchdogInterval() {
            try watchdogTimer.arm(after: .zero, interval: interval / 2)
            logger.info("watchdog enabled", metadata: ["watchdog.interval_ms": "\(interval.nanoseconds / 1_000_000)"])
        }
        Systemd.notify("READY=1\nSTATUS=\(status())")
        sentStatus = status()

        var events: [EpollEvent] = []
        reply.reserveCapacity(maxDatagramSize)
        while running {
            try epoll.wait(timeoutMilliseconds: -1, into: &events)
            for event in events {
                if event.tag >= Tag.socketBase {
                    let index = Int(event.tag - Tag.socketBase)
                    if index < sockets.count { drain(index) }
                    continue
                }
                switch Tag(rawValue: event.tag) {
                case .signals: try handleSignals()
                case .snapshotTimer:
                    _ = try snapshotTimer.read()
                    if dirty && !writing && !compacting { startSnapshot() }
                case .snapshotWriter:
                    _ = try snapshotWriter.acknowledge()
                    finishSnapshot()
                case .journal:
                    try handleJournalOutcomes()
                case .housekeeping:
                    _ = try housekeepingTimer.read()
                    housekeeping()
                case .watchdog:
                    _ = try watchdogTimer?.read()
                    watchdog()
                case nil: continue
                }
            }
            // Everything this turn changed shares one write and one fdatasync.
            startCommit()
        }
        Systemd.notify("STOPPING=1\nSTATUS=stopping: writing the final snapshot")
        logger.info("stopping", metadata: [
            "message.id": MessageID.stopping, "users": "\(registry.count)",
            "datagrams.received": "\(statistics.received)", "datagrams.dropped": "\(statistics.dropped)",
            "datagrams.malformed": "\(statistics.malformed)", "send.errors": "\(statistics.sendErrors)",
            "datagrams.rate_limited": "\(statistics.rateLimited)",
            "datagrams.unanswered_amplification": "\(statistics.amplificationDropped)",
        ])
        // Changes already applied get their answer, then the final snapshot
        // covers them; changes queued behind a commit in flight go next, so
        // nothing is pending when the snapshot is taken.
        startCommit()
        while commits.isCommitting {
            try journal?.waitForOutcome()
            try handleJournalOutcomes()
            startCommit()
        }
        if writing {
            // Let the background write finish first: two writers would race on the file.
            try snapshotWriter.waitForCompletion()
            _ = try snapshotWriter.acknowledge()
            finishSnapshot()
        }
        try awaitCompaction()
        let coveredJournal = journalLength
        guard finish(writeSnapshot(registry.records, to: settings.snapshotPath, savedAt: SystemClock.wallSeconds().seconds))
        else { return false }
        if let journal, coveredJournal > 0 {
            journal.compact(droppingFirst: coveredJournal)
            compacting = true
            try awaitCompaction()
        }
        return true
    }

    /// Blocks until no compaction is queued, so `journalLength` counts bytes
    /// of the file as it is.
    private func awaitCompaction() throws {
        while compacting {
            try journal?.waitForOutcome()
            try handleJournalOutcomes()
        }
    }

    // MARK: - Datagrams

    /// Most batches handled per wake-up and socket (8 × 64 datagrams), so a
    /// flood cannot starve signals and timers.
    static let batchesPerWakeup = 8
    /// No reply is more than this many times the size of its request.
    static let amplificationLimit = 3

    /// Receives, answers and sends in batches until the socket is empty or
    /// the per-wake-up limit is reached. A CONNECT allocates nothing unless
    /// the name is longer than 15 bytes (Swift's inline small strings), when
    /// reading it from the registry costs one String.
    func drain(_ socketIndex: Int) {
        let socket = sockets[socketIndex]
        for _ in 0..<Self.batchesPerWakeup {
            let count: Int
            do {
                count = try socket.receive(into: incoming)
            } catch {
                // A pending ICMP error and the like: reported, never fatal.
                warn(.receiveFailed, ["error": "\(error)"])
                continue
            }
            guard count > 0 else { return }
            statistics.received += count
            outgoing.removeAll()
            let now = SystemClock.monotonicNow()
            for index in 0..<count {
                let source = incoming.source(at: index)
                // Before parsing: a flood costs one hash lookup a datagram.
                guard limiter.allow(source.address, now: now) else {
                    statistics.rateLimited += 1
                    warn(.rateLimited, now: now, ["client.ip": "\(source.address)"])
                    continue
                }
                // A datagram cut to the buffer is still longer than 512
                // bytes, so the handler still sees it as oversized.
                let payload = incoming.payload(at: index)
                let result = RequestHandler.handle(payload, from: source.address, registry: &registry)
                record(result, from: source, now: now)
                guard let response = result.reply else { continue }
                reply.removeAll(keepingCapacity: true)
                response.write(into: &reply)
                guard reply.count <= Self.amplificationLimit * payload.count else {
                    // A forged source must not get back more than it sent, times 3.
                    statistics.amplificationDropped += 1
                    continue
                }
                if holdUntilDurable(result, request: payload, from: source, socket: socketIndex) { continue }
                reply.withUnsafeBytes { _ = outgoing.append($0, replyingTo: index, of: incoming) }
            }
            send(outgoing, on: socket)
            if count < incoming.capacity { return }
        }
    }

    func send(_ batch: DatagramBatch, on socket: UDPSocket) {
        let result = socket.send(batch)
        statistics.answered += result.sent
        guard result.sent < batch.count else { return }
        statistics.sendErrors += batch.count - result.sent
        if result.wouldBlock > 0 {
            // The send buffer is full: UDP may drop, and clients retry.
            warn(.sendFailed, ["replies": "\(result.wouldBlock)", "reason": "send buffer full"])
        }
        if let error = result.firstError {
            warn(.sendFailed, ["replies": "\(result.failed)", "error": "\(error)"])
        }
    }

    func record(_ result: RequestHandler.Result, from source: Endpoint, now: Instant? = nil) {
        let event = result.event
        if event.changedRegistry { dirty = true }
        switch event {
        case .dropped:
            statistics.dropped += 1
        case .malformed, .unsupportedVersion:
            statistics.malformed += 1
            warn(.malformed, now: now, metadata(result, source))
        case .registered(let name):
            var metadata = metadata(result, source)
            metadata["username"] = "\(name)"
            metadata["message.id"] = MessageID.registered
            logger.info("user registered", metadata: metadata)
        case .renamed(let previous, let name):
            logRename(from: previous, to: name, metadata(result, source))
        case .reintroduced(let previous, let name) where previous.text != name.text:
            logRename(from: previous, to: name, metadata(result, source))
        case .full(let name):
            // Spoofed sources could send these without end: summarised too.
            var metadata = metadata(result, source)
            metadata["username"] = "\(name)"
            metadata["registry.max_users"] = "\(registry.maxUsers)"
            warn(.registryFull, metadata)
        case .connected, .reintroduced, .taken, .notFound, .invalidUsername:
            // The common case: only describe it when someone asked for debug.
            guard debugLogging else { return }
            var metadata = metadata(result, source)
            metadata["result"] = "\(event.summary)"
            switch event {
            case .connected(let name), .reintroduced(_, let name), .taken(let name): metadata["username"] = "\(name)"
            default: break
            }
            logger.debug("request answered", metadata: metadata)
        }
    }

    func metadata(_ result: RequestHandler.Result, _ source: Endpoint) -> Logger.Metadata {
        var metadata: Logger.Metadata = ["client.ip": "\(source.address)"]
        if let id = result.reply?.id { metadata["request.id"] = "\(id)" }
        return metadata
    }

    func logRename(from previous: Username, to name: Username, _ metadata: Logger.Metadata) {
        var metadata = metadata
        metadata["username"] = "\(name)"
        metadata["username.previous"] = "\(previous)"
        metadata["message.id"] = MessageID.renamed
        logger.info("user renamed", metadata: metadata)
    }

    /// Logs a repeatable warning through the throttle: at once the first
    /// time, then as one summary line per kind per window.
    /// `now`: the caller's clock reading, where it has one (the datagram path
    /// warns once per bad datagram in a flood).
    func warn(_ kind: Warning, now: Instant? = nil, _ metadata: @autoclosure () -> Logger.Metadata) {
        guard let count = throttle.record(kind, now: now ?? SystemClock.monotonicNow()) else { return }
        report(kind, count: count, metadata())
    }

    func report(_ kind: Warning, count: Int, _ metadata: Logger.Metadata = [:]) {
        let message = kind.message
        var metadata = metadata
        metadata["count"] = "\(count)"
        metadata["summary.window_s"] = "\(throttle.window.components.seconds)"
        if kind == .snapshotFailed {
            metadata["message.id"] = MessageID.snapshotFailed
            logger.error(message, metadata: metadata)
        } else {
            logger.warning(message, metadata: metadata)
        }
    }

}

extension RequestHandler.Event {
    /// A short word for logs.
    var summary: String {
        switch self {
        case .dropped: "dropped"
        case .malformed: "malformed"
        case .unsupportedVersion: "unsupported_version"
        case .connected: "connected"
        case .notFound: "client_not_found"
        case .registered: "registered"
        case .renamed: "renamed"
        case .reintroduced: "reintroduced"
        case .invalidUsername: "invalid_username"
        case .taken: "taken"
        case .full: "server_full"
        }
    }
}

extension Logger.Level {
    public init(_ level: LogLevel) {
        self =
            switch level {
            case .debug: .debug
            case .info: .info
            case .notice: .notice
            case .warning: .warning
            case .error: .error
            }
    }
}

// chatd's event loop: one thread, one epoll set.
//
//   sockets readable  -> drain datagrams: RequestHandler, reply, log
//   signalfd          -> SIGTERM/SIGINT: leave the loop; SIGHUP: reload config
//   snapshot timer    -> every snapshot interval: save the registry if it changed
//   snapshot writer   -> a background write finished: log it, or retry later
//   housekeeping (1s) -> STATUS= for systemd when it changed, overdue log summaries
//   watchdog timer    -> WATCHDOG=1 at half systemd's interval, if the loop is healthy
//
// Everything the protocol decides happens in ChatCore's RequestHandler; this
// file moves bytes, keeps time, talks to systemd and decides what to log.
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

    private var settings: Settings
    private var registry: Registry
    private var logger: Logger
    private let sockets: [UDPSocket]
    private let origin: SocketOrigin
    private let reloadConfig: () throws -> Config
    private let epoll: Epoll
    private let signals: SignalFD
    private let snapshotTimer: TimerFD
    private let housekeepingTimer: TimerFD
    private let watchdogTimer: TimerFD?
    private let snapshotWriter: BackgroundThread
    /// The outcome of the background write in flight, set by the writer thread.
    private let writeOutcome = OutcomeBox()
    private var writing = false
    /// The journal (durability "sync", or one left by an earlier run to compact).
    private let journal: JournalWriter?
    /// Changes applied but not yet on disk, and the replies waiting for them.
    private var commits = CommitQueue<HeldReply>()
    /// Bytes of the journal known to be on disk.
    private var journalLength = 0
    private var throttle = Throttle<Warning>(window: .seconds(10))
    private var limiter: RateLimiter
    /// `logger.logLevel <= .debug`, kept apart: asking the logger copies its
    /// handler, a cost on every datagram.
    private var debugLogging: Bool
    /// Reused for every batch: received requests, replies to send, one reply's bytes.
    private let incoming = DatagramBatch()
    private let outgoing = DatagramBatch()
    private var reply: [UInt8] = []

    /// The registry changed since the last snapshot was written.
    private var dirty = false
    private var running = true
    private var lastSnapshot: Int64?
    /// The latest event worth showing in STATUS= (a reload, a failure).
    private var statusNote: String?
    private var sentStatus = ""
    private var lastHousekeeping = SystemClock.monotonicNow()
    /// Reloads handled so far, for `chatd --reload`.
    private var reloads = 0
    public private(set) var statistics = Statistics()

    private enum Tag: UInt64 {
        case signals = 1, snapshotTimer, snapshotWriter, journal, housekeeping, watchdog
        /// Sockets are tagged socketBase + index.
        static let socketBase: UInt64 = 100
    }

    /// Repeatable warnings, summarised by the throttle.
    private enum Warning: Hashable, Sendable {
        case malformed, receiveFailed, sendFailed, snapshotFailed, registryFull, journalFailed, rateLimited
    }

    /// - Parameters:
    ///   - sockets: bound, listening sockets (from the config or from systemd).
    ///   - signals: created before any thread started, so SIGTERM, SIGINT and
    ///     SIGHUP are blocked everywhere and arrive here.
    ///   - reloadConfig: reads and checks the config again for SIGHUP.
    ///   - journal: the journal to append to (durability "sync") or to compact.
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
                    if dirty && !writing { startSnapshot() }
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
        // Changes already applied get their answer, then the final snapshot covers them.
        startCommit()
        while commits.isCommitting {
            try journal?.waitForOutcome()
            try handleJournalOutcomes()
        }
        if writing {
            // Let the background write finish first: two writers would race on the file.
            try snapshotWriter.waitForCompletion()
            _ = try snapshotWriter.acknowledge()
            finishSnapshot()
        }
        let coveredJournal = journalLength
        guard finish(writeSnapshot(registry.records, to: settings.snapshotPath, savedAt: SystemClock.wallSeconds().seconds))
        else { return false }
        if let journal, coveredJournal > 0 {
            journal.compact(droppingFirst: coveredJournal)
            try journal.waitForOutcome()
            try handleJournalOutcomes()
        }
        return true
    }

    // MARK: - Datagrams

    /// Most batches handled per wake-up and socket (8 × 64 datagrams), so a
    /// flood cannot starve signals and timers.
    private static let batchesPerWakeup = 8
    /// No reply is more than this many times the size of its request.
    static let amplificationLimit = 3

    /// Receives, answers and sends in batches until the socket is empty or
    /// the per-wake-up limit is reached. Nothing here allocates for a CONNECT.
    private func drain(_ socketIndex: Int) {
        let socket = sockets[socketIndex]
        for _ in 0..<Self.batchesPerWakeup {
            let count: Int
            do {
                count = try socket.receive(into: incoming)
            } catch {
                // A pending ICMP error and the like: reported, never fatal.
                warn(.receiveFailed, "receive failed", ["error": "\(error)"])
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
                    warn(.rateLimited, "datagrams dropped: over the per-address rate limit", ["client.ip": "\(source.address)"])
                    continue
                }
                // A datagram cut to the buffer is still longer than 512
                // bytes, so the handler still sees it as oversized.
                let payload = incoming.payload(at: index)
                let result = RequestHandler.handle(payload, from: source.address, registry: &registry)
                record(result, from: source)
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

    private func send(_ batch: DatagramBatch, on socket: UDPSocket) {
        let result = socket.send(batch)
        statistics.answered += result.sent
        guard result.sent < batch.count else { return }
        statistics.sendErrors += batch.count - result.sent
        if result.wouldBlock > 0 {
            // The send buffer is full: UDP may drop, and clients retry.
            warn(.sendFailed, "replies not sent: send buffer full", ["replies": "\(result.wouldBlock)"])
        }
        if let error = result.firstError {
            warn(.sendFailed, "replies not sent", ["replies": "\(result.failed)", "error": "\(error)"])
        }
    }

    private func record(_ result: RequestHandler.Result, from source: Endpoint) {
        let event = result.event
        if event.changedRegistry { dirty = true }
        switch event {
        case .dropped:
            statistics.dropped += 1
        case .malformed, .unsupportedVersion:
            statistics.malformed += 1
            warn(.malformed, "malformed datagrams received", metadata(result, source))
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
            warn(.registryFull, "registrations refused: registry full", metadata)
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

    private func metadata(_ result: RequestHandler.Result, _ source: Endpoint) -> Logger.Metadata {
        var metadata: Logger.Metadata = ["client.ip": "\(source.address)"]
        if let id = result.reply?.id { metadata["request.id"] = "\(id)" }
        return metadata
    }

    private func logRename(from previous: Username, to name: Username, _ metadata: Logger.Metadata) {
        var metadata = metadata
        metadata["username"] = "\(name)"
        metadata["username.previous"] = "\(previous)"
        metadata["message.id"] = MessageID.renamed
        logger.info("user renamed", metadata: metadata)
    }

    /// Logs a repeatable warning through the throttle: at once the first
    /// time, then as one summary line per kind per window.
    private func warn(_ kind: Warning, _ message: Logger.Message, _ metadata: @autoclosure () -> Logger.Metadata) {
        guard let count = throttle.record(kind, now: SystemClock.monotonicNow()) else { return }
        report(kind, message, count: count, metadata())
    }

    private func report(_ kind: Warning, _ message: Logger.Message, count: Int, _ metadata: Logger.Metadata = [:]) {
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

    // MARK: - Timers

    /// Once a second: flush overdue summaries and keep STATUS= current.
    private func housekeeping() {
        lastHousekeeping = SystemClock.monotonicNow()
        for (kind, count) in throttle.due(now: lastHousekeeping) {
            switch kind {
            case .malformed: report(kind, "malformed datagrams received", count: count)
            case .receiveFailed: report(kind, "receive failed", count: count)
            case .sendFailed: report(kind, "replies not sent", count: count)
            case .registryFull: report(kind, "registrations refused: registry full", count: count)
            case .journalFailed: report(kind, "registrations not saved: cannot write the journal; answered UNAVAILABLE", count: count)
            case .rateLimited: report(kind, "datagrams dropped: over the per-address rate limit", count: count)
            case .snapshotFailed: report(kind, "snapshot failed, keeping the previous one; will retry", count: count)
            }
        }
        updateStatus()
    }

    /// Pings systemd only if the loop is really turning: the housekeeping
    /// timer must have been served recently, not just this one.
    private func watchdog() {
        let sinceHousekeeping = SystemClock.monotonicNow() - lastHousekeeping
        guard sinceHousekeeping < .seconds(5) else {
            logger.error("watchdog ping withheld: the event loop is falling behind", metadata: [
                "housekeeping.late_ms": "\(sinceHousekeeping.nanoseconds / 1_000_000)"
            ])
            return
        }
        Systemd.notify("WATCHDOG=1")
    }

    private func status() -> String {
        let snapshot = lastSnapshot.map { rfc3339($0).dropFirst(11).dropLast() + " UTC" } ?? "never"
        var text = "serving \(registry.count) users on \(listening), last snapshot \(snapshot)"
        if let statusNote { text += "; \(statusNote)" }
        return text
    }

    private func updateStatus() {
        let text = status()
        guard text != sentStatus else { return }
        sentStatus = text
        Systemd.notify("STATUS=\(text)")
    }

    // MARK: - Signals

    private func handleSignals() throws {
        while let signal = try signals.next() {
            switch signal {
            case Signal.hangup:
                Systemd.notify("RELOADING=1\nMONOTONIC_USEC=\(Systemd.monotonicMicroseconds())")
                let outcome = reload()
                sentStatus = status()
                Systemd.notify("READY=1\nSTATUS=\(sentStatus)")
                reportReload(outcome)
            default:
                logger.info("signal received", metadata: ["signal": "\(Signal.name(signal))"])
                running = false
            }
        }
    }

    /// Tells a waiting `chatd --reload` how the reload ended.
    private func reportReload(_ outcome: (applied: Bool, reason: String?)) {
        reloads += 1
        guard let path = ReloadStatus.path else { return }
        do {
            try ReloadStatus(count: reloads, applied: outcome.applied, reason: outcome.reason).write(to: path)
        } catch {
            logger.error("cannot write the reload status; systemctl reload will time out", metadata: [
                "path": "\(path)", "error": "\(error)",
            ])
        }
    }

    /// Applies what can change while running; refuses the whole new config
    /// if it is invalid or changes what needs a restart, so a half-applied
    /// config never runs.
    private func reload() -> (applied: Bool, reason: String?) {
        let config: Config
        do {
            config = try reloadConfig()
        } catch {
            return refuseReload("invalid config: \(error)", ["error": "\(error)"], level: .error)
        }
        let new = Settings(config)
        // Under socket activation the socket unit decides where chatd listens.
        let listenChanged = origin == .config && new.listen != settings.listen
        guard !listenChanged, new.snapshotPath == settings.snapshotPath, new.logTarget == settings.logTarget,
            new.durability == settings.durability
        else {
            return refuseReload(
                "changing bind, port, snapshot_path, durability or log target needs a restart",
                [
                    "listen": "\(settings.listen)", "listen.new": "\(new.listen)",
                    "snapshot.path": "\(settings.snapshotPath)", "snapshot.path.new": "\(new.snapshotPath)",
                    "log.target": "\(settings.logTarget)", "log.target.new": "\(new.logTarget)",
                ], level: .warning)
        }
        if new.snapshotInterval != settings.snapshotInterval {
            do {
                try snapshotTimer.arm(after: new.snapshotInterval, interval: new.snapshotInterval)
            } catch {
                return refuseReload("cannot re-arm the snapshot timer", ["error": "\(error)"], level: .error)
            }
        }
        registry.maxUsers = new.maxUsers
        limiter.rate = new.ratePerIP
        limiter.burst = Double(new.burstPerIP)
        logger.logLevel = new.logLevel
        debugLogging = new.logLevel <= .debug
        settings = new
        statusNote = "config reloaded"
        logger.info("config reloaded", metadata: [
            "message.id": MessageID.reloaded, "log.level": "\(new.logLevel)",
            "registry.max_users": "\(new.maxUsers)",
            "registry.snapshot_interval_s": "\(new.snapshotInterval.components.seconds)",
        ])
        return (true, nil)
    }

    private func refuseReload(
        _ reason: String, _ metadata: Logger.Metadata, level: Logger.Level
    ) -> (applied: Bool, reason: String?) {
        statusNote = "reload refused: \(reason); running config kept"
        var metadata = metadata
        metadata["message.id"] = MessageID.reloadRefused
        metadata["reason"] = "\(reason)"
        logger.log(level: level, "reload refused, keeping the running config", metadata: metadata)
        return (false, reason)
    }

    // MARK: - Durable registrations

    /// A reply that waits for a journal commit, with what it takes to answer again.
    public struct HeldReply: Sendable {
        var request: [UInt8]
        var source: Endpoint
        var socket: Int
        var reply: [UInt8]
        /// It reports a change (answered UNAVAILABLE if the change is undone).
        var isChange: Bool
    }

    /// With durability "sync", keeps back a reply that reports a change or
    /// reflects one not yet on disk (see CommitQueue); `reply` holds its bytes.
    private func holdUntilDurable(
        _ result: RequestHandler.Result, request: UnsafeRawBufferPointer, from source: Endpoint, socket: Int
    ) -> Bool {
        guard settings.durability == .sync, journal != nil else { return false }
        let change: (name: Username, previous: Username?)? =
            switch result.event {
            case .registered(let name): (name, nil)
            case .renamed(let previous, let name): (name, previous)
            case .reintroduced(let previous, let name) where previous.text != name.text: (name, previous)
            default: nil
            }
        if let change {
            let held = HeldReply(request: Array(request), source: source, socket: socket, reply: reply, isChange: true)
            commits.record(address: source.address, name: change.name, previous: change.previous, reply: held)
            return true
        }
        guard commits.isPending(source.address) else { return false }
        commits.hold(HeldReply(request: Array(request), source: source, socket: socket, reply: reply, isChange: false))
        return true
    }

    /// Hands the queued changes to the journal thread, unless a commit is in flight.
    private func startCommit() {
        guard let journal, let lines = commits.startCommit() else { return }
        if lines.isEmpty {
            // Only replies waiting behind a commit that has completed since.
            deliver(commits.commitSucceeded())
            return
        }
        journal.commit(lines)
    }

    private func handleJournalOutcomes() throws {
        guard let journal else { return }
        for outcome in try journal.takeOutcomes() {
            switch outcome {
            case .committed(let length):
                journalLength = length
                if statusNote?.hasPrefix("registrations unavailable") == true { statusNote = nil }
                deliver(commits.commitSucceeded())
            case .failed(let error, let length):
                journalLength = length
                statusNote = "registrations unavailable: \(error)"
                warn(.journalFailed, "registrations not saved: cannot write the journal; answered UNAVAILABLE", [
                    "journal.path": "\(journal.path)", "error": "\(error)",
                ])
                let held = commits.commitFailed(registry: &registry)
                dirty = true  // a snapshot taken meanwhile may hold what was undone
                for reply in held { answerAgain(reply) }
                updateStatus()
            case .compacted(let length):
                journalLength = length
            case .compactionFailed(let error):
                // The journal only keeps lines the snapshot covers too: harmless, retried next snapshot.
                logger.warning("journal not compacted; it will be at the next snapshot", metadata: [
                    "journal.path": "\(journal.path)", "error": "\(error)",
                ])
            }
        }
    }

    /// Sends replies whose changes are on disk.
    private func deliver(_ replies: [HeldReply]) {
        for held in replies { sendOne(held.reply, on: held.socket, to: held.source) }
    }

    /// After a failed commit: a change is refused with UNAVAILABLE; anything
    /// else is answered afresh from the registry as it now is.
    private func answerAgain(_ held: HeldReply) {
        if held.isChange {
            guard case .request(let request) = RequestParse(held.request) else { return }
            sendOne(Response.error(id: request.id, reason: .unavailable).bytes, on: held.socket, to: held.source)
            return
        }
        let result = RequestHandler.handle(held.request, from: held.source.address, registry: &registry)
        record(result, from: held.source)
        guard let response = result.reply else { return }
        reply.removeAll(keepingCapacity: true)
        response.write(into: &reply)
        let again = held.request
        if again.withUnsafeBytes({ holdUntilDurable(result, request: $0, from: held.source, socket: held.socket) }) { return }
        sendOne(reply, on: held.socket, to: held.source)
    }

    private func sendOne(_ bytes: [UInt8], on socket: Int, to destination: Endpoint) {
        do {
            if case .processed = try sockets[socket].send(bytes, to: destination) {
                statistics.answered += 1
                return
            }
            statistics.sendErrors += 1
            warn(.sendFailed, "replies not sent: send buffer full", ["replies": "1"])
        } catch {
            statistics.sendErrors += 1
            warn(.sendFailed, "replies not sent", ["replies": "1", "error": "\(error)"])
        }
    }

    // MARK: - Snapshots

    /// How a snapshot write ended, as the writer thread reports it.
    struct WriteOutcome: Sendable {
        var path: String
        var savedAt: Int64
        var users: Int
        var bytes: Int
        var duration: Duration
        var error: String?
        /// Journal bytes this snapshot covers, to drop once it is durable.
        var journalLength = 0
    }

    /// Where the writer thread leaves its outcome for the loop.
    final class OutcomeBox: Sendable {
        let value = Mutex<WriteOutcome?>(nil)
    }

    /// Hands a copy of the records to the writer thread. The registry counts
    /// as saved from now; a failure marks it dirty again.
    private func startSnapshot() {
        let records = registry.records
        let path = settings.snapshotPath
        let savedAt = SystemClock.wallSeconds().seconds
        let outcome = writeOutcome
        let covered = journalLength
        writing = true
        dirty = false
        snapshotWriter.run {
            var result = writeSnapshot(records, to: path, savedAt: savedAt)
            result.journalLength = covered
            outcome.value.withLock { $0 = result }
        }
    }

    /// Collects the writer thread's outcome.
    private func finishSnapshot() {
        guard let outcome = writeOutcome.value.withLock({ $0.take() }) else { return }
        writing = false
        guard finish(outcome) else {
            dirty = true
            return
        }
        // The snapshot holds every change in those journal bytes: drop them.
        if let journal, outcome.journalLength > 0 { journal.compact(droppingFirst: outcome.journalLength) }
    }

    /// Logs a write's outcome and keeps STATUS= current; on failure the old
    /// file stays and the next interval tries again.
    @discardableResult
    private func finish(_ outcome: WriteOutcome) -> Bool {
        if let error = outcome.error {
            statusNote = "snapshot failed: \(error)"
            warn(.snapshotFailed, "snapshot failed, keeping the previous one; will retry", [
                "snapshot.path": "\(outcome.path)", "error": "\(error)",
            ])
            updateStatus()
            return false
        }
        lastSnapshot = outcome.savedAt
        if statusNote?.hasPrefix("snapshot failed") == true { statusNote = nil }
        logger.info("snapshot written", metadata: [
            "message.id": MessageID.snapshotWritten, "snapshot.path": "\(outcome.path)",
            "users": "\(outcome.users)", "bytes": "\(outcome.bytes)",
            "snapshot.write_ms": "\(outcome.duration.nanoseconds / 1_000_000)",
        ])
        updateStatus()
        return true
    }
}

/// Encodes and writes `records` atomically; runs on the writer thread (and
/// on the loop for the final snapshot), so it touches no server state.
private func writeSnapshot(_ records: Registry.Records, to path: String, savedAt: Int64) -> Server.WriteOutcome {
    let start = SystemClock.monotonicNow()
    let bytes = Snapshot.encode(records, savedAt: savedAt)
    var outcome = Server.WriteOutcome(
        path: path, savedAt: savedAt, users: records.count, bytes: bytes.count, duration: .zero, error: nil)
    do {
        try FileSystem.writeAtomically(bytes, toPath: path)
    } catch {
        outcome.error = "\(error)"
    }
    outcome.duration = SystemClock.monotonicNow() - start
    return outcome
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

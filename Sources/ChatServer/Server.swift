// chatd's shell: one thread, one epoll set, moving bytes and time between
// the kernel and ChatCore's ChatService, which makes every decision.
//
//   sockets readable  -> datagrams in batches into the service; its answers
//                        out in the same sendmmsg batch
//   signalfd          -> SIGTERM/SIGINT: leave the loop; SIGHUP: reload config
//   control socket    -> chatctl's requests (Server+Control)
//   snapshot writer   -> a background write finished: its outcome to the service
//   journal thread    -> a sync or a compaction finished: its outcome to the service
//   epoll_wait's timeout -> the earliest of the service's nextTimeout(), the
//                        1 s housekeeping tick (STATUS=, overdue log summaries)
//                        and the watchdog ping
//
// After every turn the shell carries out what the service asks for: storage
// work to the two helper threads, held datagrams to their sockets, events to
// the log. Other files: Server+Storage (the helper threads and stopping),
// Server+Logging (events into log lines), Server+Signals (stop, reload),
// Server+Housekeeping (STATUS=, the watchdog), Server+Control (chatctl),
// Server+Metrics (what status and metrics report), Settings (what the config gives).
//
// Only epoll_wait blocks. There is no timer file descriptor: the service's
// deadlines are data (TimerQueue), and the loop sleeps until the earliest.
// The watchdog is pinged from the loop itself, never from a thread of its
// own, so a loop that hangs stops the pings and systemd restarts chatd.
// The loop stops only on a signal or if epoll or the signalfd themselves
// fail, which would mean the process can no longer work.

import ChatConfig
import ChatCore
import ChatSystem
import Logging

public final class Server {
    /// What the shell itself counts; the service counts the rest.
    public struct Statistics: Sendable {
        public var sent = 0
        public var sendErrors = 0
    }

    /// Where the listening sockets came from, which decides whether the
    /// config's bind and port mean anything.
    public enum SocketOrigin: Sendable {
        case config
        case systemd
    }

    var settings: Settings
    var service: ChatService
    var logger: Logger
    let sockets: [UDPSocket]
    let origin: SocketOrigin
    let reloadConfig: () throws -> Config
    let clock: @Sendable () -> Instant
    let epoll: Epoll
    let signals: SignalFD
    let snapshotWriter: BackgroundThread
    /// The outcome of the background write in flight, set by the writer thread.
    let writeOutcome = OutcomeBox()
    /// The journal (durability "sync").
    let journal: JournalWriter?
    var throttle = Throttle<Warning>(window: .seconds(10))
    /// Reused for every batch: received datagrams, datagrams to send, one reply's bytes.
    let incoming = DatagramBatch()
    let outgoing = DatagramBatch()
    var reply: [UInt8] = []

    var running = true
    /// The latest reload's outcome, for STATUS=.
    var reloadNote: String?
    var sentStatus = ""
    var nextHousekeeping: Instant
    let watchdogInterval: Duration?
    var nextWatchdog: Instant
    /// Reloads handled so far, for `chatd --reload`.
    var reloads = 0
    /// The control socket and its clients; nil when [control] socket is "".
    var control: Control?
    var traffic = TrafficWindow()
    let startedAt: Instant
    /// Milliseconds since 1970 at start, for metrics.
    let startedAtWall: Int64
    public internal(set) var statistics = Statistics()

    enum Tag: UInt64 {
        case signals = 1, snapshotWriter, journal, controlListener
        /// Control clients are tagged controlBase + slot (below socketBase).
        static let controlBase: UInt64 = 32
        /// Sockets are tagged socketBase + index.
        static let socketBase: UInt64 = 100
    }

    /// - Parameters:
    ///   - sockets: bound, listening sockets (from the config or from systemd).
    ///   - signals: created before any thread started, so SIGTERM, SIGINT and
    ///     SIGHUP are blocked everywhere and arrive here.
    ///   - history: the chat room's messages and newest seq, as loaded.
    ///   - seqsReserved: with durability "periodic", the seq the history
    ///     file claims up to (see ChatService.seqsReserved).
    ///   - journal: the journal to append to and compact (durability "sync"; nil otherwise).
    ///   - controlListener: the control socket (from the config or systemd), if any.
    ///   - reloadConfig: reads and checks the config again for SIGHUP.
    ///   - clock: the monotonic clock (tests may pass another).
    public init(
        settings: Settings, registry: Registry, history: (messages: [ChatMessage], lastSeq: UInt64) = ([], 0),
        seqsReserved: UInt64? = nil,
        sockets: [UDPSocket], origin: SocketOrigin, signals: SignalFD,
        journal: JournalWriter?, controlListener: UnixListener? = nil, logger: Logger,
        reloadConfig: @escaping () throws -> Config,
        clock: @escaping @Sendable () -> Instant = SystemClock.monotonicNow
    ) throws {
        precondition(!sockets.isEmpty, "a server needs a socket")
        precondition((journal != nil) == (settings.durability == .sync), "a journal exactly with durability sync")
        self.settings = settings
        self.sockets = sockets
        self.origin = origin
        self.signals = signals
        self.logger = logger
        self.logger.logLevel = settings.logLevel
        self.reloadConfig = reloadConfig
        self.clock = clock
        let now = clock()
        startedAt = now
        startedAtWall = SystemClock.wallMilliseconds()
        service = ChatService(
            configuration: settings.service, registry: registry, journalLength: journal?.initialLength ?? 0,
            history: history.messages, lastSeq: history.lastSeq, seqsReserved: seqsReserved, now: now,
            seed: .random(in: .min ... .max), cookieKey: (.random(in: .min ... .max), .random(in: .min ... .max)))
        nextHousekeeping = now + .seconds(1)
        watchdogInterval = Systemd.watchdogInterval().map { $0 / 2 }
        nextWatchdog = now
        epoll = try Epoll()
        snapshotWriter = try BackgroundThread()
        self.journal = journal
        for (index, socket) in sockets.enumerated() {
            try epoll.add(fd: socket.fd, events: .readable, tag: Tag.socketBase + UInt64(index))
        }
        try epoll.add(fd: signals.fd, events: .readable, tag: Tag.signals.rawValue)
        try epoll.add(fd: snapshotWriter.fd, events: .readable, tag: Tag.snapshotWriter.rawValue)
        if let journal {
            try epoll.add(fd: journal.fd, events: .readable, tag: Tag.journal.rawValue)
        }
        if let controlListener {
            try epoll.add(fd: controlListener.fd, events: .readable, tag: Tag.controlListener.rawValue)
            control = Control(listener: controlListener)
        }
    }

    /// Where the server listens, for logs and STATUS=.
    public var listening: String {
        sockets.map { (try? $0.localEndpoint.description) ?? "fd \($0.fd)" }.joined(separator: ", ")
    }

    /// Tells systemd the service is ready, serves until SIGTERM or SIGINT,
    /// then settles: every change answered and on disk, then the final
    /// snapshot. Returns whether that snapshot was written.
    public func run() throws -> Bool {
        if let watchdogInterval {
            logger.info("watchdog enabled", metadata: ["watchdog.interval_ms": "\(2 * watchdogInterval.nanoseconds / 1_000_000)"])
        }
        sentStatus = status()
        Systemd.notify("READY=1\nSTATUS=\(sentStatus)")

        var events: [EpollEvent] = []
        reply.reserveCapacity(maxDatagramSize)
        while running {
            try epoll.wait(timeoutMilliseconds: Self.milliseconds(until: nextWakeup(), from: clock()), into: &events)
            for event in events {
                if event.tag >= Tag.socketBase {
                    let index = Int(event.tag - Tag.socketBase)
                    if index < sockets.count { drain(index) }
                    continue
                }
                if event.tag >= Tag.controlBase {
                    handleControl(slot: Int(event.tag - Tag.controlBase), events: event.events, now: clock())
                    continue
                }
                switch Tag(rawValue: event.tag) {
                case .signals: try handleSignals()
                case .snapshotWriter: try handleSnapshotOutcome()
                case .journal: try handleJournalOutcomes()
                case .controlListener: acceptControlClients(now: clock())
                case nil: continue
                }
            }
            let now = clock()
            service.handleTimeout(now: now)
            periodic(now: now)
            // A listing's next slice, and a request after a listing ends.
            serveControl(now: now)
            // Everything this turn changed shares one write and one fdatasync.
            carryOut(now: now)
        }
        return try stop()
    }

    /// The earliest of the service's deadline and the shell's own.
    private func nextWakeup() -> Instant {
        // A listing's next slice goes out after the datagrams waiting now.
        if controlHasWork { return clock() }
        var next = nextHousekeeping
        if let deadline = service.nextTimeout(), deadline < next { next = deadline }
        if watchdogInterval != nil, nextWatchdog < next { next = nextWatchdog }
        return next
    }

    /// epoll_wait's timeout for sleeping until `deadline`: rounded up, so
    /// the loop never wakes just before a deadline and spins.
    static func milliseconds(until deadline: Instant, from now: Instant) -> Int32 {
        let nanoseconds = deadline.nanoseconds - now.nanoseconds
        guard nanoseconds > 0 else { return 0 }
        return Int32(clamping: (nanoseconds + 999_999) / 1_000_000)
    }

    /// What the service asks for after a turn: storage work to the helper
    /// threads, held datagrams out, events to the log.
    func carryOut(now: Instant) {
        while let work = service.pollStorageWork() { start(work) }
        sendTransmits()
        logEvents(now: now)
        // An answered ticket can let its client's next request start (a
        // remove or snapshot sent after another), queueing storage work the
        // poll above missed.
        if control?.queuedStorage == true {
            control?.queuedStorage = false
            carryOut(now: now)
        }
    }

    // MARK: - Datagrams

    /// Most batches handled per wake-up and socket (8 × 64 datagrams), so a
    /// flood cannot starve signals and timers.
    static let batchesPerWakeup = 8

    /// Receives, answers and sends in batches until the socket is empty or
    /// the per-wake-up limit is reached.
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
            outgoing.removeAll()
            let now = clock()
            service.wallClock = SystemClock.wallMilliseconds()
            for index in 0..<count {
                let answered = service.handle(
                    datagram: incoming.payload(at: index), from: incoming.source(at: index), socket: socketIndex,
                    now: now, reply: &reply)
                if answered { reply.withUnsafeBytes { _ = outgoing.append($0, replyingTo: index, of: incoming) } }
            }
            send(outgoing, on: socket)
            // Pushes this batch started (a message, or ACKs opening windows).
            sendTransmits()
            logEvents(now: now)
            if count < incoming.capacity { return }
        }
    }

    /// Sends the datagrams the service holds for later (replies released by
    /// a sync), batched per socket.
    func sendTransmits() {
        var batchSocket = 0
        outgoing.removeAll()
        while let transmit = service.pollTransmit() {
            if outgoing.count > 0, transmit.socket != batchSocket || outgoing.count == outgoing.capacity {
                send(outgoing, on: sockets[batchSocket])
                outgoing.removeAll()
            }
            batchSocket = transmit.socket
            do {
                _ = try transmit.bytes.withUnsafeBytes {
                    try outgoing.append($0, to: transmit.destination, on: sockets[transmit.socket])
                }
            } catch {
                statistics.sendErrors += 1
                warn(.sendFailed, ["datagrams": "1", "error": "\(error)"])
            }
        }
        if outgoing.count > 0 { send(outgoing, on: sockets[batchSocket]) }
    }

    func send(_ batch: DatagramBatch, on socket: UDPSocket) {
        let result = socket.send(batch)
        statistics.sent += result.sent
        guard result.sent < batch.count else { return }
        statistics.sendErrors += batch.count - result.sent
        if result.wouldBlock > 0 {
            // The send buffer is full: UDP may drop, and clients retry.
            warn(.sendFailed, ["datagrams": "\(result.wouldBlock)", "reason": "send buffer full"])
        }
        if let error = result.firstError {
            warn(.sendFailed, ["datagrams": "\(result.failed)", "error": "\(error)"])
        }
    }
}

// chatd's event loop: one thread, one epoll set, three kinds of event.
//
//   socket readable  -> drain datagrams: RequestHandler, reply, log
//   signalfd         -> SIGTERM/SIGINT: leave the loop; SIGHUP: reload config
//   timerfd          -> every snapshot interval: save the registry if it changed
//
// Everything the protocol decides happens in ChatCore's RequestHandler; this
// file only moves bytes, keeps time and decides what to log. Nothing here
// blocks except epoll_wait and the snapshot write (an atomic file write of
// the whole registry, which is short for the sizes the defaults allow; the
// performance work moves it off the loop).
//
// The loop never dies of a bad datagram or a failed send: those are counted
// and logged. It stops only on a signal or on an error of epoll or the
// signalfd themselves, which would mean the process can no longer work.

import ChatConfig
import ChatCore
import ChatSystem
import Logging

public final class Server {
    /// What the server needs of the config; all of it may change on reload
    /// except where the socket listens and where the snapshot lives.
    public struct Settings: Equatable, Sendable {
        public var listen: Endpoint
        public var snapshotPath: String
        public var snapshotInterval: Duration
        public var maxUsers: Int
        public var logLevel: Logger.Level

        public init(_ config: Config) {
            listen = Endpoint(config.server.bind, port: config.server.port)
            snapshotPath = config.registry.snapshotPath
            snapshotInterval = .seconds(config.registry.snapshotIntervalSeconds)
            maxUsers = config.registry.maxUsers
            logLevel = Logger.Level(config.log.level)
        }
    }

    /// Counters of what the loop has seen, logged at exit.
    public struct Statistics: Sendable {
        public var received = 0
        public var answered = 0
        public var dropped = 0
        public var malformed = 0
        public var sendErrors = 0
    }

    private var settings: Settings
    private var registry: Registry
    private var logger: Logger
    private let socket: UDPSocket
    private let reloadConfig: () throws -> Config
    private let epoll: Epoll
    private let signals: SignalFD
    private let snapshotTimer: TimerFD
    /// The registry changed since the last snapshot was written.
    private var dirty = false
    private var running = true
    public private(set) var statistics = Statistics()

    private enum Tag: UInt64 {
        case socket, signals, snapshotTimer
    }

    /// - Parameters:
    ///   - signals: created by the caller before any thread starts, so that
    ///     SIGTERM, SIGINT and SIGHUP are blocked everywhere and arrive here.
    ///   - reloadConfig: reads and checks the config again for SIGHUP.
    public init(
        settings: Settings, registry: Registry, socket: UDPSocket, signals: SignalFD,
        logger: Logger, reloadConfig: @escaping () throws -> Config
    ) throws {
        self.settings = settings
        self.registry = registry
        self.socket = socket
        self.signals = signals
        self.logger = logger
        self.logger.logLevel = settings.logLevel
        self.reloadConfig = reloadConfig
        epoll = try Epoll()
        snapshotTimer = try TimerFD()
        try epoll.add(fd: socket.fd, events: .readable, tag: Tag.socket.rawValue)
        try epoll.add(fd: signals.fd, events: .readable, tag: Tag.signals.rawValue)
        try epoll.add(fd: snapshotTimer.fd, events: .readable, tag: Tag.snapshotTimer.rawValue)
    }

    /// Serves until SIGTERM or SIGINT, then writes the final snapshot.
    /// Returns whether that final snapshot was written.
    public func run() throws -> Bool {
        try snapshotTimer.arm(after: settings.snapshotInterval, interval: settings.snapshotInterval)
        var events = [EpollEvent](repeating: EpollEvent(tag: 0, events: []), count: 8)
        var buffer = [UInt8](repeating: 0, count: 2048)
        var reply: [UInt8] = []
        reply.reserveCapacity(maxDatagramSize)

        while running {
            let count = try epoll.wait(timeoutMilliseconds: -1, into: &events)
            for event in events.prefix(count) {
                switch Tag(rawValue: event.tag) {
                case .socket: try drainSocket(buffer: &buffer, reply: &reply)
                case .signals: try handleSignals()
                case .snapshotTimer:
                    _ = try snapshotTimer.read()
                    if dirty { saveSnapshot() }
                case nil: continue
                }
            }
        }
        logger.info("stopping", metadata: [
            "users": "\(registry.count)", "datagrams.received": "\(statistics.received)",
            "datagrams.dropped": "\(statistics.dropped)", "datagrams.malformed": "\(statistics.malformed)",
        ])
        return saveSnapshot()
    }

    // MARK: - Datagrams

    /// Most datagrams handled per wake-up, so a flood cannot starve signals and timers.
    private static let batchLimit = 256

    private func drainSocket(buffer: inout [UInt8], reply: inout [UInt8]) throws {
        for _ in 0..<Self.batchLimit {
            let received = try buffer.withUnsafeMutableBytes { try socket.receive(into: $0) }
            guard case .processed(let (length, source)) = received else { return }
            statistics.received += 1
            // `length` is the datagram's real size, which may exceed the buffer:
            // the handler still sees it as oversized.
            let result = buffer.withUnsafeBytes { bytes in
                RequestHandler.handle(
                    UnsafeRawBufferPointer(rebasing: bytes[..<min(length, bytes.count)]),
                    from: source.address, registry: &registry)
            }
            record(result, from: source)
            guard let response = result.reply else { continue }
            reply.removeAll(keepingCapacity: true)
            response.write(into: &reply)
            send(reply, to: source)
        }
    }

    private func send(_ reply: [UInt8], to destination: Endpoint) {
        do {
            if case .processed = try socket.send(reply, to: destination) {
                statistics.answered += 1
                return
            }
            // The send buffer is full: UDP may drop, and the client retries.
            statistics.sendErrors += 1
        } catch {
            statistics.sendErrors += 1
            logger.warning("reply not sent", metadata: ["client": "\(destination)", "error": "\(error)"])
        }
    }

    private func record(_ result: RequestHandler.Result, from source: Endpoint) {
        let event = result.event
        if event.changedRegistry { dirty = true }
        var metadata: Logger.Metadata = ["client.ip": "\(source.address)"]
        if let id = result.reply?.id { metadata["request.id"] = "\(id)" }
        switch event {
        case .dropped:
            statistics.dropped += 1
        case .malformed, .unsupportedVersion:
            statistics.malformed += 1
            logger.debug("malformed request", metadata: metadata.merging(["reason": "\(event)"]) { $1 })
        case .registered(let name):
            metadata["username"] = "\(name)"
            logger.info("user registered", metadata: metadata)
        case .renamed(let previous, let name):
            metadata["username"] = "\(name)"
            metadata["username.previous"] = "\(previous)"
            logger.info("user renamed", metadata: metadata)
        case .reintroduced(let previous, let name) where previous.text != name.text:
            metadata["username"] = "\(name)"
            metadata["username.previous"] = "\(previous)"
            logger.info("user renamed", metadata: metadata)
        case .full(let name):
            metadata["username"] = "\(name)"
            metadata["registry.max_users"] = "\(registry.maxUsers)"
            logger.notice("registration refused: registry full", metadata: metadata)
        case .connected(let name), .reintroduced(_, let name), .taken(let name):
            metadata["username"] = "\(name)"
            logger.debug("request answered", metadata: metadata.merging(["result": "\(event.summary)"]) { $1 })
        case .notFound, .invalidUsername:
            logger.debug("request answered", metadata: metadata.merging(["result": "\(event.summary)"]) { $1 })
        }
    }

    // MARK: - Signals

    private func handleSignals() throws {
        while let signal = try signals.next() {
            switch signal {
            case Signal.hangup: reload()
            default:
                logger.info("signal received", metadata: ["signal": "\(Signal.name(signal))"])
                running = false
            }
        }
    }

    /// Applies what can change while running; refuses the whole new config if
    /// it is invalid or moves the socket, so a half-applied config never runs.
    private func reload() {
        let config: Config
        do {
            config = try reloadConfig()
        } catch {
            logger.error("reload refused: invalid config, keeping the current one", metadata: ["error": "\(error)"])
            return
        }
        let new = Settings(config)
        guard new.listen == settings.listen, new.snapshotPath == settings.snapshotPath else {
            logger.warning(
                "reload refused: changing bind, port or snapshot_path needs a restart, keeping the current config",
                metadata: [
                    "listen": "\(settings.listen)", "listen.new": "\(new.listen)",
                    "snapshot.path": "\(settings.snapshotPath)", "snapshot.path.new": "\(new.snapshotPath)",
                ])
            return
        }
        if new.snapshotInterval != settings.snapshotInterval {
            do {
                try snapshotTimer.arm(after: new.snapshotInterval, interval: new.snapshotInterval)
            } catch {
                logger.error("reload refused: cannot re-arm the snapshot timer", metadata: ["error": "\(error)"])
                return
            }
        }
        registry.maxUsers = new.maxUsers
        logger.logLevel = new.logLevel
        settings = new
        logger.info("config reloaded", metadata: [
            "log.level": "\(new.logLevel)", "registry.max_users": "\(new.maxUsers)",
            "registry.snapshot_interval_s": "\(new.snapshotInterval.components.seconds)",
        ])
    }

    // MARK: - Snapshots

    /// Writes the registry atomically; on failure the old file stays, the
    /// registry stays dirty and the next interval tries again.
    @discardableResult
    private func saveSnapshot() -> Bool {
        let bytes = Snapshot.encode(registry, savedAt: SystemClock.wallSeconds().seconds)
        do {
            try FileSystem.writeAtomically(bytes, toPath: settings.snapshotPath)
            dirty = false
            logger.info("snapshot written", metadata: [
                "snapshot.path": "\(settings.snapshotPath)", "users": "\(registry.count)", "bytes": "\(bytes.count)",
            ])
            return true
        } catch {
            logger.error("snapshot failed, keeping the previous one; will retry", metadata: [
                "snapshot.path": "\(settings.snapshotPath)", "error": "\(error)",
            ])
            return false
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

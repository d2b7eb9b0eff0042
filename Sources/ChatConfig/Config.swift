// chatd's settings as typed values, with the defaults that apply when the
// config file leaves a key out.
//
// Both executables share this one description: chatd reads [server],
// [registry], [limits], [chat], [delivery], [control] and [log], the chat
// client reads [client], and chatctl reads [control] to find chatd. Every key has a default so that an empty or missing file is a
// working configuration, and the values here are only ever built by
// `Config.parse` (which checks them) or by code that constructs them
// directly, as tests do.

import ChatCore

/// The effective settings of chatd and the chat client.
public struct Config: Equatable, Sendable {
    /// Where chatd listens.
    public struct Server: Equatable, Sendable {
        /// The address to bind; `::` listens on IPv6 and IPv4 together.
        public var bind: IPAddress
        public var port: UInt16

        public init(bind: IPAddress = .anyIPv4, port: UInt16 = 7447) {
            self.bind = bind
            self.port = port
        }
    }

    /// Where the chat client sends, and how it retries.
    public struct Client: Equatable, Sendable {
        /// An IP literal or a host name; resolving it is the client's job.
        public var server: String
        public var port: UInt16
        /// How long the first attempt waits for a reply.
        public var timeoutMilliseconds: Int
        /// How many requests are sent in all before giving up.
        public var maxAttempts: Int
        /// The factor each retry's wait grows by; 1.0 keeps it fixed.
        public var backoff: Double
        /// How often `chat talk` sends JOIN: it keeps the member present on
        /// the server and the NAT's mapping for its UDP flow open, so it must
        /// stay below both chat.presence_ttl_s and common NAT timeouts (30 s).
        public var keepaliveSeconds: Int

        public init(
            server: String = "127.0.0.1", port: UInt16 = 7447, timeoutMilliseconds: Int = 500,
            maxAttempts: Int = 5, backoff: Double = 2.0, keepaliveSeconds: Int = 25
        ) {
            self.server = server
            self.port = port
            self.timeoutMilliseconds = timeoutMilliseconds
            self.maxAttempts = maxAttempts
            self.backoff = backoff
            self.keepaliveSeconds = keepaliveSeconds
        }
    }

    /// How chatd keeps and persists its username registry.
    public struct Registry: Equatable, Sendable {
        /// An absolute file path.
        public var snapshotPath: String
        public var snapshotIntervalSeconds: Int
        /// How many addresses the registry holds before refusing new ones.
        public var maxUsers: Int
        /// When a registration counts as saved.
        public var durability: Durability

        public init(
            snapshotPath: String = "/var/lib/chatd/registry.json", snapshotIntervalSeconds: Int = 30,
            maxUsers: Int = 1_000_000, durability: Durability = .sync
        ) {
            self.snapshotPath = snapshotPath
            self.snapshotIntervalSeconds = snapshotIntervalSeconds
            self.maxUsers = maxUsers
            self.durability = durability
        }

        /// The journal beside the snapshot: registry.json -> registry.journal.
        public var journalPath: String { besideSnapshot(".journal") }

        /// The chat history beside the snapshot: registry.json -> registry.history.
        public var historyPath: String { besideSnapshot(".history") }

        // One rule for every file derived from the snapshot's name, so an
        // operator finds them all by that name and none can collide.
        private func besideSnapshot(_ suffix: String) -> String {
            (snapshotPath.hasSuffix(".json") ? String(snapshotPath.dropLast(5)) : snapshotPath) + suffix
        }
    }

    /// Flood protection: a token bucket per source address, applied before
    /// a datagram is even parsed.
    public struct Limits: Equatable, Sendable {
        /// Datagrams per second each address may send on average; 0 turns limiting off.
        public var ratePerIP: Double
        /// How many datagrams an address may send at once.
        public var burstPerIP: Int

        public init(ratePerIP: Double = 20, burstPerIP: Int = 40) {
            self.ratePerIP = ratePerIP
            self.burstPerIP = burstPerIP
        }
    }

    /// The chat room: how much it remembers, how long a silent member stays
    /// in it, and how fast one address may talk. Reloadable.
    public struct Chat: Equatable, Sendable {
        /// Messages kept for HISTORY and across restarts.
        public var history: Int
        /// A member from whose address nothing arrives this long is dropped.
        public var presenceTTLSeconds: Int
        /// SAY messages per second each address may send on average; 0 turns limiting off.
        public var messagesPerSecond: Double
        /// How many SAY messages an address may send at once.
        public var messagesBurst: Int

        public init(
            history: Int = 2048, presenceTTLSeconds: Int = 120, messagesPerSecond: Double = 5, messagesBurst: Int = 20
        ) {
            self.history = history
            self.presenceTTLSeconds = presenceTTLSeconds
            self.messagesPerSecond = messagesPerSecond
            self.messagesBurst = messagesBurst
        }
    }

    /// How the server retries the pushes it sends to members until they
    /// acknowledge them. Reloadable.
    public struct Delivery: Equatable, Sendable {
        /// How long the first send of a push waits for its acknowledgement.
        public var timeoutMilliseconds: Int
        /// The factor each resend's wait grows by; 1.0 keeps it fixed.
        public var backoff: Double
        /// Sends of one push, the first included, before it is given up (and its
        /// member dropped, unless the member acknowledged other pushes meanwhile).
        public var maxAttempts: Int
        /// Pushes in flight to one member at once.
        public var window: Int

        public init(timeoutMilliseconds: Int = 1000, backoff: Double = 2.0, maxAttempts: Int = 5, window: Int = 32) {
            self.timeoutMilliseconds = timeoutMilliseconds
            self.backoff = backoff
            self.maxAttempts = maxAttempts
            self.window = window
        }
    }

    /// chatd's control socket, for chatctl.
    public struct Control: Equatable, Sendable {
        /// The Unix socket's path; empty turns the control socket off.
        public var socket: String

        public init(socket: String = "/run/chatd/control") {
            self.socket = socket
        }
    }

    public struct Log: Equatable, Sendable {
        /// The least severe level that is written.
        public var level: LogLevel
        /// Where log entries go.
        public var target: LogTarget

        public init(level: LogLevel = .info, target: LogTarget = .auto) {
            self.level = level
            self.target = target
        }
    }

    public var server: Server
    public var client: Client
    public var registry: Registry
    public var limits: Limits
    public var chat: Chat
    public var delivery: Delivery
    public var control: Control
    public var log: Log

    public init(
        server: Server = Server(), client: Client = Client(), registry: Registry = Registry(), limits: Limits = Limits(),
        chat: Chat = Chat(), delivery: Delivery = Delivery(), control: Control = Control(), log: Log = Log()
    ) {
        self.server = server
        self.client = client
        self.registry = registry
        self.limits = limits
        self.chat = chat
        self.delivery = delivery
        self.control = control
        self.log = log
    }

    /// The settings of an empty config file.
    public static let defaults = Config()
}

/// When a registration is safe from a crash.
public enum Durability: String, CaseIterable, Sendable {
    /// On disk (journal, fdatasync) before the client hears SUCCESS.
    case sync
    /// In the next snapshot: a crash loses what changed since the last one.
    case periodic
}

/// Where chatd writes its log.
public enum LogTarget: String, CaseIterable, Sendable {
    /// The journal when stderr is connected to it (JOURNAL_STREAM matches),
    /// stderr otherwise.
    case auto
    /// Native journal entries, with metadata as fields.
    case journal
    /// One line per event on stderr.
    case stderr
}

/// Log severities, least severe first, named as in the config file.
public enum LogLevel: String, CaseIterable, Sendable, Comparable {
    case debug, info, notice, warning, error

    // Declaration order is severity order; a raw-valued enum gets no
    // synthesized Comparable, so the order is spelled out here.
    private var rank: Int {
        switch self {
        case .debug: 0
        case .info: 1
        case .notice: 2
        case .warning: 3
        case .error: 4
        }
    }

    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool {
        lhs.rank < rhs.rank
    }
}

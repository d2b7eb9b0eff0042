// What chatd's server takes from the config file, and which of it may
// change on SIGHUP (Server+Signals checks that): [chat] and [delivery] may,
// and reach the service through `service`, like [limits].

import ChatConfig
import ChatCore
import Logging

extension Server {
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
        /// The file the room's messages are kept in across restarts (HistoryFile).
        public var historyPath: String
        public var chat: Config.Chat
        public var delivery: Config.Delivery

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
            historyPath = config.registry.historyPath
            chat = config.chat
            delivery = config.delivery
        }

        /// The part of the settings the service decides with.
        var service: ChatService.Configuration {
            ChatService.Configuration(
                maxUsers: maxUsers, ratePerIP: ratePerIP, burstPerIP: burstPerIP, journaling: durability == .sync,
                snapshotInterval: snapshotInterval, reportsEveryRequest: logLevel <= .debug,
                room: RoomConfiguration(
                    history: chat.history, presenceTTL: .seconds(chat.presenceTTLSeconds),
                    messagesPerSecond: chat.messagesPerSecond, messagesBurst: chat.messagesBurst,
                    deliveryTimeout: .milliseconds(delivery.timeoutMilliseconds), backoff: delivery.backoff,
                    maxAttempts: delivery.maxAttempts, window: delivery.window))
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

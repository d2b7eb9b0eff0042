// What chatd's server takes from the config file, and which of it may
// change on SIGHUP (Server+Signals checks that).

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
        public var historyPath: String
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
            historyPath = config.registry.historyPath
            ratePerIP = config.limits.ratePerIP
            burstPerIP = config.limits.burstPerIP
        }

        /// The part of the settings the service decides with.
        var service: ChatService.Configuration {
            ChatService.Configuration(
                maxUsers: maxUsers, ratePerIP: ratePerIP, burstPerIP: burstPerIP, journaling: durability == .sync,
                snapshotInterval: snapshotInterval, reportsEveryRequest: logLevel <= .debug)
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

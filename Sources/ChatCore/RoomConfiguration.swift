/// The chat room's limits and the server's retry rules for pushes: the
/// config file's [chat] and [delivery] sections, applied at once on reload.
public struct RoomConfiguration: Equatable, Sendable {
    /// Messages kept for HISTORY and across restarts.
    public var history: Int
    /// A member from whose endpoint nothing arrives this long is dropped.
    public var presenceTTL: Duration
    /// Per-address token bucket for SAY: messages per second (0: no limit) and most saved up.
    public var messagesPerSecond: Double
    public var messagesBurst: Int
    /// A push unacknowledged this long is sent again; each wait is `backoff` times the last.
    public var deliveryTimeout: Duration
    public var backoff: Double
    /// Sends of one push, the first included, before it is given up (and its
    /// member dropped, unless the member acknowledged other pushes meanwhile).
    public var maxAttempts: Int
    /// Pushes in flight to one member at once.
    public var window: Int

    public init(
        history: Int = 2048, presenceTTL: Duration = .seconds(120), messagesPerSecond: Double = 5,
        messagesBurst: Int = 20, deliveryTimeout: Duration = .milliseconds(1000), backoff: Double = 2,
        maxAttempts: Int = 5, window: Int = 32
    ) {
        self.history = history
        self.presenceTTL = presenceTTL
        self.messagesPerSecond = messagesPerSecond
        self.messagesBurst = messagesBurst
        self.deliveryTimeout = deliveryTimeout
        self.backoff = backoff
        self.maxAttempts = maxAttempts
        self.window = window
    }
}

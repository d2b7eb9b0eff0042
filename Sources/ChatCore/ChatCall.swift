// One chat request from the command line (`chat say`, `chat who`) as a
// state machine that does no I/O.
//
// Theory of operation
// -------------------
//   say TEXT:  SAY cookie token TEXT ──SUCCESS seq──> done(said seq)
//   who:       WHO cookie ──SUCCESS count names──> WHO cookie last-name ... ──> done(members)
//
// The request goes through ChatAttempts like every chat request of the
// talk session: COOKIE sends it again with the cookie as a new attempt,
// timeouts retry with a fresh id, and the token of a SAY stays the same
// through every attempt, so the server posts it once. RATE_LIMITED and
// UNAVAILABLE are temporary, so they use up an attempt and the request is
// tried again after its wait; any other error ends it. WHO pages with
// `after` = the last name received until it has `count` names or a page
// brings none. Driven like TalkSession: start, handle, handleTimeout,
// pollTransmit, nextTimeout, result.

/// What the command asks.
public enum ChatCallGoal: Equatable, Sendable {
    /// Post one message (text checked by `ChatText.check`).
    case say([UInt8])
    /// The member list.
    case who
}

/// How the request ended.
public enum ChatCallResult: Equatable, Sendable {
    case said(seq: UInt64)
    case members(count: Int, names: [Username])
    /// The server holds no username for this address.
    case notRegistered
    /// An error other than CLIENT_NOT_FOUND (after every attempt, for the temporary ones).
    case rejected(ErrorReason, detail: String?)
    /// No answer after this many attempts.
    case unreachable(attempts: Int)
}

public struct ChatCall<Random: RandomNumberGenerator> {
    public let goal: ChatCallGoal
    public let server: Endpoint
    private var random: Random
    private var attempts: ChatAttempts<[Username]>
    private var transmits: [[UInt8]] = []
    public private(set) var result: ChatCallResult?
    private var started = false

    public init(goal: ChatCallGoal, server: Endpoint, settings: HandshakeSettings, random: Random) {
        self.goal = goal
        self.server = server
        self.random = random
        attempts = ChatAttempts(settings: settings, random: &self.random)
    }

    public func nextTimeout() -> Instant? { result == nil ? attempts.deadline : nil }

    public mutating func pollTransmit() -> [UInt8]? {
        transmits.isEmpty ? nil : transmits.removeFirst()
    }

    public mutating func start(now: Instant) {
        guard !started else { return }
        started = true
        switch goal {
        case .say(let text):
            send(.say(id: 0, cookie: 0, token: random.next(), text: text), names: [], now: now)
        case .who:
            send(.who(id: 0, cookie: 0, after: nil), names: [], now: now)
        }
    }

    public mutating func handle(datagram: [UInt8], from source: Endpoint, now: Instant) {
        guard started, result == nil, source == server, let inbound = ChatInbound(datagram),
            let entry = attempts.entry(inbound.id)
        else { return }
        let id = inbound.id
        switch inbound {
        case .message:
            break  // not a member: no push is ours
        case .cookie(_, let cookie):
            if let (retry, _) = attempts.cookieAnswered(id, cookie: cookie, now: now, random: &random) {
                perform(retry)
            }
        case .error(_, let reason, let detail):
            if reason == .rateLimited || reason == .unavailable {
                if let retry = attempts.retry(id, now: now, random: &random) {
                    if case .gaveUp = retry { result = .rejected(reason, detail: detail) } else { perform(retry) }
                }
            } else {
                attempts.complete(id)
                result = reason == .clientNotFound ? .notRegistered : .rejected(reason, detail: detail)
            }
        case .success(_, let fields):
            switch goal {
            case .say:
                guard fields.count == 1, let seq = UInt64(fields[0]) else { return }
                attempts.complete(id)
                result = .said(seq: seq)
            case .who:
                guard let page = WhoPage(fields) else { return }
                attempts.complete(id)
                let names = entry.tag + page.names
                if let after = page.nextAfter(gathered: names.count) {
                    send(.who(id: 0, cookie: 0, after: after), names: names, now: now)
                } else {
                    result = .members(count: page.count, names: names)
                }
            }
        }
    }

    public mutating func handleTimeout(now: Instant) {
        guard result == nil else { return }
        for retry in attempts.expire(now: now, random: &random) { perform(retry) }
    }

    private mutating func perform(_ retry: ChatAttempts<[Username]>.Retry) {
        switch retry {
        case .sent(let bytes): transmits.append(bytes)
        case .gaveUp(let entry): result = .unreachable(attempts: entry.attempt)
        }
    }

    private mutating func send(_ request: ChatRequest, names: [Username], now: Instant) {
        transmits.append(attempts.start(request, tag: names, now: now, random: &random))
    }
}

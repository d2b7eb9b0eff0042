// The client's side of CHAT/1: the handshake of the design note as a state
// machine that does no I/O.
//
// Theory of operation
// -------------------
// A handshake runs one to three requests, each made of attempts:
//
//   join NAME:  CONNECT ──SUCCESS x──────────────────────────────> done(x)
//                  └─CLIENT_NOT_FOUND─> INTRODUCE NAME ──SUCCESS NAME─> CONNECT ──> done(its answer)
//                                          │  └─SUCCESS other─> INTRODUCE NAME again (next attempt)
//                                          └─INVALID_USERNAME─> done(taken / invalid)
//   connect:    CONNECT ──SUCCESS x──> done(x);  CLIENT_NOT_FOUND ──> done(not registered)
//   introduce:  INTRODUCE NAME, as in join, done(NAME) on SUCCESS NAME
//
// Attempts. Every attempt carries a fresh id (the first is random, then each
// is one more, so no two attempts of a run share one; all have 10 digits). Attempt n waits
// `timeout × backoff^(n-1)` plus up to `jitter` of that at random, capped at
// `maxWait`; when it runs out the next attempt starts, and after `maxAttempts`
// attempts of one request the handshake ends as unreachable. The count starts
// again for each request.
//
// Acceptance. A datagram is accepted only if it comes from the server's
// endpoint, parses as a CHAT/1 response, and carries the id of the attempt in
// flight. Everything else (late replies to earlier attempts, strays, garbage)
// is ignored without changing any state, which is what makes retransmission
// safe.
//
// Driving it. The owner calls `start(now:)` once, then `received(_:from:now:)`
// for every datagram and `timerFired(now:)` when the last armed instant is
// reached, and performs the returned actions in order. Time is an argument,
// randomness a generator the owner supplies, so tests run on virtual time.

/// How patient a client is.
public struct HandshakeSettings: Equatable, Sendable {
    public var timeout: Duration
    public var maxAttempts: Int
    public var backoff: Double
    /// Extra random wait, as a fraction of the attempt's wait (0 for none).
    public var jitter: Double
    /// No single attempt waits longer than this (unless `timeout` itself is longer).
    public var maxWait: Duration

    public init(
        timeout: Duration = .milliseconds(500), maxAttempts: Int = 5, backoff: Double = 2.0,
        jitter: Double = 0.1, maxWait: Duration = .seconds(60)
    ) {
        precondition(maxAttempts >= 1 && backoff >= 1 && jitter >= 0)
        self.timeout = timeout
        self.maxAttempts = maxAttempts
        self.backoff = backoff
        self.jitter = jitter
        self.maxWait = maxWait
    }

    /// The wait of attempt `attempt` (1-based) before jitter.
    public func wait(forAttempt attempt: Int) -> Duration {
        let factor = pow(backoff, attempt - 1)
        let nanoseconds = Double(timeout.nanoseconds) * factor
        let cap = Double(max(timeout, maxWait).nanoseconds)
        return .nanoseconds(Int64(min(nanoseconds, cap)))
    }
}

/// What the client set out to do.
public enum HandshakeGoal: Equatable, Sendable {
    case connect
    case introduce(Username)
    case join(Username)
}

/// How a handshake ended.
public enum HandshakeResult: Equatable, Sendable {
    /// The server holds this username for the client.
    case success(Username)
    /// CONNECT found no registration for this address.
    case notRegistered
    /// Another client holds the name.
    case usernameTaken(Username)
    /// The server refused the name as breaking the username rule.
    case usernameInvalid(Username)
    /// The registry is full.
    case serverFull
    /// The server could not store the registration for now (UNAVAILABLE).
    case unavailable
    /// The server kept confirming another name than the one introduced.
    case unexpectedUsername(expected: Username, got: Username)
    /// Any other error (MALFORMED, UNSUPPORTED_VERSION, or a reason this
    /// client does not know).
    case rejected(ErrorReason, detail: String?)
    /// No accepted response after `attempts` attempts of one request.
    case unreachable(attempts: Int)
}

public enum HandshakeAction: Equatable, Sendable {
    case send([UInt8])
    /// Call `timerFired(now:)` at this instant (replaces any earlier one).
    case armTimer(Instant)
    case finished(HandshakeResult)
}

public struct Handshake<Random: RandomNumberGenerator> {
    /// The request being attempted.
    private enum Step: Equatable {
        case connect
        case introduce(Username)
    }

    private enum State {
        case idle
        case waiting(step: Step, attempt: Int, id: UInt32, deadline: Instant)
        case done(HandshakeResult)
    }

    public let goal: HandshakeGoal
    public let server: Endpoint
    public let settings: HandshakeSettings
    private var random: Random
    private var state: State = .idle
    private var nextID: UInt32
    /// True once CLIENT_NOT_FOUND sent a join to INTRODUCE: its next CONNECT is the last step.
    private var introduced = false

    public init(goal: HandshakeGoal, server: Endpoint, settings: HandshakeSettings, random: Random) {
        self.goal = goal
        self.server = server
        self.settings = settings
        self.random = random
        self.nextID = self.random.next() | Self.minimumID
    }

    /// Ids keep 10 digits, so that no reply is over 3 times its request's
    /// size and a server's amplification limit never drops one of ours.
    private static var minimumID: UInt32 { 0x4000_0000 }

    /// When the machine next needs `timerFired`, or nil when it is idle or done.
    public var deadline: Instant? {
        if case .waiting(_, _, _, let deadline) = state { return deadline }
        return nil
    }

    /// The result, once finished.
    public var result: HandshakeResult? {
        if case .done(let result) = state { return result }
        return nil
    }

    public mutating func start(now: Instant) -> [HandshakeAction] {
        guard case .idle = state else { return [] }
        switch goal {
        case .connect, .join: return attempt(.connect, number: 1, now: now)
        case .introduce(let name): return attempt(.introduce(name), number: 1, now: now)
        }
    }

    public mutating func timerFired(now: Instant) -> [HandshakeAction] {
        guard case .waiting(let step, let number, _, let deadline) = state else { return [] }
        guard now >= deadline else { return [.armTimer(deadline)] }
        guard number < settings.maxAttempts else { return finish(.unreachable(attempts: number)) }
        return attempt(step, number: number + 1, now: now)
    }

    public mutating func received(_ datagram: [UInt8], from source: Endpoint, now: Instant) -> [HandshakeAction] {
        guard case .waiting(let step, let number, let id, _) = state, source == server,
            let response = Response(datagram), response.id == id
        else { return [] }

        switch (step, response) {
        case (.connect, .success(_, let name)):
            return finish(.success(name))
        case (.connect, .error(_, .clientNotFound, _)):
            if case .join(let name) = goal, !introduced {
                introduced = true
                return attempt(.introduce(name), number: 1, now: now)
            }
            return finish(.notRegistered)
        case (.introduce(let wanted), .success(_, let got)):
            guard got == wanted else {
                // The design note's validation step: the server confirmed some
                // other name, so ask again for the one we want.
                guard number < settings.maxAttempts else {
                    return finish(.unexpectedUsername(expected: wanted, got: got))
                }
                return attempt(step, number: number + 1, now: now)
            }
            if case .join = goal { return attempt(.connect, number: 1, now: now) }
            return finish(.success(got))
        case (.introduce(let name), .error(_, .invalidUsername, let detail)):
            return finish(detail == ErrorDetail.syntax ? .usernameInvalid(name) : .usernameTaken(name))
        case (_, .error(_, .serverFull, _)):
            return finish(.serverFull)
        case (_, .error(_, .unavailable, _)):
            return finish(.unavailable)
        case (_, .error(_, let reason, let detail)):
            return finish(.rejected(reason, detail: detail))
        }
    }

    private mutating func attempt(_ step: Step, number: Int, now: Instant) -> [HandshakeAction] {
        let id = nextID
        nextID = max(nextID &+ 1, Self.minimumID)
        let wait = settings.wait(forAttempt: number)
        let extra = Double(wait.nanoseconds) * settings.jitter * Double.random(in: 0..<1, using: &random)
        let deadline = now + wait + .nanoseconds(Int64(extra))
        state = .waiting(step: step, attempt: number, id: id, deadline: deadline)
        let request: Request =
            switch step {
            case .connect: .connect(id: id)
            case .introduce(let name): .introduce(id: id, username: name)
            }
        return [.send(request.bytes), .armTimer(deadline)]
    }

    private mutating func finish(_ result: HandshakeResult) -> [HandshakeAction] {
        state = .done(result)
        return [.finished(result)]
    }
}

/// `base^exponent` for a small non-negative exponent, without Foundation.
private func pow(_ base: Double, _ exponent: Int) -> Double {
    var result = 1.0
    for _ in 0..<max(exponent, 0) {
        result *= base
        if result > 1e12 { break }  // far past any cap; stop before infinity
    }
    return result
}

// The client's side of the chat room: `chat talk` as a state machine that
// does no I/O.
//
// Theory of operation
// -------------------
// A session starts after the handshake, on the socket the handshake used:
//
//   start ─> JOIN ──SUCCESS name last_seq──> joined: WHO (for the "joined" line),
//              │                               SAY per input line, one at a time,
//              │                               JOIN every `keepalive`, HISTORY for gaps
//              └─no answer─> done(unreachable)   CLIENT_NOT_FOUND ─> done(not registered)
//   end of input or /quit ─> every line answered ─> (own messages printed) ─> LEAVE ─> done(left)
//   quit(now:) (a signal)  ─> LEAVE at once ─> done(interrupted)
//
// Requests. Every request is retried under the [client] rules by
// ChatAttempts, which also answers COOKIE: a request answered COOKIE goes
// out again with that cookie as a new attempt, and later requests carry it.
// A COOKIE for a request that already carried a cookie means the server
// restarted (or rotated its secret twice): membership may be gone, so a
// JOIN goes out at once rather than at the next keepalive.
//
// Lines. SAY goes one line at a time, in the order typed, so that a lost
// datagram cannot reorder what one person says. Each line gets a fresh
// random token, kept in every retransmission, so the server posts it once
// however many copies reach it. RATE_LIMITED waits and tries the same token
// again (the server answered: nothing failed); UNAVAILABLE uses up an
// attempt; other refusals drop the line with a notice. A line that runs out
// of attempts is undelivered, and so is every line queued behind it (the
// server is not answering; each would wait as long in turn).
//
// Acknowledgements. Every push is acknowledged, every copy, duplicates
// included (the server retransmits until an ACK covers it), in the format
// the last JOIN's answer granted. Every JOIN asks for BATCH (unless
// `settings.batch` is off); an answer ending `BATCH <window>` makes ACKs
// cumulative and delayed: `ACK <sid> <printed>` says the push `sid` (the
// newest received) and every message up to `printed` arrived, and goes
// out once `batchAckEvery(window)` pushes wait for it or `batchAckDelay`
// after the oldest of them, whichever comes first, but at once for a
// duplicate push (our ACK was lost or late: the server is retransmitting)
// or one out of order (its first seq past `printed + 1`). A two-field
// answer gets the basic `ACK <sid>` per push, which both formats accept,
// and so does any push before the first answer (the format is not known
// yet) or after LEAVE went (nothing is left to wait for). A server from
// before BATCH answers a BATCH JOIN `ERROR MALFORMED`: the session JOINs
// again at once without it, and asks BATCH again only when the server may
// have changed (a renewed cookie: it restarted). A forged
// push is ACKed like any other; its sid names nothing in flight, so such
// an ACK is ignored by the server, and what it would have covered is
// retransmitted and acknowledged again as a duplicate.
//
// Messages. A push carries one message or, in BATCH, several in ascending
// seq order; each entry is taken as if it came alone. Messages are printed
// in seq order, each once: `printed` is the newest seq printed, an entry at
// or below it or already held is a duplicate, one beyond the next is held
// (at most `maxHeldPushes`: past that the farthest is dropped, still ACKed).
// `newest` is the newest seq heard of (from pushes, SAY answers, JOIN and
// HISTORY); while `printed < newest` the session is behind, and after
// `hold` without catching up it asks HISTORY for what follows `printed`
// (the server pushes it again; duplicates fall away). HISTORY's first_seq
// beyond `printed + 1` means history no longer holds the messages between:
// one notice, and printing goes on from there. A hole that several HISTORY
// rounds (`historyRounds`, each waiting twice as long) cannot fill is given
// up the same way, so a seq that never existed cannot stall the transcript.
// The keepalive JOIN's last_seq beyond `printed` asks HISTORY at once: that
// is how a member dropped by the server (or one whose server restarted)
// catches up, since the JOIN made it a member again.
//
// Forged pushes. A push is a datagram from the server's address and the
// session's port, which any host can send, so its seq is a claim: it can
// make the session ask HISTORY, nothing more. An answer to one of the
// session's own requests carries that request's random id, which a forger
// does not see, so it is proof: `confirmedNewest` is the newest seq proved
// (JOIN's last_seq, SAY's seq, HISTORY's last_seq). A hole is given up, and
// reported missed, only as far as `confirmedNewest`; a hole beyond it asks
// HISTORY again instead. A HISTORY answer ends every claim past what is
// proved: held pushes beyond it are dropped and `newest` falls back to it
// (a real push that overtook the answer is fetched again once the session
// is behind it). Seqs past `maxSeq` are refused, pushes by the codec and
// answers by `ChatInbound.seq`, so every `seq + 1` here stays in range.
//
// Server lost and back. A request that runs out of attempts makes the
// server "lost" (one notice); while lost a JOIN is always in flight, retried
// from attempt 1 each time it runs out, so the session notices as soon as
// the server answers again ("back", one notice) and catches up.
//
// Driving it. The owner calls `start(now:)` once, then `handle(datagram:
// from:now:)` for each datagram, `input(_:now:)` for each line,
// `endOfInput(now:)`, `quit(now:)`, and `handleTimeout(now:)` once
// `nextTimeout()` has passed; after each it sends every `pollTransmit()` to
// the server and shows every `pollOutput()`, and stops once `result` is set.
// Time is an argument and randomness a generator the owner supplies, so
// tests run on virtual time.

/// Most pushes a TalkSession holds for the seqs before them. A real hole
/// that wide is a rare burst; the bound is for forged pushes, which are
/// free to send, so that they cannot grow the session's memory.
public let maxHeldPushes = 1024

/// In the BATCH format, how long the first unacknowledged push waits for
/// others to share its ACK (PROTOCOL.md, "When a BATCH client
/// acknowledges"): far below the server's retransmission timeout, so a
/// delayed ACK never causes a retransmission.
public let batchAckDelay = Duration.milliseconds(10)

/// In the BATCH format, how many unacknowledged pushes make the ACK go at
/// once: half the server's window, so pushes keep flowing while the ACK is
/// on its way, and at most 4, so a wide window does not hold ACKs back.
public func batchAckEvery(window: Int) -> Int {
    min(4, max(1, window / 2))
}

/// How `chat talk` behaves, beyond the retry rules of each request.
public struct TalkSettings: Equatable, Sendable {
    /// Timeout, backoff and attempts of every request ([client]).
    public var requests: HandshakeSettings
    /// How often JOIN is sent again to stay a member (client.keepalive_s).
    public var keepalive: Duration
    /// How long a message out of order waits for the ones before it before
    /// the session asks HISTORY for them.
    public var hold: Duration
    /// HISTORY rounds for one hole before it is reported missed and skipped.
    public var historyRounds: Int
    /// Lines waiting to be sent beyond which the session takes no more input
    /// for now (`acceptsInput`), so a large paste is read as it is sent.
    public var queueLimit: Int
    /// Whether JOIN asks for the BATCH format (`chat talk --no-batch` turns
    /// it off, to speak the basic format to any server).
    public var batch: Bool

    public init(
        requests: HandshakeSettings = HandshakeSettings(), keepalive: Duration = .seconds(25),
        hold: Duration = .seconds(1), historyRounds: Int = 3, queueLimit: Int = 64, batch: Bool = true
    ) {
        precondition(keepalive > .zero && hold > .zero && historyRounds >= 1 && queueLimit >= 1)
        self.requests = requests
        self.keepalive = keepalive
        self.hold = hold
        self.historyRounds = historyRounds
        self.queueLimit = queueLimit
        self.batch = batch
    }
}

/// Why a line was not delivered.
public enum UndeliveredReason: Equatable, Sendable {
    /// No answer after every attempt.
    case noAnswer
    /// The server refused it.
    case refused(ErrorReason, detail: String?)
}

/// Something to tell the person at the keyboard (stderr, never stdout).
public enum TalkNotice: Equatable, Sendable {
    /// The session joined the room as this name; `online` members (nil when WHO went unanswered).
    case joined(Username, online: Int?)
    /// `/who`: every member's name, and how many the server counts.
    case members(count: Int, names: [Username])
    /// Requests stopped being answered; the session keeps trying.
    case serverLost
    /// A request was answered again after `serverLost`.
    case serverBack
    /// Messages `first...last` are not in the server's history any more (or
    /// never were): they will not be shown.
    case missed(first: UInt64, last: UInt64)
    /// A line over 400 bytes, not sent.
    case lineTooLong(bytes: Int)
    /// A line that is not UTF-8 or holds a control character, not sent.
    case lineNotText
    /// A line that was sent but not delivered.
    case notDelivered(text: String, reason: UndeliveredReason)
    /// The server limits how fast this address may post: lines wait.
    case rateLimited
    /// `/help`.
    case help
    /// A line starting with "/" that is not a command.
    case unknownCommand(String)
    /// A request other than SAY was refused (`verb` names it).
    case refused(verb: String, reason: ErrorReason, detail: String?)
}

/// What the session has to show: messages for stdout, notices for stderr.
public enum TalkOutput: Equatable, Sendable {
    case message(ChatMessage)
    case notice(TalkNotice)
}

/// How a session ended.
public enum TalkResult: Equatable, Sendable {
    /// Input ended (or /quit) and LEAVE was sent; `undelivered` lines never got a seq.
    case left(undelivered: Int)
    /// `quit(now:)`: LEAVE was sent at once.
    case interrupted
    /// The first JOIN got no answer after this many attempts.
    case unreachable(attempts: Int)
    /// JOIN: the server holds no username for this address.
    case notRegistered
    /// JOIN was refused for another reason.
    case rejected(ErrorReason, detail: String?)
}

public struct TalkSession<Random: RandomNumberGenerator> {
    private enum Tag: Sendable {
        case join(first: Bool)
        case say
        /// A WHO page; `names` gathered by the pages before it.
        case who(forJoinLine: Bool, names: [Username])
        case history
        case leave
    }

    private enum Phase: Equatable {
        case idle, joining, joined, leaving
        case done(TalkResult)
    }

    public let server: Endpoint
    public let settings: TalkSettings
    private var random: Random
    private var attempts: ChatAttempts<Tag>
    private var phase = Phase.idle
    /// The name the server holds for us, once JOIN is answered.
    public private(set) var username: Username?

    /// The newest seq printed or skipped as missed.
    public private(set) var printed: UInt64 = 0
    /// The newest seq heard of, pushes included. A push proves nothing (any
    /// host can send one from the server's address), so being behind this
    /// only makes the session ask HISTORY, whose answer says what is real.
    private var newest: UInt64 = 0
    /// The newest seq an answer to one of our requests proved exists (JOIN's
    /// last_seq, SAY's seq, HISTORY's last_seq): such an answer carries the
    /// request's random id, which a forger does not see. Nothing past it is
    /// ever skipped or reported missed.
    private var confirmedNewest: UInt64 = 0
    /// Pushes beyond `printed + 1`, waiting for the ones before them; at
    /// most `maxHeldPushes`.
    private var held: [UInt64: ChatMessage] = [:]
    /// When being behind turns into a HISTORY.
    private var holdDeadline: Instant?
    /// HISTORY rounds asked at `printed == roundsAt`.
    private var rounds = 0
    private var roundsAt: UInt64 = 0

    /// Lines not yet sent, oldest first.
    private var lines: [[UInt8]] = []
    /// The line being sent, with its token.
    private var saying: (text: [UInt8], token: UInt64)?
    /// After RATE_LIMITED: when the line is tried again.
    private var throttledUntil: Instant?
    private var throttles = 0
    private var undelivered = 0
    /// The newest seq the server gave one of our lines.
    private var ownNewest: UInt64 = 0
    private var inputClosed = false
    /// After input ended: LEAVE at the latest then, even if our own
    /// messages have not come back yet.
    private var settleDeadline: Instant?
    private var keepaliveAt: Instant?
    /// What LEAVE ends with.
    private var leaveResult = TalkResult.left(undelivered: 0)
    private var lost = false
    /// The "joined" line waits for its WHO; a /who typed meanwhile waits for that.
    private var joinLinePending = false
    private var whoAfterJoinLine = false

    /// The BATCH window the last JOIN answer granted; nil in the basic format.
    public private(set) var batchWindow: Int?
    /// The server answered a BATCH JOIN MALFORMED (it predates BATCH): JOINs
    /// go without it until a renewed cookie says the server restarted.
    private var batchRefused = false
    /// BATCH: pushes received since the last ACK, the newest one's id, and
    /// when their ACK is due.
    private var unacknowledged = 0
    private var newestPushID: UInt32 = 0
    private var ackDeadline: Instant?

    private var transmits = OutputQueue<[UInt8]>()
    private var outputs = OutputQueue<TalkOutput>()

    public init(server: Endpoint, settings: TalkSettings, random: Random) {
        self.server = server
        self.settings = settings
        self.random = random
        attempts = ChatAttempts(settings: settings.requests, random: &self.random)
    }

    // MARK: - State for the owner

    /// How the session ended, once it has.
    public var result: TalkResult? {
        if case .done(let result) = phase { return result }
        return nil
    }

    /// Whether the owner should read more input now.
    public var acceptsInput: Bool {
        !inputClosed && result == nil && lines.count < settings.queueLimit
    }

    /// Whether requests are going unanswered.
    public var isServerLost: Bool { lost }

    /// How many pushes wait for the seqs before them (at most `maxHeldPushes`).
    public var heldCount: Int { held.count }

    /// When `handleTimeout` is due; nil when nothing waits (or the session is done).
    public func nextTimeout() -> Instant? {
        guard result == nil else { return nil }
        return [attempts.deadline, keepaliveAt, holdDeadline, throttledUntil, settleDeadline, ackDeadline]
            .compactMap { $0 }.min()
    }

    /// The next datagram to send to the server.
    public mutating func pollTransmit() -> [UInt8]? { transmits.poll() }

    /// The next message or notice to show.
    public mutating func pollOutput() -> TalkOutput? { outputs.poll() }

    // MARK: - Inputs

    public mutating func start(now: Instant) {
        guard phase == .idle else { return }
        phase = .joining
        send(.join(id: 0, cookie: 0, batch: asksBatch), tag: .join(first: true), now: now)
    }

    /// One line of input, without its line ending: a command or a message.
    public mutating func input(_ line: [UInt8], now: Instant) {
        guard !inputClosed, result == nil, !line.isEmpty else { return }
        var text = line[...]
        if line.first == UInt8(ascii: "/") {
            // "//x" sends "/x", as in IRC clients.
            guard line.count > 1, line[1] == UInt8(ascii: "/") else {
                command(line.dropFirst(), now: now)
                return
            }
            text = line.dropFirst()
        }
        switch ChatText.check(text) {
        case nil:
            lines.append(Array(text))
            sendNextLine(now: now)
        case ChatText.tooLong?:
            notice(.lineTooLong(bytes: text.count))
        case ChatText.empty?:
            break
        default:
            notice(.lineNotText)
        }
    }

    /// No more input: deliver what was typed, then LEAVE.
    public mutating func endOfInput(now: Instant) {
        guard !inputClosed, result == nil else { return }
        inputClosed = true
        closeIfDrained(now: now)
    }

    /// Leave at once (SIGINT, SIGTERM): LEAVE, then done, whatever is in flight.
    public mutating func quit(now: Instant) {
        guard result == nil, phase != .leaving else { return }
        inputClosed = true
        if phase == .idle {
            finish(.interrupted)
            return
        }
        leaveResult = .interrupted
        leave(now: now)
    }

    public mutating func handle(datagram: [UInt8], from source: Endpoint, now: Instant) {
        guard source == server, phase != .idle, result == nil, let inbound = ChatInbound(datagram)
        else { return }
        switch inbound {
        case .message(let id, let messages):
            receive(push: id, messages, now: now)
        case .cookie(let id, let cookie):
            guard attempts.entry(id) != nil,
                let (retry, renewed) = attempts.cookieAnswered(id, cookie: cookie, now: now, random: &random)
            else { return }
            heard(now: now)
            perform(retry, now: now)
            if renewed {
                // A restarted server may be a newer one: ask for BATCH again.
                batchRefused = false
                if phase == .joined { rejoin(now: now) }
            }
        case .success(let id, let fields):
            guard let entry = attempts.entry(id) else { return }
            succeeded(entry, fields: fields, now: now)
        case .error(let id, let reason, let detail):
            guard let entry = attempts.entry(id) else { return }
            heard(now: now)
            failed(entry, reason: reason, detail: detail, now: now)
        }
    }

    public mutating func handleTimeout(now: Instant) {
        guard result == nil else { return }
        for retry in attempts.expire(now: now, random: &random) {
            perform(retry, now: now)
            if result != nil { return }
        }
        if let due = keepaliveAt, due <= now {
            keepaliveAt = nil
            rejoin(now: now)
        }
        if let due = holdDeadline, due <= now {
            holdDeadline = nil
            holdExpired(now: now)
        }
        if let due = throttledUntil, due <= now, let line = saying {
            throttledUntil = nil
            send(.say(id: 0, cookie: 0, token: line.token, text: line.text), tag: .say, now: now)
        }
        if let due = settleDeadline, due <= now {
            settleDeadline = nil
            leave(now: now)
        }
        if let due = ackDeadline, due <= now {
            acknowledge()
        }
    }

    // MARK: - Answers

    private mutating func succeeded(_ entry: ChatAttempts<Tag>.Entry, fields: [String], now: Instant) {
        let id = entry.request.id
        switch entry.tag {
        case .join(let first):
            // A SUCCESS off the shape is no answer: the attempt runs on.
            guard fields.count == 2 || fields.count == 4, let name = Username(fields[0]),
                let last = ChatInbound.seq(fields[1])
            else { return }
            var window: Int?
            if fields.count == 4 {
                guard fields[2] == "BATCH", let granted = Self.window(fields[3]) else { return }
                // Granted unasked (no server does): the basic ACK is valid in both formats.
                if case .join(_, _, batch: true) = entry.request { window = granted }
            }
            complete(id, now: now)
            useFormat(window: window)
            joined(as: name, lastSeq: last, first: first, now: now)
        case .say:
            guard fields.count == 1, let seq = ChatInbound.seq(fields[0]) else { return }
            complete(id, now: now)
            saying = nil
            throttles = 0
            ownNewest = max(ownNewest, seq)
            learn(seq, now: now)
            sendNextLine(now: now)
            closeIfDrained(now: now)
        case .who(let forJoinLine, let gathered):
            guard let page = WhoPage(fields) else { return }
            complete(id, now: now)
            let names = gathered + page.names
            if forJoinLine {
                joinLineDone(online: page.count, now: now)
            } else if let after = page.nextAfter(gathered: names.count) {
                send(.who(id: 0, cookie: 0, after: after), tag: .who(forJoinLine: false, names: names), now: now)
            } else {
                notice(.members(count: page.count, names: names))
            }
        case .history:
            guard fields.count == 2, let first = ChatInbound.seq(fields[0]), let last = ChatInbound.seq(fields[1])
            else { return }
            complete(id, now: now)
            historyAnswered(first: first, last: last, now: now)
        case .leave:
            complete(id, now: now)
            finish(leaveResult)
        }
    }

    private mutating func failed(
        _ entry: ChatAttempts<Tag>.Entry, reason: ErrorReason, detail: String?, now: Instant
    ) {
        let id = entry.request.id
        switch entry.tag {
        case .join(let first):
            attempts.complete(id)
            if reason == .malformed, case .join(_, _, batch: true) = entry.request {
                // A chatd from before BATCH, whose grammar has no such
                // field: the same JOIN in the basic format, at once.
                batchRefused = true
                send(.join(id: 0, cookie: 0, batch: false), tag: entry.tag, now: now)
            } else if reason == .clientNotFound {
                finish(.notRegistered)
            } else if first {
                finish(.rejected(reason, detail: detail))
            } else {
                notice(.refused(verb: "JOIN", reason: reason, detail: detail))
                keepaliveAt = now + settings.keepalive
            }
        case .say:
            if reason == .rateLimited {
                attempts.complete(id)
                throttles += 1
                if throttles == 1 { notice(.rateLimited) }
                // The server answers at once, so waiting as an attempt would
                // is polite without being a failure.
                throttledUntil = now + settings.requests.wait(forAttempt: min(throttles, 8))
            } else if reason == .unavailable {
                // Temporary on the server's side: another attempt, same token.
                if let retry = attempts.retry(id, now: now, random: &random) {
                    if case .gaveUp = retry {
                        lineFailed(.refused(reason, detail: detail), now: now)
                    } else {
                        perform(retry, now: now)
                    }
                }
            } else {
                attempts.complete(id)
                lineFailed(.refused(reason, detail: detail), now: now)
            }
        case .who(let forJoinLine, _):
            attempts.complete(id)
            if forJoinLine {
                joinLineDone(online: nil, now: now)
            } else {
                notice(.refused(verb: "WHO", reason: reason, detail: detail))
            }
        case .history:
            attempts.complete(id)
            if reason == .notJoined {
                // Dropped by the server (silent, unreachable, behind): JOIN
                // again; its answer brings the gap back here.
                rejoin(now: now)
            } else {
                notice(.refused(verb: "HISTORY", reason: reason, detail: detail))
            }
        case .leave:
            attempts.complete(id)
            finish(leaveResult)
        }
    }

    /// Carries out a retry: its datagram, or what giving up a request means.
    private mutating func perform(_ retry: ChatAttempts<Tag>.Retry, now: Instant) {
        switch retry {
        case .sent(let bytes):
            transmits.append(bytes)
        case .gaveUp(let entry):
            switch entry.tag {
            case .join(first: true):
                finish(.unreachable(attempts: entry.attempt))
            case .join(first: false):
                serverLost(now: now)
            case .say:
                serverLost(now: now)
                lineFailed(.noAnswer, now: now)
            case .who(let forJoinLine, _):
                if forJoinLine { joinLineDone(online: nil, now: now) }
                serverLost(now: now)
            case .history:
                serverLost(now: now)
            case .leave:
                finish(leaveResult)
            }
        }
    }

    /// Any answer to an attempt in flight: the server is there.
    private mutating func heard(now: Instant) {
        guard lost else { return }
        lost = false
        notice(.serverBack)
        noteBehind(now: now)
    }

    /// Takes the answer and clears `lost` (every accepted answer proves the server is back).
    private mutating func complete(_ id: UInt32, now: Instant) {
        attempts.complete(id)
        heard(now: now)
    }

    private mutating func serverLost(now: Instant) {
        if !lost {
            lost = true
            notice(.serverLost)
        }
        holdDeadline = nil
        // Keep one JOIN in flight while lost: it notices the server's return
        // and makes us a member again if the server forgot us.
        if phase == .joined { rejoin(now: now) }
        closeIfDrained(now: now)
    }

    // MARK: - Membership

    private mutating func joined(as name: Username, lastSeq: UInt64, first: Bool, now: Instant) {
        username = name
        keepaliveAt = now + settings.keepalive
        confirm(lastSeq)
        if first {
            phase = .joined
            printed = lastSeq
            held = held.filter { $0.key > lastSeq }
            flush(now: now)
            // Pushes held while joining may have left a hole.
            noteBehind(now: now)
            joinLinePending = true
            send(.who(id: 0, cookie: 0, after: nil), tag: .who(forJoinLine: true, names: []), now: now)
            sendNextLine(now: now)
            closeIfDrained(now: now)
        } else if lastSeq > printed {
            // Back after an absence (dropped, restarted server, lost pushes):
            // the JOIN made us a member from last_seq on; fetch what came before.
            fetchHistory(now: now)
        }
    }

    private mutating func joinLineDone(online: Int?, now: Instant) {
        guard joinLinePending, let username else { return }
        joinLinePending = false
        notice(.joined(username, online: online))
        if whoAfterJoinLine {
            whoAfterJoinLine = false
            command(Array("who".utf8)[...], now: now)
        }
    }

    /// A JOIN now, unless one is in flight; also the keepalive.
    private mutating func rejoin(now: Instant) {
        guard phase == .joined, !attempts.contains(where: { if case .join = $0 { true } else { false } }) else {
            return
        }
        send(.join(id: 0, cookie: 0, batch: asksBatch), tag: .join(first: false), now: now)
    }

    /// Whether the next JOIN asks for BATCH.
    private var asksBatch: Bool { settings.batch && !batchRefused }

    private mutating func leave(now: Instant) {
        guard phase == .joining || phase == .joined else { return }
        phase = .leaving
        // What the ACK was waiting for arrived: say so before going.
        acknowledge()
        attempts.cancel { _ in true }
        keepaliveAt = nil
        holdDeadline = nil
        throttledUntil = nil
        settleDeadline = nil
        if case .left = leaveResult { leaveResult = .left(undelivered: undelivered) }
        if lost {
            // Nobody is answering: say goodbye once and go.
            transmits.append(ChatRequest.leave(id: 0, cookie: attempts.cookie).bytes)
            finish(leaveResult)
            return
        }
        send(.leave(id: 0, cookie: 0), tag: .leave, now: now)
    }

    /// After input ended: LEAVE once every line is answered and our own
    /// messages have come back (or `hold × 4` has passed without them).
    private mutating func closeIfDrained(now: Instant) {
        guard inputClosed, phase == .joined, lines.isEmpty, saying == nil else { return }
        if printed >= ownNewest || lost {
            leave(now: now)
        } else if settleDeadline == nil {
            settleDeadline = now + settings.hold * 4
        }
    }

    private mutating func finish(_ result: TalkResult) {
        phase = .done(result)
        attempts.cancel { _ in true }
        keepaliveAt = nil
        holdDeadline = nil
        throttledUntil = nil
        settleDeadline = nil
        ackDeadline = nil
    }

    // MARK: - Lines

    private mutating func command(_ word: ArraySlice<UInt8>, now: Instant) {
        let name = String(decoding: word.prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)
        switch name {
        case "who":
            // Before the "joined" line it would race that line's WHO: it follows it.
            guard phase == .joined, !joinLinePending else {
                whoAfterJoinLine = true
                return
            }
            send(.who(id: 0, cookie: 0, after: nil), tag: .who(forJoinLine: false, names: []), now: now)
        case "quit":
            endOfInput(now: now)
        case "help":
            notice(.help)
        default:
            notice(.unknownCommand(name))
        }
    }

    private mutating func sendNextLine(now: Instant) {
        guard phase == .joined, saying == nil, !lines.isEmpty else { return }
        let text = lines.removeFirst()
        let token = random.next()
        saying = (text, token)
        send(.say(id: 0, cookie: 0, token: token, text: text), tag: .say, now: now)
    }

    /// The line being sent is not delivered; neither is any queued behind
    /// it when the server stopped answering.
    private mutating func lineFailed(_ reason: UndeliveredReason, now: Instant) {
        guard let line = saying else { return }
        saying = nil
        throttledUntil = nil
        throttles = 0
        var failed = [line.text]
        if reason == .noAnswer {
            failed += lines
            lines.removeAll()
        }
        for text in failed {
            undelivered += 1
            notice(.notDelivered(text: String(decoding: text, as: UTF8.self), reason: reason))
        }
        sendNextLine(now: now)
        closeIfDrained(now: now)
    }

    // MARK: - Messages

    /// A push: its entries taken one by one, then acknowledged in the
    /// format the server granted.
    private mutating func receive(push id: UInt32, _ messages: [ChatMessage], now: Instant) {
        // Judged before the entries change `printed` and `held`.
        let duplicate = messages.allSatisfy { $0.seq <= printed || held[$0.seq] != nil }
        let outOfOrder = (messages.first?.seq ?? 0) > printed + 1
        guard let window = batchWindow, phase == .joined else {
            // Basic, or the format is not known yet (before the first JOIN's
            // answer), or leaving: one ACK per push, valid in both formats.
            transmits.append(ChatRequest.ack(id: id).bytes)
            for message in messages { receive(message, now: now) }
            return
        }
        // Counted before its entries are taken: if they complete what input
        // ended waiting for, the LEAVE that follows sends this ACK first.
        unacknowledged += 1
        newestPushID = id
        for message in messages { receive(message, now: now) }
        guard unacknowledged > 0 else { return }
        if duplicate || outOfOrder || unacknowledged >= batchAckEvery(window: window) {
            acknowledge()
        } else if ackDeadline == nil {
            ackDeadline = now + batchAckDelay
        }
    }

    /// BATCH: the ACK of every push received since the last one, now:
    /// `ACK <newest sid> <printed>`, printed being the newest seq up to which
    /// every message is printed or given up as missed.
    private mutating func acknowledge() {
        ackDeadline = nil
        guard unacknowledged > 0 else { return }
        unacknowledged = 0
        transmits.append(ChatRequest.ack(id: newestPushID, through: printed).bytes)
    }

    /// Takes the format a JOIN's answer granted (`window` nil: basic). ACKs
    /// still waiting go out first, as they were promised.
    private mutating func useFormat(window: Int?) {
        if window == nil { acknowledge() }
        batchWindow = window
    }

    /// A BATCH window field: decimal digits. chatd's window is at most 1024,
    /// but a wider one only means `batchAckEvery`'s cap, so any that fits is taken.
    private static func window(_ field: String) -> Int? {
        guard (1...18).contains(field.utf8.count), field.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            return nil
        }
        return Int(field)
    }

    private mutating func receive(_ message: ChatMessage, now: Instant) {
        newest = max(newest, message.seq)
        guard message.seq > printed, held[message.seq] == nil else { return }
        hold(message)
        // Before the first JOIN's answer, `printed` is not known yet: hold everything.
        guard phase != .joining else { return }
        flush(now: now)
        noteBehind(now: now)
    }

    /// Keeps a push until the seqs before it are printed. At the bound the
    /// farthest goes (this one, if it is the farthest): the nearest are the
    /// ones printed next, and a real message dropped here is still behind
    /// `newest`, so HISTORY brings it back.
    private mutating func hold(_ message: ChatMessage) {
        if held.count >= maxHeldPushes {
            guard let farthest = held.keys.max(), farthest > message.seq else { return }
            held[farthest] = nil
        }
        held[message.seq] = message
    }

    /// A seq that exists (a SAY's answer): being behind it needs catching up too.
    private mutating func learn(_ seq: UInt64, now: Instant) {
        confirm(seq)
        noteBehind(now: now)
    }

    /// An answer to one of our requests says `seq` exists.
    private mutating func confirm(_ seq: UInt64) {
        confirmedNewest = max(confirmedNewest, seq)
        newest = max(newest, seq)
    }

    /// Prints what follows `printed` without a hole.
    private mutating func flush(now: Instant) {
        let before = printed
        while let message = held.removeValue(forKey: printed + 1) {
            printed += 1
            outputs.append(.message(message))
        }
        if printed != before {
            // Progress: whatever hole is left is a new one, with its own wait.
            holdDeadline = nil
            closeIfDrained(now: now)
        }
    }

    /// Starts the wait before a HISTORY when behind.
    private mutating func noteBehind(now: Instant) {
        guard phase == .joined, printed < newest, holdDeadline == nil, !lost,
            !attempts.contains(where: { if case .history = $0 { true } else { false } })
        else { return }
        countRoundsFromHere()
        holdDeadline = now + settings.hold * (1 << min(rounds, 6))
    }

    private mutating func holdExpired(now: Instant) {
        guard phase == .joined, printed < newest else { return }
        countRoundsFromHere()
        if rounds >= settings.historyRounds {
            // HISTORY after HISTORY has not brought it: it is not coming. But
            // only what an answer proved exists is given up; past that, a
            // push's seq alone could be a forger's.
            let resume = min(held.keys.min() ?? newest + 1, confirmedNewest + 1)
            if resume > printed + 1 {
                skip(to: resume, now: now)
                return
            }
            // The hole is beyond anything proved (a push claims it): one
            // more HISTORY, whose answer proves it or makes it go away.
        }
        fetchHistory(now: now)
    }

    private mutating func fetchHistory(now: Instant) {
        guard phase == .joined,
            !attempts.contains(where: { if case .history = $0 { true } else { false } })
        else { return }
        countRoundsFromHere()
        rounds += 1
        holdDeadline = nil
        send(.history(id: 0, cookie: 0, afterSeq: printed), tag: .history, now: now)
    }

    /// HISTORY rounds count per hole, and a hole is known by where printing
    /// stopped: once `printed` has moved, the hole is a new one, with no rounds yet.
    private mutating func countRoundsFromHere() {
        guard roundsAt != printed else { return }
        roundsAt = printed
        rounds = 0
    }

    private mutating func historyAnswered(first: UInt64, last: UInt64, now: Instant) {
        confirm(last)
        // The room ended at `last` when the server answered: a held push past
        // the newest seq proved is no message, and the seq it claimed is
        // forgotten. A real push that overtook this answer falls away too;
        // being behind it again (the next push, or the keepalive's last_seq)
        // fetches it with HISTORY.
        held = held.filter { $0.key <= confirmedNewest }
        newest = max(confirmedNewest, printed)
        if first > printed + 1 { skip(to: min(first, confirmedNewest + 1), now: now) }
        // The pushes from `first` on are coming; wait for them as for any hole.
        noteBehind(now: now)
    }

    /// Gives up the seqs before `resume` that are not held: one notice per
    /// run of them, and printing goes on past them.
    private mutating func skip(to resume: UInt64, now: Instant) {
        while printed + 1 < resume {
            if let message = held.removeValue(forKey: printed + 1) {
                printed += 1
                outputs.append(.message(message))
                continue
            }
            let next = min(resume, held.keys.min() ?? resume)
            notice(.missed(first: printed + 1, last: next - 1))
            printed = next - 1
        }
        holdDeadline = nil
        flush(now: now)
        closeIfDrained(now: now)
        noteBehind(now: now)
    }

    // MARK: - Helpers

    private mutating func send(_ request: ChatRequest, tag: Tag, now: Instant) {
        transmits.append(attempts.start(request, tag: tag, now: now, random: &random))
    }

    private mutating func notice(_ notice: TalkNotice) {
        outputs.append(.notice(notice))
    }
}

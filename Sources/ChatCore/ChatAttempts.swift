// A chat client's requests in flight: ids, attempts, deadlines and the cookie.
//
// Theory of operation
// -------------------
// Every chat request a client makes (JOIN, SAY, WHO, HISTORY, LEAVE) is
// retried the way the handshake retries CONNECT: each attempt under a fresh
// id, attempt n waiting `timeout × backoff^(n-1)` plus jitter, and the
// request given up after `maxAttempts` attempts without an accepted answer.
// The ledger keeps those attempts for several requests at once, found by
// the id of the attempt in flight only, so a reply to an earlier attempt
// finds nothing and is ignored, as the handshake's rule says.
//
// It also keeps the endpoint's cookie. A request goes out with the cookie
// the ledger holds (0 before the first), and a COOKIE answer is the
// server's "again, with this": the same request is sent with the new cookie
// under a fresh id as attempt 1, because the server did answer and nothing
// failed. A COOKIE naming the very cookie its attempt carried would repeat
// forever, so that one counts as a failed attempt instead.
//
// Entries are few (a SAY, a JOIN, a WHO, a HISTORY, a LEAVE at most), so
// they live in an array, which also keeps the order of expiries
// deterministic for tests.

struct ChatAttempts<Tag: Sendable>: Sendable {
    struct Entry: Sendable {
        var tag: Tag
        /// As last sent: its id is the attempt in flight.
        var request: ChatRequest
        var attempt: Int
        var deadline: Instant
    }

    /// What became of an attempt that ran out of time or was refused.
    enum Retry: Sendable {
        case sent([UInt8])
        case gaveUp(Entry)
    }

    let settings: HandshakeSettings
    /// The cookie requests carry; 0 until the server names one.
    private(set) var cookie: UInt64 = 0
    private var entries: [Entry] = []
    private var nextID: UInt32

    init(settings: HandshakeSettings, random: inout some RandomNumberGenerator) {
        self.settings = settings
        nextID = random.next() | Self.minimumID
    }

    /// Ids keep 10 digits, as the handshake's do, so that no answer is over
    /// 3 times its request and the server's amplification rule never drops one.
    private static var minimumID: UInt32 { 0x4000_0000 }

    var isEmpty: Bool { entries.isEmpty }

    /// The earliest deadline of an attempt in flight.
    var deadline: Instant? { entries.lazy.map(\.deadline).min() }

    func contains(where predicate: (Tag) -> Bool) -> Bool {
        entries.contains { predicate($0.tag) }
    }

    /// The request whose attempt in flight has this id.
    func entry(_ id: UInt32) -> Entry? {
        entries.first { $0.request.id == id }
    }

    /// Starts `request` (its id and cookie are the ledger's to choose) and
    /// returns the datagram of its first attempt.
    mutating func start(
        _ request: ChatRequest, tag: Tag, now: Instant, random: inout some RandomNumberGenerator
    ) -> [UInt8] {
        send(Entry(tag: tag, request: request, attempt: 1, deadline: now), now: now, random: &random)
    }

    /// Ends the request answered by attempt `id`.
    @discardableResult
    mutating func complete(_ id: UInt32) -> Entry? {
        guard let index = entries.firstIndex(where: { $0.request.id == id }) else { return nil }
        return entries.remove(at: index)
    }

    /// Forgets every request `predicate` selects; their answers will be ignored.
    mutating func cancel(where predicate: (Tag) -> Bool) {
        entries.removeAll { predicate($0.tag) }
    }

    /// Attempt `id` was answered COOKIE: send the request again with it.
    /// `renewed` says the attempt carried another cookie, not none: the
    /// server restarted or rotated its secret twice since we learnt ours.
    mutating func cookieAnswered(
        _ id: UInt32, cookie newCookie: UInt64, now: Instant, random: inout some RandomNumberGenerator
    ) -> (retry: Retry, renewed: Bool)? {
        guard var entry = complete(id) else { return nil }
        let carried = entry.request.cookie ?? 0
        guard newCookie != carried, newCookie != 0 else {
            return (next(after: entry, now: now, random: &random), false)
        }
        cookie = newCookie
        entry.attempt = 1
        return (.sent(send(entry, now: now, random: &random)), carried != 0)
    }

    /// Attempt `id` was answered, but with a refusal worth another attempt
    /// (UNAVAILABLE): the next attempt, or the end of the request.
    mutating func retry(_ id: UInt32, now: Instant, random: inout some RandomNumberGenerator) -> Retry? {
        guard let entry = complete(id) else { return nil }
        return next(after: entry, now: now, random: &random)
    }

    /// Attempts whose wait ran out: the next attempt of each, or its end,
    /// in deadline order.
    mutating func expire(now: Instant, random: inout some RandomNumberGenerator) -> [Retry] {
        let due = entries.filter { $0.deadline <= now }.sorted { $0.deadline < $1.deadline }
        guard !due.isEmpty else { return [] }
        entries.removeAll { $0.deadline <= now }
        return due.map { next(after: $0, now: now, random: &random) }
    }

    private mutating func next(after entry: Entry, now: Instant, random: inout some RandomNumberGenerator) -> Retry {
        guard entry.attempt < settings.maxAttempts else { return .gaveUp(entry) }
        var entry = entry
        entry.attempt += 1
        return .sent(send(entry, now: now, random: &random))
    }

    private mutating func send(_ entry: Entry, now: Instant, random: inout some RandomNumberGenerator) -> [UInt8] {
        var entry = entry
        let id = nextID
        nextID = max(nextID &+ 1, Self.minimumID)
        entry.request = entry.request.with(id: id).with(cookie: cookie)
        let wait = settings.wait(forAttempt: entry.attempt)
        let extra = Double(wait.nanoseconds) * settings.jitter * Double.random(in: 0..<1, using: &random)
        entry.deadline = now + wait + .nanoseconds(Int64(extra))
        entries.append(entry)
        return entry.request.bytes
    }
}

// The chat room's state: members, pushes in flight, history, seq numbers
// and SAY tokens. The decisions that change it are ChatService's
// (ChatService+Room.swift); this file holds the data and its invariants.

/// An address as the room keys it: an IPv4 address and its IPv4-mapped
/// IPv6 form are the same client, as in the registry.
struct AddressKey: Hashable, Sendable {
    let high: UInt64
    let low: UInt64
    init(_ address: IPAddress) { (high, low) = address.ipv6Halves }
}

/// Why a member left the room.
public enum LeaveReason: String, Equatable, Sendable {
    /// It sent LEAVE.
    case leave
    /// Nothing arrived from its endpoint for `presence_ttl_s`.
    case timeout
    /// A push went unacknowledged through every retry.
    case unreachable
    /// It fell behind the oldest message history holds.
    case behind
    /// Its address no longer holds a username.
    case unregistered
    /// An administrator removed its address's registration.
    case removed
}

struct Member: Sendable {
    var endpoint: Endpoint
    /// The shell's token for the socket its JOIN came in on.
    var socket: Int
    /// The next seq to push to it.
    var next: UInt64
    /// Ids of its pushes in flight, in seq order.
    var pushes: [UInt32] = []
    /// It asked for the BATCH format: several messages per push, cumulative ACKs.
    var batch = false
    var lastHeard: Instant
    /// When it last acknowledged a push.
    var lastAcknowledged: Instant?
    /// The deadline its `.pushes` timer is set for, if one is.
    var pushesDue: Instant?
}

struct Push: Sendable {
    let member: AddressKey
    /// The seqs of its first and last entries (the same in the basic format).
    let first: UInt64
    let last: UInt64
    /// Sends so far, the first included.
    var attempts: Int
    let firstSent: Instant
    /// When it is sent again, or given up after its last send.
    var due: Instant
}

/// The last `capacity` messages, oldest first, in seq order.
struct History: Sendable {
    /// Each message with its entry as a push carries it, written once
    /// rather than once per member.
    private var ring: [(message: ChatMessage, entry: [UInt8])] = []
    private var head = 0
    var capacity: Int

    init(capacity: Int, messages: [ChatMessage] = []) {
        self.capacity = capacity
        for message in messages { append(message) }
    }

    var count: Int { ring.count }
    var first: ChatMessage? { ring.isEmpty ? nil : ring[head].message }
    var last: ChatMessage? { ring.isEmpty ? nil : ring[(head + ring.count - 1) % ring.count].message }

    /// Adds the newest message, evicting the oldest when full.
    mutating func append(_ message: ChatMessage) {
        let stored = (message, ChatReply.entry(message))
        if ring.count < capacity {
            if head != 0 {
                // Grown after a shrink left the ring rotated: straighten it first.
                ring = Array(ring[head...] + ring[..<head])
                head = 0
            }
            ring.append(stored)
        } else {
            ring[head] = stored
            head = (head + 1) % ring.count
        }
    }

    /// Changes the capacity, dropping the oldest messages that no longer fit.
    mutating func resize(to newCapacity: Int) {
        ring = Array((ring[head...] + ring[..<head]).suffix(newCapacity))
        head = 0
        capacity = newCapacity
    }

    /// The message with the smallest seq at or after `seq`, if any.
    func message(atOrAfter seq: UInt64) -> ChatMessage? {
        index(atOrAfter: seq).map { self[$0] }
    }

    /// The position of that message.
    func index(atOrAfter seq: UInt64) -> Int? {
        // Seqs increase along the ring (with gaps only after a crash under
        // "periodic"), so a binary search finds it.
        var low = 0
        var high = ring.count
        while low < high {
            let middle = (low + high) / 2
            if self[middle].seq < seq { low = middle + 1 } else { high = middle }
        }
        return low < ring.count ? low : nil
    }

    /// Messages in order, oldest first.
    subscript(index: Int) -> ChatMessage { ring[(head + index) % ring.count].message }

    /// The message at `index` as a push's entry: `seq time-ms username text`.
    func entry(at index: Int) -> [UInt8] { ring[(head + index) % ring.count].entry }
}

extension History: RandomAccessCollection {
    var startIndex: Int { 0 }
    var endIndex: Int { ring.count }
}

/// The answers given to SAY tokens, kept at least `retention`, so that a
/// retransmitted SAY gets its first answer instead of posting again.
struct TokenMemory: Sendable {
    struct Key: Hashable, Sendable {
        let address: AddressKey
        let token: UInt64
    }

    static let retention: Duration = .seconds(300)
    /// Most answers remembered: 4,000 messages a second for the whole
    /// retention fit (200 to 300 MB at most: the abuse test measured 170 to
    /// 260 bytes per answer); beyond, SAY is answered RATE_LIMITED rather
    /// than forgetting an answer early.
    static let capacity = 1_200_000
    var isFull: Bool { seqs.count >= Self.capacity }
    private var seqs: [Key: (seq: UInt64, expires: Instant)] = [:]
    private var order: [(key: Key, expires: Instant)] = []
    private var orderHead = 0

    func seq(for key: Key) -> UInt64? { seqs[key]?.seq }

    mutating func remember(_ key: Key, seq: UInt64, now: Instant) {
        expire(now: now)
        let expires = now + Self.retention
        seqs[key] = (seq, expires)
        order.append((key, expires))
    }

    /// Forgets answers whose message a failed sync took back.
    mutating func forget(after lastSeq: UInt64) {
        seqs = seqs.filter { $0.value.seq <= lastSeq }
    }

    private mutating func expire(now: Instant) {
        while orderHead < order.count, order[orderHead].expires <= now {
            let entry = order[orderHead]
            // A key remembered again since has a later expiry of its own.
            if let kept = seqs[entry.key], kept.expires <= now { seqs[entry.key] = nil }
            orderHead += 1
        }
        if orderHead > 1024, orderHead * 2 > order.count {
            order.removeFirst(orderHead)
            orderHead = 0
        }
    }
}

/// A small, fast, repeatable generator (SplitMix64), for tests and
/// simulations. Its output can be run backwards to its state, so nothing
/// secret comes from it: push ids and cookie secrets come from SipHash.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

struct ChatRoom: Sendable {
    var members: [AddressKey: Member] = [:]
    var pushes: [UInt32: Push] = [:]
    var history: History
    /// The newest seq anyone has seen (confirmed: on disk with a journal).
    var lastSeq: UInt64
    /// The next seq to give; above lastSeq + 1 while messages wait for their sync.
    var nextSeq: UInt64
    /// Messages were published at this instant and not yet pushed: every
    /// member is pumped once, when the output is next polled, so that the
    /// messages of one receive batch or one group commit share pushes.
    var publishedAt: Instant?
    var tokens = TokenMemory()
    /// Push ids are SipHash of a counter under this key: a member that sees
    /// many ids learns nothing about the next ones, nor about any other secret.
    private let pushKey: (UInt64, UInt64)
    private var pushCounter: UInt64 = 0

    init(capacity: Int, messages: [ChatMessage], lastSeq: UInt64, pushKey: (UInt64, UInt64)) {
        history = History(capacity: capacity, messages: messages)
        self.lastSeq = max(lastSeq, history.last?.seq ?? 0)
        nextSeq = self.lastSeq + 1
        self.pushKey = pushKey
    }

    /// A push id not in flight.
    mutating func newPushID() -> UInt32 {
        while true {
            pushCounter &+= 1
            let id = UInt32(truncatingIfNeeded: SipHash.hash(key: pushKey, pushCounter, 0, 0))
            if pushes[id] == nil { return id }
        }
    }
}

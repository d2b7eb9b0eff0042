// The chat room's decisions: what ChatService does with JOIN, LEAVE, SAY,
// WHO, HISTORY and ACK, and with the room's deadlines.
//
// Theory of operation
// -------------------
// Order of checks for a chat request: the ACK fast path (an ACK from a
// member's endpoint naming one of its pushes in flight is taken before the
// rate limiter, so a busy room's acknowledgements never count as a flood),
// then the per-address rate limit, the parse, and the cookie: a request
// without its endpoint's cookie is answered COOKIE and changes nothing.
// Only then does the room look at it.
//
// Pushes are written lazily, as quinn-proto writes packets in
// poll_transmit: publishing a message only marks the room, and every member
// is pumped when the shell next polls for output, after the receive batch
// or the group commit. A BATCH member's push then carries every queued
// message that fits in one datagram; nothing waits on purpose to fill one.
// A cumulative ACK (`ACK <sid> <seq>`) from a BATCH member delivers the
// push it names and every earlier push of the member's up to that seq.
//
// Membership belongs to an address, at one endpoint: a JOIN from another
// port of the same address moves it there. Each member has a cursor, the
// next seq to push to it; pushes go out while it has fewer than `window`
// in flight and the cursor is not past the newest message. A push keeps
// its random id through every retransmission, after timeout × backoff^(n-1)
// for its n-th send; after `max_attempts` sends and one more wait it gives
// up, and the member is dropped (unreachable) unless it acknowledged some
// other push in that span (then only that push is given up: the client
// sees the hole and asks HISTORY). A cursor older than the
// oldest message history holds drops the member too (behind): it catches
// up with HISTORY, which moves its cursor and supersedes its pushes in
// flight (the cursor sends again whatever of them it still wants).
// Retransmissions share one timer per member, set for the earliest
// deadline of its pushes: an acknowledged push, the common case, costs no
// timer work. Presence is lazy too: each member has one timer at its
// last-heard time plus the TTL, pushed back when it fires early rather than
// on every datagram.
//
// Seqs: `room.lastSeq` is the newest seq anyone may have seen; with a
// journal a message is neither answered nor pushed until its record is
// synced, so lastSeq only counts messages on disk, and `room.nextSeq` runs
// ahead of it while records wait. A failed sync hands their seqs back
// (nobody saw them). Without a journal a message is pushed at once, so the
// history file claims seqs ahead of use (`seqsReserved`, 10,000 at a time,
// claimed again by a snapshot when half are used) and a SAY past the claim
// is refused UNAVAILABLE: after a crash seqs go on past the claim. A SAY
// token remembers its seq for five minutes, so a retransmitted SAY gets its
// first answer, held like any reply until that answer's message is on disk.

extension ChatService {
    /// Members of the room.
    public var memberCount: Int { room.members.count }
    /// The newest seq given (0 before the first message); without a
    /// journal, after a crash, a seq that was only claimed.
    public var lastSeq: UInt64 { room.lastSeq }
    /// Messages history holds, oldest first.
    public var history: [ChatMessage] { Array(room.history) }
    /// The cookie `endpoint` must quote now (for tests and tools).
    public func cookie(for endpoint: Endpoint) -> UInt64 { cookies.cookie(for: endpoint) }

    // MARK: - Requests

    /// Whether `datagram` is an ACK of a push in flight to `source`, and if
    /// so takes it. Runs before the rate limiter on every datagram while
    /// pushes are in flight, so it costs what the limiter does: a few byte
    /// compares turn away anything that does not end in " ACK", and the rest
    /// is one lookup by push id.
    mutating func acknowledged(_ datagram: UnsafeRawBufferPointer, from source: Endpoint, now: Instant) -> Bool {
        guard let (id, through) = Self.ack(datagram), let push = room.pushes[id],
            room.members[push.member]?.endpoint == source
        else { return false }
        let key = push.member
        room.members[key]!.lastHeard = now
        room.members[key]!.lastAcknowledged = now
        deliver(id, of: key)
        if let through {
            // Pushes go out in seq order, so the covered ones lead the list.
            while let oldest = room.members[key]!.pushes.first, let covered = room.pushes[oldest], covered.last <= through {
                deliver(oldest, of: key)
            }
        }
        pump(key, now: now)
        return true
    }

    private mutating func deliver(_ id: UInt32, of key: AddressKey) {
        room.pushes[id] = nil
        counters.acks += 1
        if let index = room.members[key]!.pushes.firstIndex(of: id) { room.members[key]!.pushes.remove(at: index) }
    }

    /// Any other datagram from a member's endpoint: it is alive.
    mutating func heard(from source: Endpoint, now: Instant) {
        let key = AddressKey(source.address)
        if room.members[key]?.endpoint == source { room.members[key]!.lastHeard = now }
    }

    /// The push id and the cumulative seq, if any, of `CHAT/1 <id> ACK
    /// [<seq>]` (with an optional newline), read without the full parser:
    /// this runs before the rate limiter. Short datagrams are turned away by
    /// the length and a few byte compares.
    static func ack(_ datagram: UnsafeRawBufferPointer) -> (id: UInt32, through: UInt64?)? {
        var end = datagram.count
        if end > 0, datagram[end - 1] == ASCII.newline {
            end -= 1
            if end > 0, datagram[end - 1] == ASCII.carriageReturn { end -= 1 }
        }
        let prefix = 7  // "CHAT/1 "
        // The shortest is "CHAT/1 1 ACK"; the longest "CHAT/1 <10> ACK <20>".
        guard end >= prefix + 5, end <= prefix + 10 + 4 + 21,
            datagram[0] == UInt8(ascii: "C"), datagram[5] == UInt8(ascii: "1"), datagram[6] == ASCII.space,
            datagram[1] == UInt8(ascii: "H"), datagram[2] == UInt8(ascii: "A"), datagram[3] == UInt8(ascii: "T"),
            datagram[4] == UInt8(ascii: "/")
        else { return nil }
        var idEnd = prefix
        while idEnd < end, datagram[idEnd] != ASCII.space { idEnd += 1 }
        guard idEnd + 4 <= end, datagram[idEnd + 1] == UInt8(ascii: "A"), datagram[idEnd + 2] == UInt8(ascii: "C"),
            datagram[idEnd + 3] == UInt8(ascii: "K"), let id = parseID(datagram[prefix..<idEnd])
        else { return nil }
        if idEnd + 4 == end { return (id, nil) }
        guard datagram[idEnd + 4] == ASCII.space, let through = parseDecimal64(datagram[(idEnd + 5)..<end]) else {
            return nil
        }
        return (id, through)
    }

    /// Answers a chat request (the cookie first); `invalid` is the detail of
    /// a SAY whose text broke the rule. Returns whether `reply` is to be sent now.
    mutating func handleChat(
        _ request: ChatRequest, invalid: String? = nil, from source: Endpoint, socket: Int, size: Int, now: Instant,
        reply: inout [UInt8]
    ) -> Bool {
        reply.removeAll(keepingCapacity: true)
        let id = request.id
        // An ACK that matched nothing: late (its push was acknowledged or
        // given up) or stray. Nothing to answer.
        guard let cookie = request.cookie else {
            counters.dropped += 1
            return false
        }
        guard cookies.isValid(cookie, for: source) else {
            counters.cookieChallenges += 1
            ChatReply.cookie(id: id, cookie: cookies.cookie(for: source), into: &reply)
            guard reply.count <= Self.amplificationLimit * size else {
                counters.amplificationDropped += 1
                return false
            }
            return true
        }
        let key = AddressKey(source.address)
        var mustHold = configuration.journaling && commits.isPending(source.address)
        var ifSyncFails = IfSyncFails.refuse(id: id)
        func error(_ reason: ErrorReason, _ detail: String? = nil) {
            Response.error(id: id, reason: reason, detail: detail).write(into: &reply)
        }
        switch request {
        case .join(_, _, let batch):
            guard let name = registry.username(for: source.address) else {
                error(.clientNotFound)
                break
            }
            join(key, name: name, at: source, socket: socket, batch: batch, now: now)
            ChatReply.success(id: id, into: &reply) {
                ChatReply.field(name, to: &$0)
                ChatReply.field(room.lastSeq, to: &$0)
                if batch {
                    ChatReply.field(ChatReply.batch, to: &$0)
                    ChatReply.field(UInt64(configuration.room.window), to: &$0)
                }
            }
        case .leave:
            guard room.members[key]?.endpoint == source else {
                error(.notJoined)
                break
            }
            drop(key, reason: .leave)
            if let name = registry.username(for: source.address) {
                ChatReply.success(id: id, into: &reply) { ChatReply.field(name, to: &$0) }
            } else {
                error(.clientNotFound)
            }
        case .say(_, _, let token, let text):
            guard let name = registry.username(for: source.address) else {
                error(.clientNotFound)
                break
            }
            let tokenKey = TokenMemory.Key(address: key, token: token)
            if invalid == nil, let seq = room.tokens.seq(for: tokenKey) {
                // A retransmission: its first answer, once that is true.
                ChatReply.success(id: id, into: &reply) { ChatReply.field(seq, to: &$0) }
                mustHold = mustHold || seq > room.lastSeq
                ifSyncFails = .sendIfStored(id: id, seq: seq)
                break
            }
            guard messageLimiter.allow(source.address, now: now), !room.tokens.isFull else {
                error(.rateLimited)
                break
            }
            if let invalid {
                error(.invalidMessage, invalid)
                break
            }
            if !configuration.journaling {
                // Claim more seqs on disk well before these run out.
                if room.nextSeq + Self.seqReservation / 2 > seqsReserved {
                    dirty = true
                    startSnapshot()
                }
                guard room.nextSeq <= seqsReserved else {
                    error(.unavailable)
                    break
                }
            }
            let message = ChatMessage(seq: room.nextSeq, timeMilliseconds: wallClock, from: name, text: text)
            room.nextSeq += 1
            room.tokens.remember(tokenKey, seq: message.seq, now: now)
            dirty = true
            ChatReply.success(id: id, into: &reply) { ChatReply.field(message.seq, to: &$0) }
            let accepted = Event.messageAccepted(seq: message.seq, from: name, client: source, bytes: text.count)
            if configuration.journaling {
                let transmit = Transmit(destination: source, socket: socket, bytes: reply)
                commits.record(
                    message: message,
                    reply: Held(
                        transmit: transmit, requestSize: size, ifSyncFails: .refuse(id: id), event: accepted,
                        publish: message))
                return false
            }
            events.append(accepted)
            publish(message, now: now)
        case .who(_, _, let after):
            guard registry.username(for: source.address) != nil else {
                error(.clientNotFound)
                break
            }
            writeWho(id: id, after: after, into: &reply)
        case .history(_, _, let after):
            guard room.members[key]?.endpoint == source else {
                error(.notJoined)
                break
            }
            // Superseded: pushes still in flight would hold the window, or
            // drop the member as behind for messages it has just given up.
            for pushID in room.members[key]!.pushes { room.pushes[pushID] = nil }
            room.members[key]!.pushes.removeAll()
            let wanted = after == .max ? after : after + 1
            // The first held message from `wanted` on: past a gap when older
            // ones are gone (or, after a crash without a journal, were never kept).
            let first = room.history.message(atOrAfter: wanted)?.seq ?? max(wanted, room.lastSeq + 1)
            room.members[key]!.next = min(first, room.lastSeq + 1)
            ChatReply.success(id: id, into: &reply) {
                ChatReply.field(first, to: &$0)
                ChatReply.field(room.lastSeq, to: &$0)
            }
            pump(key, now: now)
        case .ack:
            break
        }
        guard mustHold else { return true }
        // The answer reflects a change not yet on disk: it waits for it, and
        // if the sync fails the change did not happen.
        commits.hold(
            Held(
                transmit: Transmit(destination: source, socket: socket, bytes: reply), requestSize: size,
                ifSyncFails: ifSyncFails))
        return false
    }

    /// `SUCCESS <count> <name> …`: every member's name after `after`,
    /// case-insensitively sorted, as many as fit in one datagram.
    private func writeWho(id: UInt32, after: Username?, into reply: inout [UInt8]) {
        var names = room.members.values.compactMap { registry.username(for: $0.endpoint.address) }
        let count = names.count
        if let after {
            let floor = after.folded
            names.removeAll { $0.folded <= floor }
        }
        names.sort { ($0.folded, $0.text) < ($1.folded, $1.text) }
        ChatReply.success(id: id, into: &reply) { buffer in
            ChatReply.field(UInt64(count), to: &buffer)
            for name in names {
                guard buffer.count + 1 + name.text.utf8.count <= maxDatagramSize else { break }
                ChatReply.field(name, to: &buffer)
            }
        }
    }

    // MARK: - Membership

    private mutating func join(
        _ key: AddressKey, name: Username, at source: Endpoint, socket: Int, batch: Bool, now: Instant
    ) {
        if let member = room.members[key] {
            room.members[key]!.lastHeard = now
            room.members[key]!.batch = batch
            guard member.endpoint != source else { return }  // the keepalive
            // Moved: pushes in flight are retransmitted to the new endpoint.
            room.members[key]!.endpoint = source
            room.members[key]!.socket = socket
        } else {
            room.members[key] = Member(
                endpoint: source, socket: socket, next: room.lastSeq + 1, batch: batch, lastHeard: now)
            timers.schedule(.presence(key), at: now + configuration.room.presenceTTL)
        }
        events.append(.memberJoined(name, client: source))
    }

    /// Removes a member with everything in flight to it, and says why.
    mutating func drop(_ key: AddressKey, reason: LeaveReason) {
        guard let member = room.members.removeValue(forKey: key) else { return }
        for id in member.pushes { room.pushes[id] = nil }
        timers.cancel(.presence(key))
        timers.cancel(.pushes(key))
        if reason != .leave { counters.membersDropped += 1 }
        events.append(
            .memberLeft(registry.username(for: member.endpoint.address), client: member.endpoint, reason: reason))
    }

    /// After a failed sync undid registrations: their members go.
    mutating func dropUnregisteredMembers() {
        for (key, member) in room.members where registry.username(for: member.endpoint.address) == nil {
            drop(key, reason: .unregistered)
        }
    }

    mutating func presenceDue(_ key: AddressKey, now: Instant) {
        guard let member = room.members[key] else { return }
        let deadline = member.lastHeard + configuration.room.presenceTTL
        if deadline <= now {
            drop(key, reason: .timeout)
        } else {
            timers.schedule(.presence(key), at: deadline)
        }
    }

    // MARK: - Messages and pushes

    /// Puts an accepted message (on disk, with a journal) into history; its
    /// pushes are written at the next `pushPublished`.
    mutating func publish(_ message: ChatMessage, now: Instant) {
        room.history.append(message)
        room.lastSeq = message.seq
        counters.messagesAccepted += 1
        if room.publishedAt == nil { room.publishedAt = now }
    }

    /// Pumps every member once after messages were published: called when
    /// the output is polled, so one push can carry all of them.
    mutating func pushPublished() {
        guard let now = room.publishedAt else { return }
        room.publishedAt = nil
        for key in Array(room.members.keys) { pump(key, now: now) }
    }

    /// Applies a reload's room settings to every member at once: a shorter
    /// presence TTL, a wider window, a shorter history.
    mutating func reconfigureMembers(now: Instant) {
        for (key, member) in room.members {
            timers.schedule(.presence(key), at: member.lastHeard + configuration.room.presenceTTL)
            pump(key, now: now)
        }
    }

    /// Sends a member's next pushes while its window has room.
    private mutating func pump(_ key: AddressKey, now: Instant) {
        // The member is changed where it lies (through its dictionary
        // index): a copy taken out and written back would share its pushes
        // array and copy it on every append.
        guard let slot = room.members.index(forKey: key) else { return }
        if let oldest = room.history.first?.seq, room.members.values[slot].next < oldest {
            drop(key, reason: .behind)
            return
        }
        while room.members.values[slot].pushes.count < configuration.room.window,
            room.members.values[slot].next <= room.lastSeq,
            let start = room.history.index(atOrAfter: room.members.values[slot].next)
        {
            let id = room.newPushID()
            let range = entries(from: start, batch: room.members.values[slot].batch, id: id)
            let last = room.history[range.upperBound - 1].seq
            let due = now + retryDelay(afterSend: 1)
            room.pushes[id] = Push(
                member: key, first: room.history[start].seq, last: last, attempts: 1, firstSent: now, due: due)
            room.members.values[slot].pushes.append(id)
            room.members.values[slot].next = last + 1
            send(id, range, to: room.members.values[slot])
            if room.members.values[slot].pushesDue.map({ due < $0 }) ?? true {
                room.members.values[slot].pushesDue = due
                timers.schedule(.pushes(key), at: due)
            }
        }
    }

    /// The history positions of one push starting at `start`: one message
    /// in the basic format; in BATCH, as many as fit in one datagram.
    private func entries(from start: Int, batch: Bool, id: UInt32) -> Range<Int> {
        guard batch else { return start..<(start + 1) }
        var size = ChatReply.pushHeaderSize(id: id) + 1 + room.history.entry(at: start).count
        var end = start + 1
        while end < room.history.count, room.history[end].seq <= room.lastSeq {
            size += 1 + room.history.entry(at: end).count
            guard size <= maxDatagramSize else { break }
            end += 1
        }
        return start..<end
    }

    /// Sends the push `id` of the history positions `range`.
    private mutating func send(_ id: UInt32, _ range: Range<Int>, to member: Member) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(maxDatagramSize)
        let history = room.history
        ChatReply.push(id: id, entries: range.lazy.map { history.entry(at: $0) }, into: &bytes)
        transmits.append(Transmit(destination: member.endpoint, socket: member.socket, bytes: bytes))
        counters.pushes += 1
    }

    /// The earliest deadline of a member's pushes came: every push of its
    /// that is due is sent again or given up, and the timer is set for the
    /// next. One timer per member rather than per push: a push that is
    /// acknowledged, the common case, then costs no timer work at all.
    mutating func pushesDue(_ key: AddressKey, now: Instant) {
        guard let ids = room.members[key]?.pushes else { return }
        room.members[key]!.pushesDue = nil
        for id in ids where room.pushes[id].map({ $0.due <= now }) ?? false {
            pushTimedOut(id, now: now)
            guard room.members[key] != nil else { return }  // dropped
        }
        // Pushes sent meanwhile (a give-up opened the window) set the timer
        // already; only an earlier deadline moves it.
        let next = room.members[key]!.pushes.compactMap { room.pushes[$0]?.due }.min()
        if let next, room.members[key]!.pushesDue.map({ next < $0 }) ?? true {
            room.members[key]!.pushesDue = next
            timers.schedule(.pushes(key), at: next)
        }
    }

    private mutating func pushTimedOut(_ id: UInt32, now: Instant) {
        guard var push = room.pushes[id], let member = room.members[push.member] else { return }
        guard push.attempts < configuration.room.maxAttempts else {
            if let acknowledged = member.lastAcknowledged, acknowledged >= push.firstSent {
                // It acknowledged other pushes meanwhile: reachable, and this
                // one message is given up (it sees the hole and asks HISTORY).
                room.pushes[id] = nil
                if let index = member.pushes.firstIndex(of: id) { room.members[push.member]!.pushes.remove(at: index) }
                pump(push.member, now: now)
            } else {
                drop(push.member, reason: .unreachable)
            }
            return
        }
        guard let start = room.history.index(atOrAfter: push.first), room.history[start].seq == push.first else {
            drop(push.member, reason: .behind)
            return
        }
        var end = start + 1
        while end < room.history.count, room.history[end].seq <= push.last { end += 1 }
        push.attempts += 1
        push.due = now + retryDelay(afterSend: push.attempts)
        room.pushes[id] = push
        send(id, start..<end, to: member)
        counters.retransmissions += 1
    }

    /// timeout × backoff^(n-1) after the n-th send, at most a day.
    private func retryDelay(afterSend n: Int) -> Duration {
        var nanoseconds = Double(configuration.room.deliveryTimeout.nanoseconds)
        for _ in 1..<max(n, 1) { nanoseconds *= configuration.room.backoff }
        return .nanoseconds(Int64(min(nanoseconds, 86_400e9)))
    }
}

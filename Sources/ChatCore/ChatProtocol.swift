// CHAT/1's chat room verbs: requests, replies and pushes, parsed and written.
//
// Theory of operation
// -------------------
//     request  = "CHAT/1" SP id SP "JOIN" SP cookie [SP "BATCH"]
//              / "CHAT/1" SP id SP "LEAVE" SP cookie
//              / "CHAT/1" SP id SP "SAY" SP cookie SP token SP text
//              / "CHAT/1" SP id SP "WHO" SP cookie [SP username]
//              / "CHAT/1" SP id SP "HISTORY" SP cookie SP seq
//              / "CHAT/1" SP id SP "ACK" [SP seq]       ; answers the push `id`
//     reply    = "CHAT/1" SP id SP "SUCCESS" *(SP field)  ; per verb, below
//              / "CHAT/1" SP id SP "COOKIE" SP cookie
//              / "CHAT/1" SP id SP "ERROR" SP reason [SP detail]
//     push     = "CHAT/1" SP id SP "MESSAGE" SP entry *(LF entry)
//     entry    = seq SP time_ms SP username SP text
//     cookie   = 16(0-9 / a-f) / "0"          ; "0": none yet
//     token    = 1*20DIGIT                    ; fits in 64 bits
//     seq      = 1*20DIGIT ; time_ms = 1*20DIGIT   ; a client takes seqs up to maxSeq only
//     text     = 1*400 bytes of UTF-8, no U+0000-U+001F, U+007F-U+009F
//
// A SUCCESS's fields depend on the request it answers (JOIN: username and
// last seq; LEAVE: username; SAY: seq; WHO: count and names; HISTORY: first
// and last seq), so the client, which knows what it asked, reads them
// (`ChatInbound.success`'s fields). Text is everything after the space that
// follows the token, spaces included; its faults are told apart (EMPTY,
// TOO_LONG, ENCODING) rather than called MALFORMED, because a person typed
// it and should hear what to change. The cookie is parsed here but checked
// by the service, before anything else about the request.
//
// The BATCH format (asked for at JOIN) changes two things on the wire: a
// push may carry several entries, one per line, in ascending seq order; and
// an ACK may carry a seq, saying every message up to it arrived. A push of
// one entry and an ACK without a seq are the basic format's, so one parser
// reads both formats and a basic client never sees the difference.

/// Most bytes of chat text in one message.
public let maxTextBytes = 400

/// The largest seq a client takes from the server: 2^63 - 1. The server
/// gives seqs one at a time from 1 and never comes near it, so a larger one
/// is a forged or broken datagram; and with every seq at or below it, a
/// client can write `seq + 1` without that addition ever trapping.
public let maxSeq = UInt64(Int64.max)

/// A request to the chat room. `cookie` is 0 when the client has none.
public enum ChatRequest: Equatable, Sendable {
    /// `batch`: the member asks for the BATCH format.
    case join(id: UInt32, cookie: UInt64, batch: Bool = false)
    case leave(id: UInt32, cookie: UInt64)
    case say(id: UInt32, cookie: UInt64, token: UInt64, text: [UInt8])
    case who(id: UInt32, cookie: UInt64, after: Username?)
    case history(id: UInt32, cookie: UInt64, afterSeq: UInt64)
    /// A member's answer to the push `id`; `through`, in the BATCH format,
    /// says it has every message up to that seq.
    case ack(id: UInt32, through: UInt64? = nil)

    public var id: UInt32 {
        switch self {
        case .join(let id, _, _), .leave(let id, _), .say(let id, _, _, _), .who(let id, _, _), .history(let id, _, _),
            .ack(let id, _):
            id
        }
    }

    /// The cookie the request carries; nil for ACK, which needs none (it
    /// names a push only the member's endpoint received).
    public var cookie: UInt64? {
        switch self {
        case .join(_, let cookie, _), .leave(_, let cookie), .say(_, let cookie, _, _), .who(_, let cookie, _),
            .history(_, let cookie, _):
            cookie
        case .ack: nil
        }
    }

    /// The same request carrying another cookie (what a client does after COOKIE).
    public func with(cookie: UInt64) -> ChatRequest {
        switch self {
        case .join(let id, _, let batch): .join(id: id, cookie: cookie, batch: batch)
        case .leave(let id, _): .leave(id: id, cookie: cookie)
        case .say(let id, _, let token, let text): .say(id: id, cookie: cookie, token: token, text: text)
        case .who(let id, _, let after): .who(id: id, cookie: cookie, after: after)
        case .history(let id, _, let after): .history(id: id, cookie: cookie, afterSeq: after)
        case .ack: self
        }
    }

    /// The same request under another id (each attempt has its own).
    public func with(id: UInt32) -> ChatRequest {
        switch self {
        case .join(_, let cookie, let batch): .join(id: id, cookie: cookie, batch: batch)
        case .leave(_, let cookie): .leave(id: id, cookie: cookie)
        case .say(_, let cookie, let token, let text): .say(id: id, cookie: cookie, token: token, text: text)
        case .who(_, let cookie, let after): .who(id: id, cookie: cookie, after: after)
        case .history(_, let cookie, let after): .history(id: id, cookie: cookie, afterSeq: after)
        case .ack(_, let through): .ack(id: id, through: through)
        }
    }
}

/// One message of the room, as history keeps it and pushes carry it.
public struct ChatMessage: Equatable, Hashable, Sendable {
    public var seq: UInt64
    /// Milliseconds since 1970, UTC, from the server's clock when it was accepted.
    public var timeMilliseconds: Int64
    public var from: Username
    /// UTF-8 satisfying `ChatText.check`, byte for byte as sent.
    public var text: [UInt8]

    public init(seq: UInt64, timeMilliseconds: Int64, from: Username, text: [UInt8]) {
        self.seq = seq
        self.timeMilliseconds = timeMilliseconds
        self.from = from
        self.text = text
    }

    /// The text as a string (it is valid UTF-8).
    public var textString: String { String(decoding: text, as: UTF8.self) }
}

/// The rule for chat text.
public enum ChatText {
    /// Details of ERROR INVALID_MESSAGE.
    public static let empty = "EMPTY"
    public static let tooLong = "TOO_LONG"
    public static let encoding = "ENCODING"

    /// nil when `text` is a valid message text, else the detail to answer with.
    public static func check(_ text: some Collection<UInt8>) -> String? {
        if text.isEmpty { return empty }
        if text.count > maxTextBytes { return tooLong }
        var iterator = text.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar):
                if scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value) { return encoding }
            case .emptyInput:
                return nil
            case .error:
                return encoding
            }
        }
    }
}

/// The server's cookie field: 16 lowercase hex digits, or "0" for none.
public enum CookieText {
    public static func parse(_ field: some Collection<UInt8>) -> UInt64? {
        if field.count == 1, field.first == ASCII.zero { return 0 }
        guard field.count == 16 else { return nil }
        var value: UInt64 = 0
        for byte in field {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            default: return nil
            }
            value = value << 4 | UInt64(digit)
        }
        return value
    }

    public static func append(_ cookie: UInt64, to buffer: inout [UInt8]) {
        if cookie == 0 {
            buffer.append(ASCII.zero)
            return
        }
        for shift in stride(from: 60, through: 0, by: -4) {
            let digit = UInt8((cookie >> UInt64(shift)) & 0xf)
            buffer.append(digit < 10 ? ASCII.zero + digit : UInt8(ascii: "a") + digit - 10)
        }
    }
}

// MARK: - Parsing

private enum Verb {
    static let join = Array("JOIN".utf8)
    static let leave = Array("LEAVE".utf8)
    static let say = Array("SAY".utf8)
    static let who = Array("WHO".utf8)
    static let history = Array("HISTORY".utf8)
    static let ack = Array("ACK".utf8)
    static let cookie = Array("COOKIE".utf8)
    static let message = Array("MESSAGE".utf8)
    static let batch = Array("BATCH".utf8)
}

extension RequestParse {
    /// A chat verb and its fields, or nil for anything off the grammar
    /// (the caller answers MALFORMED).
    static func chat(id: UInt32, verb: UnsafeRawBufferPointer.SubSequence, fields: inout Fields) -> RequestParse? {
        if verb.elementsEqual(Verb.ack) {
            if fields.atEnd { return .chat(.ack(id: id)) }
            guard let through = fields.next().flatMap(parseDecimal64), fields.atEnd else { return nil }
            return .chat(.ack(id: id, through: through))
        }
        guard let cookie = fields.next().flatMap(CookieText.parse) else { return nil }
        if verb.elementsEqual(Verb.join) {
            if fields.atEnd { return .chat(.join(id: id, cookie: cookie)) }
            guard fields.next()?.elementsEqual(Verb.batch) == true, fields.atEnd else { return nil }
            return .chat(.join(id: id, cookie: cookie, batch: true))
        } else if verb.elementsEqual(Verb.leave) {
            return fields.atEnd ? .chat(.leave(id: id, cookie: cookie)) : nil
        } else if verb.elementsEqual(Verb.say) {
            guard let token = fields.next().flatMap(parseDecimal64) else { return nil }
            let text = fields.rest() ?? UnsafeRawBufferPointer(start: nil, count: 0)[...]
            if let detail = ChatText.check(text) { return .invalidMessage(id: id, cookie: cookie, detail: detail) }
            return .chat(.say(id: id, cookie: cookie, token: token, text: Array(text)))
        } else if verb.elementsEqual(Verb.who) {
            if fields.atEnd { return .chat(.who(id: id, cookie: cookie, after: nil)) }
            guard let after = fields.next().flatMap({ Username(bytes: $0) }), fields.atEnd else { return nil }
            return .chat(.who(id: id, cookie: cookie, after: after))
        } else if verb.elementsEqual(Verb.history) {
            guard let after = fields.next().flatMap(parseDecimal64), fields.atEnd else { return nil }
            return .chat(.history(id: id, cookie: cookie, afterSeq: after))
        }
        return nil
    }
}

/// 1 to 20 decimal digits with a value that fits in 64 bits.
func parseDecimal64(_ field: some Collection<UInt8>) -> UInt64? {
    guard (1...20).contains(field.count) else { return nil }
    var value: UInt64 = 0
    for byte in field {
        let digit = byte &- ASCII.zero
        guard digit < 10 else { return nil }
        let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
        let (sum, overflow2) = times10.addingReportingOverflow(UInt64(digit))
        guard !overflow1, !overflow2 else { return nil }
        value = sum
    }
    return value
}

/// A WHO answer's fields: the count of all members, then one page of names.
/// `chat talk`'s /who and `chat who` page the same way, so the rule lives here.
struct WhoPage {
    let count: Int
    let names: [Username]

    /// nil when the fields are off the shape (the caller treats that as no answer).
    init?(_ fields: [String]) {
        guard let countField = fields.first, let count = Int(countField), count >= 0 else { return nil }
        let names = fields.dropFirst().compactMap(Username.init)
        guard names.count == fields.count - 1 else { return nil }
        self.count = count
        self.names = names
    }

    /// The `after` of the next WHO, once `gathered` names (this page's
    /// included) are in hand; nil when the list is complete, or when this
    /// page brought none (members left while paging: asking again would
    /// get the same empty page).
    func nextAfter(gathered: Int) -> Username? {
        gathered < count ? names.last : nil
    }
}

/// A datagram from the server as a chat client reads it.
public enum ChatInbound: Equatable, Sendable {
    /// SUCCESS and its fields, which the request it answers gives a meaning.
    case success(id: UInt32, fields: [String])
    case error(id: UInt32, reason: ErrorReason, detail: String?)
    /// The request `id` needs this cookie: send it again with it.
    case cookie(id: UInt32, cookie: UInt64)
    /// A push of one message or, in the BATCH format, several in ascending
    /// seq order; answer ACK with `id`.
    case message(id: UInt32, [ChatMessage])

    public var id: UInt32 {
        switch self {
        case .success(let id, _), .error(let id, _, _), .cookie(let id, _), .message(let id, _): id
        }
    }

    /// Parses strictly; nil is a stray datagram.
    public init?(_ datagram: UnsafeRawBufferPointer) {
        guard datagram.count <= maxDatagramSize else { return nil }
        var fields = Fields(trimming: datagram)
        guard fields.skip(prefix: ASCII.magic), let version = fields.next(),
            version.elementsEqual([UInt8(ascii: "1")]),
            let id = fields.next().flatMap(parseID), let kind = fields.next()
        else { return nil }
        if kind.elementsEqual(ASCII.success) {
            var values: [String] = []
            while let field = fields.next() {
                guard field.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { return nil }
                values.append(String(decoding: field, as: UTF8.self))
            }
            guard fields.atEnd else { return nil }
            self = .success(id: id, fields: values)
        } else if kind.elementsEqual(ASCII.error) {
            // The handshake's errors and the chat's share one grammar.
            guard case .error(_, let reason, let detail)? = Response(datagram) else { return nil }
            self = .error(id: id, reason: reason, detail: detail)
        } else if kind.elementsEqual(Verb.cookie), let cookie = fields.next().flatMap(CookieText.parse),
            fields.atEnd
        {
            self = .cookie(id: id, cookie: cookie)
        } else if kind.elementsEqual(Verb.message), let entries = fields.rest().flatMap(Self.entries) {
            self = .message(id: id, entries)
        } else {
            return nil
        }
    }

    /// A push's entries, one per line, seqs ascending; nil if any is off the grammar.
    private static func entries(_ lines: UnsafeRawBufferPointer.SubSequence) -> [ChatMessage]? {
        var entries: [ChatMessage] = []
        var start = lines.startIndex
        while start <= lines.endIndex {
            let stop = lines[start...].firstIndex(of: ASCII.newline) ?? lines.endIndex
            var fields = Fields(trimming: UnsafeRawBufferPointer(rebasing: lines[start..<stop]))
            guard let seq = fields.next().flatMap(parseDecimal64), seq <= maxSeq,
                seq > entries.last?.seq ?? 0,
                let time = fields.next().flatMap(parseDecimal64), time <= UInt64(Int64.max),
                let from = fields.next().flatMap({ Username(bytes: $0) }), let text = fields.rest(),
                ChatText.check(text) == nil
            else { return nil }
            entries.append(ChatMessage(seq: seq, timeMilliseconds: Int64(time), from: from, text: Array(text)))
            start = stop + 1
        }
        return entries
    }

    public init?(_ datagram: [UInt8]) {
        guard let inbound = datagram.withUnsafeBytes({ ChatInbound($0) }) else { return nil }
        self = inbound
    }

    /// A seq field of a SUCCESS (JOIN's last_seq, SAY's seq, HISTORY's
    /// first and last), held to `maxSeq` as a push's seq is; nil off that.
    public static func seq(_ field: String) -> UInt64? {
        guard let seq = UInt64(field), seq <= maxSeq else { return nil }
        return seq
    }
}

// MARK: - Writing

extension ChatRequest {
    /// Appends the request's datagram, without a trailing newline.
    public func write(into buffer: inout [UInt8]) {
        writeHeader(id: id, into: &buffer)
        func verb(_ verb: [UInt8], _ cookie: UInt64) {
            buffer += verb
            buffer.append(ASCII.space)
            CookieText.append(cookie, to: &buffer)
        }
        switch self {
        case .join(_, let cookie, let batch):
            verb(Verb.join, cookie)
            if batch {
                buffer.append(ASCII.space)
                buffer += Verb.batch
            }
        case .leave(_, let cookie): verb(Verb.leave, cookie)
        case .say(_, let cookie, let token, let text):
            verb(Verb.say, cookie)
            buffer.append(ASCII.space)
            appendDecimal64(token, to: &buffer)
            buffer.append(ASCII.space)
            buffer += text
        case .who(_, let cookie, let after):
            verb(Verb.who, cookie)
            if let after {
                buffer.append(ASCII.space)
                buffer += after.text.utf8
            }
        case .history(_, let cookie, let after):
            verb(Verb.history, cookie)
            buffer.append(ASCII.space)
            appendDecimal64(after, to: &buffer)
        case .ack(_, let through):
            buffer += Verb.ack
            if let through {
                buffer.append(ASCII.space)
                appendDecimal64(through, to: &buffer)
            }
        }
    }

    public var bytes: [UInt8] {
        var buffer: [UInt8] = []
        write(into: &buffer)
        return buffer
    }
}

/// What the server writes to a chat client.
public enum ChatReply {
    /// "SUCCESS" then each field after a space.
    public static func success(id: UInt32, into buffer: inout [UInt8], fields: (inout [UInt8]) -> Void) {
        writeHeader(id: id, into: &buffer)
        buffer += ASCII.success
        fields(&buffer)
    }

    public static func cookie(id: UInt32, cookie: UInt64, into buffer: inout [UInt8]) {
        writeHeader(id: id, into: &buffer)
        buffer += Verb.cookie
        buffer.append(ASCII.space)
        CookieText.append(cookie, to: &buffer)
    }

    /// The push of `messages` (ascending seqs, at least one) under the push id `id`.
    public static func push(id: UInt32, _ messages: some Collection<ChatMessage>, into buffer: inout [UInt8]) {
        push(id: id, entries: messages.map(entry), into: &buffer)
    }

    /// The push of messages already written as entries (`entry(_:)`).
    public static func push(id: UInt32, entries: some Collection<[UInt8]>, into buffer: inout [UInt8]) {
        writeHeader(id: id, into: &buffer)
        buffer += Verb.message
        var separator = ASCII.space
        for entry in entries {
            buffer.append(separator)
            buffer += entry
            separator = ASCII.newline
        }
    }

    /// The bytes of a push's header up to the first entry's separator.
    public static func pushHeaderSize(id: UInt32) -> Int {
        "CHAT/1  MESSAGE".utf8.count + decimalDigits(UInt64(id))
    }

    /// `message` as a push carries it: `seq time-ms username text`.
    public static func entry(_ message: ChatMessage) -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(48 + message.text.count)
        appendDecimal64(message.seq, to: &buffer)
        buffer.append(ASCII.space)
        appendDecimal64(UInt64(max(0, message.timeMilliseconds)), to: &buffer)
        buffer.append(ASCII.space)
        buffer += message.from.text.utf8
        buffer.append(ASCII.space)
        buffer += message.text
        return buffer
    }

    /// Appends " <value>".
    public static func field(_ value: UInt64, to buffer: inout [UInt8]) {
        buffer.append(ASCII.space)
        appendDecimal64(value, to: &buffer)
    }

    /// JOIN's answer to a BATCH member ends `BATCH <window>`.
    static let batch = Array("BATCH".utf8)

    /// Appends " <bytes>".
    static func field(_ bytes: [UInt8], to buffer: inout [UInt8]) {
        buffer.append(ASCII.space)
        buffer += bytes
    }

    /// Appends " <name>".
    public static func field(_ name: Username, to buffer: inout [UInt8]) {
        buffer.append(ASCII.space)
        buffer += name.text.utf8
    }
}

func decimalDigits(_ value: UInt64) -> Int {
    var digits = 1
    var rest = value
    while rest >= 10 {
        rest /= 10
        digits += 1
    }
    return digits
}

func appendDecimal64(_ value: UInt64, to buffer: inout [UInt8]) {
    // Digits from the right into a stack buffer (division by the constant
    // 10 compiles to a multiplication), then appended in one go.
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
        var rest = value
        var start = 20
        repeat {
            start -= 1
            digits[start] = ASCII.zero + UInt8(rest % 10)
            rest /= 10
        } while rest > 0
        buffer.append(contentsOf: UnsafeBufferPointer(rebasing: digits[start...]))
    }
}

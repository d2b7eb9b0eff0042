// CHAT/1: the wire format, parsed and written on raw bytes.
//
// Theory of operation
// -------------------
// Every message is one UDP datagram of at most 512 bytes of ASCII text (a
// chat message's text, the one UTF-8 field, is the exception). One trailing
// "\n" or "\r\n" is ignored. Fields are separated by exactly one space. This
// file holds the framing and the handshake; the chat room's verbs are in
// ChatProtocol.swift.
//
//     request  = "CHAT/1" SP id SP "CONNECT"
//              / "CHAT/1" SP id SP "INTRODUCE" SP username
//     response = "CHAT/1" SP id SP "SUCCESS" SP username
//              / "CHAT/1" SP id SP "ERROR" SP reason [SP detail]
//     id       = 1*10DIGIT      ; 0 .. 4294967295, chosen by the client
//     reason   = 1*(A-Z / "_")  ; see ErrorReason
//     detail   = 1*(A-Z / "_")
//
// A request is classified, not just accepted or rejected, because each class
// gets a different answer (see `RequestParse`):
//
//   does not start with "CHAT/"            -> dropped, no reply (not ours; replying
//                                             would make us a reflector)
//   "CHAT/" + a version other than "1"     -> ERROR UNSUPPORTED_VERSION
//   "CHAT/1 " + anything off the grammar   -> ERROR MALFORMED
//   INTRODUCE whose name breaks the rule   -> ERROR INVALID_USERNAME SYNTAX
//   SAY whose text breaks the rule         -> ERROR INVALID_MESSAGE <detail>
//                                             (once its cookie holds)
//
// Error replies carry the request's id when one can be read (1 to 10 digits,
// at most 4294967295, right after the version), else 0, so a client can match
// even a rejection to its attempt. The id is echoed as a plain decimal number
// without leading zeros.
//
// Parsing works on `UnsafeRawBufferPointer` and never allocates except for the
// username string of an INTRODUCE; writing appends to a caller-owned buffer.

/// Largest datagram either side sends or accepts.
public let maxDatagramSize = 512

/// What a client asks.
public enum Request: Equatable, Sendable {
    case connect(id: UInt32)
    case introduce(id: UInt32, username: Username)

    public var id: UInt32 {
        switch self {
        case .connect(let id), .introduce(let id, _): id
        }
    }
}

/// Why the server refused a request. A struct rather than an enum so that a
/// client can carry a reason a newer server sends without failing to parse it.
public struct ErrorReason: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    public static let clientNotFound = ErrorReason(rawValue: "CLIENT_NOT_FOUND")
    public static let invalidUsername = ErrorReason(rawValue: "INVALID_USERNAME")
    public static let malformed = ErrorReason(rawValue: "MALFORMED")
    public static let unsupportedVersion = ErrorReason(rawValue: "UNSUPPORTED_VERSION")
    public static let serverFull = ErrorReason(rawValue: "SERVER_FULL")
    /// The server could not make a registration durable (disk full, read-only);
    /// nothing changed, and trying again later may succeed.
    public static let unavailable = ErrorReason(rawValue: "UNAVAILABLE")
    /// LEAVE or HISTORY from an endpoint that is not its address's member.
    public static let notJoined = ErrorReason(rawValue: "NOT_JOINED")
    /// SAY text off the rule; the detail says how (ChatText).
    public static let invalidMessage = ErrorReason(rawValue: "INVALID_MESSAGE")
    /// More SAY from this address than `messages_per_s` allows.
    public static let rateLimited = ErrorReason(rawValue: "RATE_LIMITED")

    public var description: String { rawValue }
}

/// Refinements the server sends after INVALID_USERNAME.
public enum ErrorDetail {
    public static let taken = "TAKEN"
    public static let syntax = "SYNTAX"
}

/// What the server answers.
public enum Response: Equatable, Sendable {
    case success(id: UInt32, username: Username)
    case error(id: UInt32, reason: ErrorReason, detail: String? = nil)

    public var id: UInt32 {
        switch self {
        case .success(let id, _), .error(let id, _, _): id
        }
    }
}

/// The server's reading of one datagram.
public enum RequestParse: Equatable, Sendable {
    case request(Request)
    /// A well-formed INTRODUCE whose name breaks the username rule.
    case invalidUsername(id: UInt32)
    case malformed(id: UInt32)
    case unsupportedVersion(id: UInt32)
    /// Not CHAT at all: drop without a reply.
    case notChat
    /// A request to the chat room (ChatProtocol.swift).
    case chat(ChatRequest)
    /// A well-formed SAY whose text breaks the rule: answered with
    /// INVALID_MESSAGE once its cookie holds.
    case invalidMessage(id: UInt32, cookie: UInt64, detail: String)
}

// MARK: - Parsing

enum ASCII {
    static let space = UInt8(ascii: " ")
    static let newline = UInt8(ascii: "\n")
    static let carriageReturn = UInt8(ascii: "\r")
    static let zero = UInt8(ascii: "0")
    static let magic = Array("CHAT/".utf8)
    static let connect = Array("CONNECT".utf8)
    static let introduce = Array("INTRODUCE".utf8)
    static let success = Array("SUCCESS".utf8)
    static let error = Array("ERROR".utf8)
}

extension RequestParse {
    /// Classifies one datagram as the server sees it.
    public init(_ datagram: UnsafeRawBufferPointer) {
        let oversized = datagram.count > maxDatagramSize
        var fields = Fields(trimming: datagram)
        guard fields.skip(prefix: ASCII.magic) else {
            self = .notChat
            return
        }
        let version = fields.next()
        // Read the id even for a version we do not speak, so the client can
        // match the rejection to its attempt.
        let idField = fields.next()
        let id = idField.flatMap(parseID)
        guard let version, version.count == 1, version.first == UInt8(ascii: "1") else {
            self = .unsupportedVersion(id: id ?? 0)
            return
        }
        guard let id else {
            self = .malformed(id: 0)
            return
        }
        guard !oversized, let verb = fields.next() else {
            self = .malformed(id: id)
            return
        }
        if verb.elementsEqual(ASCII.connect), fields.atEnd {
            self = .request(.connect(id: id))
        } else if verb.elementsEqual(ASCII.introduce), let name = fields.next(), fields.atEnd {
            self = Username(bytes: name).map { .request(.introduce(id: id, username: $0)) } ?? .invalidUsername(id: id)
        } else {
            self = Self.chat(id: id, verb: verb, fields: &fields) ?? .malformed(id: id)
        }
    }

    public init(_ datagram: [UInt8]) {
        self = datagram.withUnsafeBytes { RequestParse($0) }
    }
}

extension Response {
    /// Parses a server's reply strictly; anything off the grammar is nil, and
    /// a client treats nil as a stray datagram.
    public init?(_ datagram: UnsafeRawBufferPointer) {
        guard datagram.count <= maxDatagramSize else { return nil }
        var fields = Fields(trimming: datagram)
        guard fields.skip(prefix: ASCII.magic), let version = fields.next(),
            version.elementsEqual([UInt8(ascii: "1")]),
            let id = fields.next().flatMap(parseID), let kind = fields.next(),
            let first = fields.next()
        else { return nil }
        if kind.elementsEqual(ASCII.success), fields.atEnd, let name = Username(bytes: first) {
            self = .success(id: id, username: name)
        } else if kind.elementsEqual(ASCII.error), isToken(first) {
            let detail = fields.next()
            guard fields.atEnd, detail.map(isToken) ?? true else { return nil }
            self = .error(
                id: id, reason: ErrorReason(rawValue: String(decoding: first, as: UTF8.self)),
                detail: detail.map { String(decoding: $0, as: UTF8.self) })
        } else {
            return nil
        }
    }

    public init?(_ datagram: [UInt8]) {
        guard let response = datagram.withUnsafeBytes({ Response($0) }) else { return nil }
        self = response
    }
}

/// Splits a datagram at single spaces. An empty field (two spaces in a row, or
/// a leading or trailing space) ends the walk with `nil`, which every caller
/// treats as a grammar error.
struct Fields {
    private let bytes: UnsafeRawBufferPointer
    private var index: Int
    private var end: Int
    private var broken = false

    init(trimming datagram: UnsafeRawBufferPointer) {
        bytes = datagram
        index = 0
        end = datagram.count
        if end > 0, bytes[end - 1] == ASCII.newline {
            end -= 1
            if end > 0, bytes[end - 1] == ASCII.carriageReturn { end -= 1 }
        }
    }

    var atEnd: Bool { !broken && index > end }

    /// Everything after the last field read and its space, byte for byte
    /// (spaces included); nil when that field ended the datagram.
    mutating func rest() -> UnsafeRawBufferPointer.SubSequence? {
        guard !broken, index <= end else { return nil }
        defer { index = end + 1 }
        return bytes[index..<end]
    }

    mutating func skip(prefix: [UInt8]) -> Bool {
        guard end - index >= prefix.count,
            prefix.indices.allSatisfy({ bytes[index + $0] == prefix[$0] })
        else { return false }
        index += prefix.count
        return true
    }

    /// The next field, or nil at the end or at an empty field.
    mutating func next() -> UnsafeRawBufferPointer.SubSequence? {
        guard !broken, index <= end else { return nil }
        var stop = index
        while stop < end, bytes[stop] != ASCII.space { stop += 1 }
        guard stop > index else {
            broken = true
            return nil
        }
        let field = bytes[index..<stop]
        index = stop + 1  // past the space; past `end` when this was the last field
        return field
    }
}

/// 1 to 10 decimal digits with a value that fits in 32 bits.
func parseID(_ field: some Collection<UInt8>) -> UInt32? {
    guard field.count <= 10, let value = parseDecimal64(field) else { return nil }
    return UInt32(exactly: value)
}

func isToken(_ field: some Collection<UInt8>) -> Bool {
    !field.isEmpty
        && field.allSatisfy { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) || $0 == UInt8(ascii: "_") }
}

// MARK: - Writing

extension Request {
    /// Appends the request's datagram, without a trailing newline.
    public func write(into buffer: inout [UInt8]) {
        writeHeader(id: id, into: &buffer)
        switch self {
        case .connect:
            buffer += ASCII.connect
        case .introduce(_, let username):
            buffer += ASCII.introduce
            buffer.append(ASCII.space)
            buffer += username.text.utf8
        }
    }

    public var bytes: [UInt8] {
        var buffer: [UInt8] = []
        write(into: &buffer)
        return buffer
    }
}

extension Response {
    /// Appends the response's datagram, without a trailing newline: a reply
    /// is never longer than it needs to be.
    public func write(into buffer: inout [UInt8]) {
        writeHeader(id: id, into: &buffer)
        switch self {
        case .success(_, let username):
            buffer += ASCII.success
            buffer.append(ASCII.space)
            buffer += username.text.utf8
        case .error(_, let reason, let detail):
            buffer += ASCII.error
            buffer.append(ASCII.space)
            buffer += reason.rawValue.utf8
            if let detail {
                buffer.append(ASCII.space)
                buffer += detail.utf8
            }
        }
    }

    public var bytes: [UInt8] {
        var buffer: [UInt8] = []
        write(into: &buffer)
        return buffer
    }
}

/// "CHAT/1 <id> "
func writeHeader(id: UInt32, into buffer: inout [UInt8]) {
    buffer += ASCII.magic
    buffer.append(UInt8(ascii: "1"))
    buffer.append(ASCII.space)
    appendDecimal(id, to: &buffer)
    buffer.append(ASCII.space)
}

func appendDecimal(_ value: UInt32, to buffer: inout [UInt8]) {
    appendDecimal64(UInt64(value), to: &buffer)
}

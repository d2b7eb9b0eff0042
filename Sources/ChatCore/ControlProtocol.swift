// The control protocol between chatctl and chatd: its messages, their JSON,
// and the framing of a connection's bytes into lines (docs/CONTROL.md).
//
// Theory of operation
// -------------------
// A client connects to chatd's Unix stream socket and sends one request per
// line, each a JSON object naming a command; chatd answers each with one
// line, a JSON object whose "ok" says how it went, in the order asked:
//
//     -> {"command": "lookup", "username": "alice"}
//     <- {"ok": true, "address": "127.0.0.5", "username": "alice"}
//     -> {"command": "remove", "address": "192.0.2.7"}
//     <- {"ok": false, "error": "not_registered", "message": "no username is registered for 192.0.2.7"}
//
// `users` is the one command answered with many lines: one object per
// registration, then the closing {"ok": true, "count": N}. Every object is
// flat (strings, numbers, booleans, null; no nesting), which keeps both
// ends' parser small enough to read at a glance and to fuzz, and lets a
// shell script pick fields with one jq filter.
//
// chatd reads a connection through ControlLineReader: a line may be at most
// `maxLineLength` bytes, so a client that never sends a newline costs at
// most that much memory, and is then answered `line_too_long` and closed.
// The next request is read only once the previous one is answered, so a
// client that writes a burst of requests waits for its answers rather than
// chatd buffering them. Nothing here does I/O or reads a clock: the shell
// (ChatServer's Server+Control) owns the sockets and the timeouts.

/// A value of a flat JSON object.
public enum JSONValue: Equatable, Sendable {
    case string(String)
    case integer(Int64)
    case number(Double)
    case bool(Bool)
    case null

    public var string: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    public var integer: Int64? {
        switch self {
        case .integer(let value): value
        case .number(let value) where value.rounded() == value && abs(value) < 9e15: Int64(value)
        default: nil
        }
    }

    public var number: Double? {
        switch self {
        case .integer(let value): Double(value)
        case .number(let value): value
        default: nil
        }
    }

    public var bool: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }
}

/// A flat JSON object: its fields in the order written, which is the order
/// chatd writes them in and chatctl prints them in.
public struct ControlObject: Equatable, Sendable, ExpressibleByDictionaryLiteral {
    public var fields: [(key: String, value: JSONValue)]

    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        fields = elements.map { (key: $0.0, value: $0.1) }
    }

    public init(_ fields: [(key: String, value: JSONValue)]) {
        self.fields = fields
    }

    public subscript(key: String) -> JSONValue? {
        get { fields.first { $0.key == key }?.value }
        set {
            if let index = fields.firstIndex(where: { $0.key == key }) {
                if let newValue { fields[index].value = newValue } else { fields.remove(at: index) }
            } else if let newValue {
                fields.append((key: key, value: newValue))
            }
        }
    }

    public static func == (lhs: ControlObject, rhs: ControlObject) -> Bool {
        lhs.fields.count == rhs.fields.count && zip(lhs.fields, rhs.fields).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    /// The object as one line of JSON, with its newline.
    public var line: [UInt8] {
        var bytes: [UInt8] = [UInt8(ascii: "{")]
        for (index, field) in fields.enumerated() {
            if index > 0 { bytes += ", ".utf8 }
            bytes += jsonString(field.key).utf8
            bytes += ": ".utf8
            switch field.value {
            case .string(let text): bytes += jsonString(text).utf8
            case .integer(let value): bytes += String(value).utf8
            case .number(let value): bytes += (value.isFinite ? "\(value)" : "null").utf8
            case .bool(let value): bytes += (value ? "true" : "false").utf8
            case .null: bytes += "null".utf8
            }
        }
        bytes += "}\n".utf8
        return bytes
    }

    /// Parses one line (without its newline) holding a flat JSON object;
    /// nil for anything else: nesting, trailing bytes, a repeated key, text
    /// that is not UTF-8.
    public init?(parsing line: some Collection<UInt8>) {
        var parser = FlatJSONParser(Array(line))
        guard let fields = parser.object() else { return nil }
        self.fields = fields
    }
}

/// A recursive-descent parser for exactly one flat object.
private struct FlatJSONParser {
    let bytes: [UInt8]
    var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func object() -> [(key: String, value: JSONValue)]? {
        skipSpace()
        guard take(UInt8(ascii: "{")) else { return nil }
        var fields: [(key: String, value: JSONValue)] = []
        skipSpace()
        if !take(UInt8(ascii: "}")) {
            repeat {
                skipSpace()
                guard let key = string() else { return nil }
                guard !fields.contains(where: { $0.key == key }) else { return nil }
                skipSpace()
                guard take(UInt8(ascii: ":")) else { return nil }
                skipSpace()
                guard let value = value() else { return nil }
                fields.append((key: key, value: value))
                skipSpace()
            } while take(UInt8(ascii: ","))
            guard take(UInt8(ascii: "}")) else { return nil }
        }
        skipSpace()
        return index == bytes.count ? fields : nil
    }

    private mutating func value() -> JSONValue? {
        guard index < bytes.count else { return nil }
        switch bytes[index] {
        case UInt8(ascii: "\""): return string().map(JSONValue.string)
        case UInt8(ascii: "t"): return literal("true") ? .bool(true) : nil
        case UInt8(ascii: "f"): return literal("false") ? .bool(false) : nil
        case UInt8(ascii: "n"): return literal("null") ? .null : nil
        default: return number()
        }
    }

    private mutating func number() -> JSONValue? {
        let start = index
        _ = take(UInt8(ascii: "-"))
        var isInteger = true
        while index < bytes.count {
            let byte = bytes[index]
            if (48...57).contains(byte) {
                index += 1
            } else if byte == UInt8(ascii: ".") || byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E")
                || byte == UInt8(ascii: "+") || byte == UInt8(ascii: "-")
            {
                isInteger = false
                index += 1
            } else {
                break
            }
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        guard !text.isEmpty, text != "-" else { return nil }
        if isInteger, let value = Int64(text) { return .integer(value) }
        // Double's parser is laxer than JSON (it takes "1." and ".5"); a
        // control client gains nothing from the difference.
        guard let value = Double(text), value.isFinite else { return nil }
        return .number(value)
    }

    private mutating func string() -> String? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        // Most strings have no escape: one scan and one validated copy.
        if let end = bytes[index...].firstIndex(where: { $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 < 0x20 }),
            bytes[end] == UInt8(ascii: "\"")
        {
            guard let text = String(validating: bytes[index..<end], as: UTF8.self) else { return nil }
            index = end + 1
            return text
        }
        var scalars = String.UnicodeScalarView()
        var raw: [UInt8] = []
        func flush() -> Bool {
            guard !raw.isEmpty else { return true }
            guard let text = String(validating: raw, as: UTF8.self) else { return false }
            scalars.append(contentsOf: text.unicodeScalars)
            raw.removeAll()
            return true
        }
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                guard flush() else { return nil }
                return String(scalars)
            case UInt8(ascii: "\\"):
                guard flush(), index < bytes.count else { return nil }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""): scalars.append("\"")
                case UInt8(ascii: "\\"): scalars.append("\\")
                case UInt8(ascii: "/"): scalars.append("/")
                case UInt8(ascii: "b"): scalars.append("\u{8}")
                case UInt8(ascii: "f"): scalars.append("\u{c}")
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "u"):
                    guard var code = hex4() else { return nil }
                    if (0xD800..<0xDC00).contains(code) {
                        // A surrogate pair spells one scalar beyond the BMP.
                        guard literal("\\u"), let low = hex4(), (0xDC00..<0xE000).contains(low) else { return nil }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(code) else { return nil }
                    scalars.append(scalar)
                default: return nil
                }
            case 0..<0x20:
                return nil
            default:
                raw.append(byte)
            }
        }
        return nil
    }

    private mutating func hex4() -> UInt32? {
        guard index + 4 <= bytes.count else { return nil }
        var code: UInt32 = 0
        for byte in bytes[index..<(index + 4)] {
            guard let digit = Self.hexDigit(byte) else { return nil }
            code = code << 4 | digit
        }
        index += 4
        return code
    }

    private static func hexDigit(_ byte: UInt8) -> UInt32? {
        switch byte {
        case 48...57: UInt32(byte - 48)
        case 65...70: UInt32(byte - 55)
        case 97...102: UInt32(byte - 87)
        default: nil
        }
    }

    private mutating func literal(_ text: String) -> Bool {
        let utf8 = Array(text.utf8)
        guard bytes[index...].starts(with: utf8) else { return false }
        index += utf8.count
        return true
    }

    private mutating func take(_ byte: UInt8) -> Bool {
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }

    private mutating func skipSpace() {
        while index < bytes.count, [0x20, 0x09, 0x0d, 0x0a].contains(bytes[index]) { index += 1 }
    }
}

// MARK: - Requests

/// A registration named by what the administrator knows of it.
public enum ControlTarget: Equatable, Sendable, CustomStringConvertible {
    case username(Username)
    case address(IPAddress)

    public var description: String {
        switch self {
        case .username(let name): name.text
        case .address(let address): address.description
        }
    }
}

/// What a control client can ask.
public enum ControlRequest: Equatable, Sendable {
    case status
    /// Every registration, or those whose username matches the pattern.
    case users(match: ControlPattern?)
    case lookup(ControlTarget)
    case remove(ControlTarget)
    case snapshot
    case reload
    case metrics

    /// The command names, for errors that list them.
    public static let commands = ["status", "users", "lookup", "remove", "snapshot", "reload", "metrics"]

    public var object: ControlObject {
        var object: ControlObject = ["command": .string(name)]
        switch self {
        case .users(let match?): object["match"] = .string(match.text)
        case .lookup(let target), .remove(let target):
            switch target {
            case .username(let name): object["username"] = .string(name.text)
            case .address(let address): object["address"] = .string(address.description)
            }
        default: break
        }
        return object
    }

    public var name: String {
        switch self {
        case .status: "status"
        case .users: "users"
        case .lookup: "lookup"
        case .remove: "remove"
        case .snapshot: "snapshot"
        case .reload: "reload"
        case .metrics: "metrics"
        }
    }

    /// The request one line holds, or the error to answer it with.
    public init(parsing line: some Collection<UInt8>) throws(ControlError) {
        guard let object = ControlObject(parsing: line) else {
            throw ControlError(.badRequest, "a request is one JSON object per line, such as {\"command\": \"status\"}")
        }
        guard let command = object["command"]?.string else {
            throw ControlError(.badRequest, "the request has no \"command\" string")
        }
        func only(_ allowed: Set<String>) throws(ControlError) {
            if let extra = object.fields.first(where: { $0.key != "command" && !allowed.contains($0.key) }) {
                throw ControlError(.badRequest, "\(command) takes no \"\(extra.key)\"")
            }
        }
        switch command {
        case "status": try only([]); self = .status
        case "snapshot": try only([]); self = .snapshot
        case "reload": try only([]); self = .reload
        case "metrics": try only([]); self = .metrics
        case "users":
            try only(["match"])
            switch object["match"] {
            case nil, .null?: self = .users(match: nil)
            case .string(let text)?:
                guard let pattern = ControlPattern(text) else {
                    throw ControlError(.badRequest, "match must be 1 to \(ControlPattern.maxLength) bytes")
                }
                self = .users(match: pattern)
            default: throw ControlError(.badRequest, "match must be a string")
            }
        case "lookup", "remove":
            try only(["username", "address"])
            let target: ControlTarget
            switch (object["username"], object["address"]) {
            case (.string(let text)?, nil):
                guard let name = Username(text) else {
                    throw ControlError(.badRequest, "\(jsonString(text)) is not a username (\(Username.rule))")
                }
                target = .username(name)
            case (nil, .string(let text)?):
                guard let address = IPAddress(text) else {
                    throw ControlError(.badRequest, "\(jsonString(text)) is not an IPv4 or IPv6 address")
                }
                target = .address(address)
            default:
                throw ControlError(.badRequest, "\(command) takes exactly one of \"username\" and \"address\", a string")
            }
            self = command == "lookup" ? .lookup(target) : .remove(target)
        default:
            throw ControlError(
                .unknownCommand,
                "unknown command \(jsonString(command)); commands are \(Self.commands.joined(separator: ", "))")
        }
    }
}

/// A shell-style pattern over usernames: `*` any run of characters, `?`
/// one, everything else itself, without regard to case (as usernames are
/// unique without regard to case).
public struct ControlPattern: Equatable, Sendable {
    public let text: String
    private let folded: [UInt8]
    public static let maxLength = 128

    public init?(_ text: String) {
        guard (1...Self.maxLength).contains(text.utf8.count) else { return nil }
        self.text = text
        folded = text.utf8.map(Self.fold)
    }

    public func matches(_ name: Username) -> Bool {
        Self.match(folded[...], Array(name.text.utf8.map(Self.fold))[...])
    }

    /// Iterative glob matching with one backtrack point per `*`: linear in
    /// practice, and never exponential, whatever the pattern.
    private static func match(_ pattern: ArraySlice<UInt8>, _ name: ArraySlice<UInt8>) -> Bool {
        var p = pattern.startIndex
        var n = name.startIndex
        var star: (p: Int, n: Int)?
        while n < name.endIndex {
            if p < pattern.endIndex, pattern[p] == UInt8(ascii: "*") {
                star = (p, n)
                p += 1
            } else if p < pattern.endIndex, pattern[p] == UInt8(ascii: "?") || pattern[p] == name[n] {
                p += 1
                n += 1
            } else if let backtrack = star {
                p = backtrack.p + 1
                n = backtrack.n + 1
                star = (backtrack.p, backtrack.n + 1)
            } else {
                return false
            }
        }
        while p < pattern.endIndex, pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.endIndex
    }

    private static func fold(_ byte: UInt8) -> UInt8 {
        (65...90).contains(byte) ? byte + 32 : byte
    }
}

// MARK: - Answers

/// Why a request failed, as its answer says it.
public struct ControlError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// Not a request: not JSON, no command, a wrong or missing field.
        case badRequest = "bad_request"
        case unknownCommand = "unknown_command"
        /// A line over `ControlLineReader.maxLineLength`: the connection is closed after the answer.
        case lineTooLong = "line_too_long"
        /// lookup, remove: no such registration.
        case notRegistered = "not_registered"
        /// The peer is neither root nor chatd's own user: closed after the answer.
        case permissionDenied = "permission_denied"
        /// Too many control clients at once: closed after the answer.
        case busy
        /// Nothing arrived for the idle timeout: closed after the answer.
        case timeout
        /// remove: the journal cannot be written now; nothing changed.
        case unavailable
        case snapshotFailed = "snapshot_failed"
        /// reload: the new config was refused and the old one stays.
        case reloadRefused = "reload_refused"
        /// chatd is shutting down.
        case stopping
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// The answer that reports this error.
    public var object: ControlObject {
        ["ok": .bool(false), "error": .string(code.rawValue), "message": .string(message)]
    }
}

// MARK: - Framing

/// Cuts a connection's bytes into request lines, with a cap on a line's length.
public struct ControlLineReader: Sendable {
    /// The longest request line, newline included: a request is a command
    /// and a name or pattern, so this is generous.
    public static let maxLineLength = 4096

    private var buffer: [UInt8] = []
    private var scanned = 0

    public init() {}

    public enum Line: Equatable, Sendable {
        case line([UInt8])
        /// No newline within `maxLineLength` bytes.
        case tooLong
    }

    /// Bytes held that are not a whole line yet.
    public var pending: Int { buffer.count }

    /// How many bytes may be read before the next call to `nextLine()`.
    public var room: Int { max(0, Self.maxLineLength - buffer.count) }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        buffer.append(contentsOf: bytes)
    }

    /// The next whole line without its newline (and a "\r" before it), if
    /// one has arrived.
    public mutating func nextLine() -> Line? {
        if let newline = buffer[scanned...].firstIndex(of: 0x0a) {
            var line = Array(buffer[..<newline])
            if line.last == 0x0d { line.removeLast() }
            buffer.removeSubrange(...newline)
            scanned = 0
            return newline < Self.maxLineLength ? .line(line) : .tooLong
        }
        scanned = buffer.count
        return buffer.count >= Self.maxLineLength ? .tooLong : nil
    }
}

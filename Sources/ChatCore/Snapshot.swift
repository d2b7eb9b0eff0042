// The registry's file format, to and from bytes.
//
//     {"version": 1, "saved_at": "2026-11-27T10:42:01Z", "users": [
//     {"ip": "127.0.0.5", "username": "alice"},
//     {"ip": "2001:db8::1", "username": "bob"}
//     ]}
//
// One user per line, in the registry's order (registration order, except
// where a removal moved the last record), so that `grep`, `wc -l` and
// `diff` work on it. Addresses are in their usual text form (dotted IPv4,
// RFC 5952 IPv6). Neither addresses nor usernames contain characters JSON
// must escape, so the writer copies them as they are.
//
// The reader accepts any valid JSON of this shape (any whitespace, any key
// order, escapes in strings, unknown keys skipped) but nothing else: an
// unknown version, a bad address or username, or a duplicate is an error
// naming the user's index (or the line and column for a syntax error),
// because guessing at a damaged registry could hand a name to the wrong
// client. Both directions work on raw bytes in one pass, about twenty
// times faster than Foundation's JSON coders at a million users, which keeps
// start-up and snapshots short. The time of saving is passed in: the core
// reads no clock.

public enum Snapshot {
    public static let version = 1

    /// The file's bytes for `records`, saved at `savedAt` (seconds since
    /// 1970, UTC), with the addresses in `replacing` holding the name given
    /// there instead, or left out where it gives nil (see
    /// `CommitQueue.confirmedNames`); an address `replacing` names that the
    /// records lack (a pending removal emptied it) is added with its name.
    /// Keys are spelled as the records spell addresses (IPv4-mapped ones as
    /// IPv4).
    public static func encode(
        _ records: Registry.Records, savedAt: Int64, replacing: [IPAddress: Username?] = [:]
    ) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 + records.count * 48)
        out += #"{"version": \#(version), "saved_at": "\#(rfc3339(savedAt))", "users": ["#.utf8
        var first = true
        func append(_ address: IPAddress, _ name: (inout [UInt8]) -> Void) {
            out += first ? "\n".utf8 : ",\n".utf8
            first = false
            out += #"{"ip": ""#.utf8
            appendAddress(address, to: &out)
            out += #"", "username": ""#.utf8
            name(&out)
            out += #""}"#.utf8
        }
        var unseen = replacing
        for record in records {
            let replacement = replacing.isEmpty ? nil : unseen.removeValue(forKey: record.address)
            if case .some(.none) = replacement { continue }
            if case .some(.some(let name)) = replacement {
                append(record.address) { $0 += name.text.utf8 }
            } else {
                append(record.address) { out in record.withNameBytes { out += $0 } }
            }
        }
        // In address order, so that the same state always writes the same file.
        for (address, name) in unseen.sorted(by: { $0.key.ipv6Halves < $1.key.ipv6Halves }) {
            if let name { append(address) { $0 += name.text.utf8 } }
        }
        out += "\n]}\n".utf8
        return out
    }

    public static func encode(_ registry: Registry, savedAt: Int64) -> [UInt8] {
        encode(registry.records, savedAt: savedAt)
    }

    /// Why a snapshot file cannot be loaded, in one line.
    public struct DecodingError: Error, Equatable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Reads a snapshot file's bytes into a registry.
    public static func load(_ bytes: [UInt8], maxUsers: Int) throws(DecodingError) -> Registry {
        var registry = Registry(maxUsers: maxUsers)
        // Lines are 40 to 80 bytes, typically about 48: size the tables once
        // for that (smaller tables stay in cache; a short-line file grows them once).
        registry.reserveCapacity(bytes.count / 48)
        let failure = bytes.withUnsafeBytes { raw -> DecodingError? in
            var reader = Reader(raw)
            do throws(DecodingError) {
                try reader.readFile(into: &registry)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
        return registry
    }

    /// Dotted quads without going through String; IPv6 is rare enough to.
    private static func appendAddress(_ address: IPAddress, to out: inout [UInt8]) {
        guard case .v4(let v4) = address else {
            out += address.description.utf8
            return
        }
        for shift in stride(from: 24, through: 0, by: -8) {
            let octet = UInt8(truncatingIfNeeded: v4 >> UInt32(shift))
            if octet >= 100 { out.append(UInt8(ascii: "0") + octet / 100) }
            if octet >= 10 { out.append(UInt8(ascii: "0") + octet / 10 % 10) }
            out.append(UInt8(ascii: "0") + octet % 10)
            if shift > 0 { out.append(UInt8(ascii: ".")) }
        }
    }
}

// MARK: - Reading

/// A one-pass reader for the snapshot's JSON shape, on raw bytes.
private struct Reader {
    let bytes: UnsafeRawBufferPointer
    var position = 0
    /// Decoded string contents, reused for every string.
    var scratch: [UInt8] = []

    static let versionKey = Array("version".utf8)
    static let usersKey = Array("users".utf8)
    static let ipKey = Array("ip".utf8)
    static let usernameKey = Array("username".utf8)

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
        scratch.reserveCapacity(64)
    }

    typealias Failure = Snapshot.DecodingError

    /// The keys this reader knows, told apart without copying the key.
    enum Key {
        case version, users, ip, username, other
    }

    mutating func readFile(into registry: inout Registry) throws(Failure) {
        var version: Int?
        var sawUsers = false
        try expect(UInt8(ascii: "{"), "the file must be a JSON object", syntax: false)
        try readMembers { (reader: inout Reader, key: Key) throws(Failure) in
            switch key {
            case .version:
                version = try reader.readInteger()
                guard version == Snapshot.version else {
                    throw Failure(
                        "version \(version!) is not supported (this chatd reads version \(Snapshot.version))")
                }
            case .users:
                sawUsers = true
                try reader.readUsers(into: &registry)
            default:
                try reader.skipValue()
            }
        }
        skipWhitespace()
        guard position == bytes.count else { throw failure("unexpected data after the end") }
        guard version != nil else { throw Failure("missing key \"version\"") }
        guard sawUsers else { throw Failure("missing key \"users\"") }
    }

    private mutating func readUsers(into registry: inout Registry) throws(Failure) {
        try expect(UInt8(ascii: "["), "\"users\" must be an array", syntax: false)
        var index = 0
        try readElements { (reader: inout Reader) throws(Failure) in
            try reader.readUser(index, into: &registry)
            index += 1
        }
    }

    private mutating func readUser(_ index: Int, into registry: inout Registry) throws(Failure) {
        var address: IPAddress?
        var name: Username?
        try expect(UInt8(ascii: "{"), "user \(index) must be an object", syntax: false)
        try readMembers { (reader: inout Reader, key: Key) throws(Failure) in
            switch key {
            case .ip:
                try reader.readString("user \(index): \"ip\" must be a string", syntax: false)
                address = IPAddress(utf8: reader.scratch)
                guard address != nil else {
                    throw Failure("user \(index): \"\(printable(reader.scratch))\" is not an IP address")
                }
            case .username:
                try reader.readString("user \(index): \"username\" must be a string", syntax: false)
                name = Username(bytes: reader.scratch)
                guard name != nil else {
                    throw Failure(
                        "user \(index): \"\(printable(reader.scratch))\" is not a valid username (\(Username.rule))")
                }
            default:
                try reader.skipValue()
            }
        }
        guard let address else { throw Failure("user \(index): missing key \"ip\"") }
        guard let name else { throw Failure("user \(index): missing key \"username\"") }
        do {
            try registry.add(name, at: address, index: index)
        } catch {
            throw Failure(error.description)
        }
    }

    // MARK: JSON structure

    /// After "{": calls `body` for each member with its key, the reader
    /// positioned at the value; consumes the closing "}".
    private mutating func readMembers(
        _ body: (inout Reader, Key) throws(Failure) -> Void
    ) throws(Failure) {
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            position += 1
            return
        }
        while true {
            try readString("expected a key in quotes")
            let key: Key =
                switch scratch.count {
                case 2 where scratch == Self.ipKey: .ip
                case 5 where scratch == Self.usersKey: .users
                case 7 where scratch == Self.versionKey: .version
                case 8 where scratch == Self.usernameKey: .username
                default: .other
                }
            try expect(UInt8(ascii: ":"), "expected ':' after a key")
            skipWhitespace()
            try body(&self, key)
            skipWhitespace()
            switch next() {
            case UInt8(ascii: ","): continue
            case UInt8(ascii: "}"): return
            default: throw failure("expected ',' or '}'", back: 1)
            }
        }
    }

    /// After "[": calls `body` for each element; consumes the closing "]".
    private mutating func readElements(_ body: (inout Reader) throws(Failure) -> Void) throws(Failure) {
        skipWhitespace()
        if peek() == UInt8(ascii: "]") {
            position += 1
            return
        }
        while true {
            skipWhitespace()
            try body(&self)
            skipWhitespace()
            switch next() {
            case UInt8(ascii: ","): continue
            case UInt8(ascii: "]"): return
            default: throw failure("expected ',' or ']'", back: 1)
            }
        }
    }

    /// A JSON string into `scratch` (escapes decoded).
    private mutating func readString(_ problem: @autoclosure () -> String, syntax: Bool = true) throws(Failure) {
        skipWhitespace()
        guard next() == UInt8(ascii: "\"") else { throw failure(problem(), back: 1, syntax: syntax) }
        scratch.removeAll(keepingCapacity: true)
        while true {
            guard let byte = next() else { throw failure("unterminated string") }
            switch byte {
            case UInt8(ascii: "\""):
                return
            case UInt8(ascii: "\\"):
                try readEscape()
            case 0..<0x20:
                throw failure("control character in a string", back: 1)
            default:
                scratch.append(byte)
            }
        }
    }

    private mutating func readEscape() throws(Failure) {
        guard let byte = next() else { throw failure("unterminated string") }
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scratch.append(byte)
        case UInt8(ascii: "b"): scratch.append(0x08)
        case UInt8(ascii: "f"): scratch.append(0x0c)
        case UInt8(ascii: "n"): scratch.append(0x0a)
        case UInt8(ascii: "r"): scratch.append(0x0d)
        case UInt8(ascii: "t"): scratch.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = try readHex4()
            if (0xd800..<0xdc00).contains(scalar) {
                guard next() == UInt8(ascii: "\\"), next() == UInt8(ascii: "u") else {
                    throw failure("unpaired surrogate in a string")
                }
                let low = try readHex4()
                guard (0xdc00..<0xe000).contains(low) else { throw failure("unpaired surrogate in a string") }
                scalar = 0x10000 + ((scalar - 0xd800) << 10) + (low - 0xdc00)
            }
            guard let unicode = Unicode.Scalar(scalar) else { throw failure("invalid \\u escape") }
            scratch += Array(String(Character(unicode)).utf8)
        default:
            throw failure("invalid escape in a string", back: 1)
        }
    }

    private mutating func readHex4() throws(Failure) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let byte = next() else { throw failure("unterminated string") }
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw failure("invalid \\u escape", back: 1)
            }
            value = value << 4 | digit
        }
        return value
    }

    /// An integer (JSON allows a fraction or exponent; a version has none).
    private mutating func readInteger() throws(Failure) -> Int {
        skipWhitespace()
        let start = position
        if peek() == UInt8(ascii: "-") { position += 1 }
        var value = 0
        var digits = 0
        while let byte = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) {
            guard digits < 18 else { throw failure("number too large") }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
            digits += 1
            position += 1
        }
        guard digits > 0 else {
            position = start
            throw failure("\"version\" must be a number", syntax: false)
        }
        if let byte = peek(), [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(byte) {
            throw failure("\"version\" must be a whole number", syntax: false)
        }
        return bytes[start] == UInt8(ascii: "-") ? -value : value
    }

    /// Skips any JSON value (for keys this version does not use).
    private mutating func skipValue(depth: Int = 0) throws(Failure) {
        guard depth < 64 else { throw failure("nested too deeply") }
        skipWhitespace()
        switch peek() {
        case UInt8(ascii: "\""):
            try readString("expected a string")
        case UInt8(ascii: "{"):
            position += 1
            try readMembers { (reader: inout Reader, _: Key) throws(Failure) in try reader.skipValue(depth: depth + 1) }
        case UInt8(ascii: "["):
            position += 1
            try readElements { (reader: inout Reader) throws(Failure) in try reader.skipValue(depth: depth + 1) }
        case UInt8(ascii: "t"): try expectWord("true")
        case UInt8(ascii: "f"): try expectWord("false")
        case UInt8(ascii: "n"): try expectWord("null")
        case .some(let byte) where byte == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte):
            let start = position
            while let byte = peek(), "+-.eE0123456789".utf8.contains(byte) { position += 1 }
            guard position > start else { throw failure("expected a value") }
        default:
            throw failure("expected a value")
        }
    }

    private mutating func expectWord(_ word: String) throws(Failure) {
        for expected in word.utf8 {
            guard next() == expected else { throw failure("expected a value", back: 1) }
        }
    }

    // MARK: Bytes

    /// `problem` is only built for an error: this runs for every user.
    private mutating func expect(_ byte: UInt8, _ problem: @autoclosure () -> String, syntax: Bool = true) throws(Failure) {
        skipWhitespace()
        guard next() == byte else { throw failure(problem(), back: 1, syntax: syntax) }
    }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x0a, 0x0d, 0x09: position += 1
            default: return
            }
        }
    }

    private func peek() -> UInt8? {
        position < bytes.count ? bytes[position] : nil
    }

    private mutating func next() -> UInt8? {
        guard position < bytes.count else {
            position = bytes.count + 1  // past the end, for the error's column
            return nil
        }
        defer { position += 1 }
        return bytes[position]
    }

    /// An error at the current position (or `back` bytes before it), as
    /// "line L, column C: problem", led by "not valid JSON" for syntax errors
    /// and for a file that ends early (what a truncated write looks like).
    private func failure(_ problem: String, back: Int = 0, syntax: Bool = true) -> Failure {
        let offset = max(0, min(position - back, bytes.count))
        if position > bytes.count {
            return Failure("not valid JSON: the file ends early (\(problem))")
        }
        var line = 1
        var column = 1
        for byte in bytes[..<offset] {
            if byte == 0x0a {
                line += 1
                column = 1
            } else {
                column += 1
            }
        }
        return Failure("\(syntax ? "not valid JSON at " : "")line \(line), column \(column): \(problem)")
    }
}

/// A value from the file as it may appear in a one-line error: printable
/// ASCII as it is, anything else (newlines, escape sequences) as \u{…}.
private func printable(_ bytes: [UInt8]) -> String {
    var text = ""
    for scalar in String(decoding: bytes.prefix(64), as: UTF8.self).unicodeScalars {
        if (0x20..<0x7f).contains(scalar.value) && scalar != "\\" && scalar != "\"" {
            text.unicodeScalars.append(scalar)
        } else {
            text += "\\u{\(String(scalar.value, radix: 16))}"
        }
    }
    return bytes.count > 64 ? text + "…" : text
}

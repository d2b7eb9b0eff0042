// The registration journal: every change to the registry, appended and
// synced before the client hears SUCCESS, so that a confirmed username
// survives kill -9 and power loss between snapshots.
//
// Theory of operation
// -------------------
// A journal is lines, each with a CRC-32 of its text before the checksum
// field. Version 2 (what chatd writes) opens with a header line, then one
// typed record per change:
//
//     {"journal": "chatd", "version": 2, "crc32": 3095150525}
//     {"type": "registration", "ip": "127.0.0.5", "username": "alice", "crc32": 2244490487}
//     {"type": "message", "seq": 7, "time_ms": 1796205721000, "from": "alice", "text": "hi \"all\"", "crc32": …}
//     {"type": "removal", "ip": "127.0.0.5", "crc32": 3362874844}
//
// The header is written and synced when the file is created, before any
// record, so a file whose first line is not it was written by an older
// chatd: version 1, the same lines without the header and the type field,
//
//     {"ip": "127.0.0.5", "username": "alice", "crc32": 88959256}
//
// which replay still reads, so that an upgrade loses no registration (chatd
// then folds it into the snapshot and starts a version-2 file). A header of
// another version is refused: a newer chatd wrote it. The type field lets
// the next kind of record share this file and these rules. A record whose
// checksum holds but whose type this chatd does not know is refused too,
// not skipped: it is a change a newer chatd made, and replaying around it
// would silently lose it, or apply later records to a state that lacks it.
// That is how a chatd from before the removal record (an administrator's
// `chatctl remove`) treats a journal holding one: it refuses to start
// rather than bring the removed registration back.
//
// Replay applies each record as a fact, in order (Registry.restore): the
// address now holds the name, whoever held the name loses it, and neither
// the limit nor the INTRODUCE rules get a say, since the change happened.
// A removal is the fact "the address holds nothing" (Registry.remove), true
// whether or not it held anything when replay reaches it.
// The INTRODUCE rules would not do: on a snapshot newer than the record, the
// name may already belong to an address that takes it only later in the
// history, so the record would be refused and the address left with a name
// it gave up. Applied as facts, records are idempotent: after any run of them
// each address they name holds what its last record says, a name or nothing
// (unless a later record gave that name to another), and addresses they do
// not name keep theirs unless a record took their name. So replaying a run of the history onto a state
// that already includes its start ends with the registrations the history
// ended with (their order, which only a snapshot shows, may differ), and the
// journal can be compacted crash-safely: write the snapshot, then drop the
// records it covers (keeping the header). A crash between the two only
// replays records twice. This needs the journal to hold every change made
// after the snapshot (a change it misses can be undone by an older record);
// the server sees to that.
//
// Damage. A crash during an append leaves a torn last line: one without its
// newline, or a tail of zero bytes where the file system extended the file
// before the data reached it. That tail never produced a SUCCESS (the sync
// had not returned), so replay drops it and reports where the good part ends,
// for the caller to truncate the file there. The header is no exception: a
// file holding only part of it is a crash while it was being created, and
// replays as empty. Anything else, a bad checksum or an unreadable line
// followed by more lines, is real corruption: replay stops with an error
// naming the line (counting the header), and chatd refuses to start rather
// than guess.

public enum Journal {
    /// One change, as a version-2 record.
    public enum Record: Equatable, Sendable {
        /// `address` now holds `username` (registered, renamed or respelled).
        case registration(IPAddress, Username)
        /// The chat room accepted a message.
        case message(ChatMessage)
        /// `address` holds no name any more: an administrator removed it.
        case removal(IPAddress)
    }

    /// The version-2 header line, with its newline.
    public static let header: [UInt8] = checksummed(Array(#"{"journal": "chatd", "version": 2"#.utf8))

    /// One record as a line, with its newline.
    public static func line(_ record: Record) -> [UInt8] {
        switch record {
        case .registration(let address, let username):
            var body = Array(#"{"type": "registration", "ip": ""#.utf8)
            body += address.description.utf8
            body += #"", "username": ""#.utf8
            body += username.text.utf8
            body += "\"".utf8
            return checksummed(body)
        case .message(let message):
            var body = Array(#"{"type": "message", "seq": "#.utf8)
            appendDecimal64(message.seq, to: &body)
            body += #", "time_ms": "#.utf8
            appendDecimal64(UInt64(max(0, message.timeMilliseconds)), to: &body)
            body += #", "from": ""#.utf8
            body += message.from.text.utf8
            body += #"", "text": ""#.utf8
            // Chat text has no control characters: only " and \ need escaping.
            for byte in message.text {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { body.append(UInt8(ascii: "\\")) }
                body.append(byte)
            }
            body += "\"".utf8
            return checksummed(body)
        case .removal(let address):
            var body = Array(#"{"type": "removal", "ip": ""#.utf8)
            body += address.description.utf8
            body += "\"".utf8
            return checksummed(body)
        }
    }

    /// Why a journal cannot be replayed.
    public struct DamageError: Error, Equatable, CustomStringConvertible {
        public enum Reason: Equatable, Sendable {
            /// A bad checksum or format.
            case damaged
            /// A whole, checksummed record of a type this chatd does not know.
            case unknownRecordType(String)
            /// A whole, checksummed header of a version this chatd cannot read.
            case unsupportedVersion(Int)
            /// Line 1 is damaged and line 2 is a version-2 record: the header
            /// rotted. Deleting the line, as for other damage, would leave
            /// every record unreadable; the header must be written back.
            case damagedHeader
        }

        /// The first line that cannot be replayed, counting from 1 (the header is line 1).
        public let line: Int
        public let reason: Reason
        public init(line: Int, reason: Reason = .damaged) {
            self.line = line
            self.reason = reason
        }

        public var description: String {
            switch reason {
            case .damaged: "journal line \(line) is damaged (bad checksum or format)"
            case .unknownRecordType(let type):
                "journal line \(line) is a record of unknown type \(type.debugDescription) (written by a newer chatd?)"
            case .unsupportedVersion(let version):
                "journal line \(line) is the header of a version-\(version) journal, which this chatd cannot read"
            case .damagedHeader: "journal line \(line), the header of a version-2 journal, is damaged"
            }
        }
    }

    /// What replaying a journal did.
    public struct Replay: Equatable, Sendable {
        /// Records applied (the header is not one).
        public var lines = 0
        /// Bytes of whole, valid lines, the header's included; the file
        /// should be cut to this length when `tornTail` is true.
        public var validLength = 0
        /// The file ended in a partial line (a crash during an append).
        public var tornTail = false
        /// The format found: 2 with the header, 1 for whole lines without it,
        /// nil when the file holds no whole line (empty, or only a torn tail).
        public var version: Int?
        /// The chat messages the records hold, in order; the caller adds
        /// those newer than its history (replay may see them twice, as
        /// registrations, after a crash during compaction).
        public var messages: [ChatMessage] = []

        public init(lines: Int = 0, validLength: Int = 0, tornTail: Bool = false, version: Int? = nil) {
            self.lines = lines
            self.validLength = validLength
            self.tornTail = tornTail
            self.version = version
        }
    }

    /// Applies every record of `bytes`, a journal of either version, to
    /// `registry` (see the theory above).
    public static func replay(_ bytes: [UInt8], into registry: inout Registry) throws(DamageError) -> Replay {
        if bytes.starts(with: header) {
            var replay = try replayLines(bytes, from: header.count, firstLine: 2, into: &registry, read: read)
            replay.version = 2
            return replay
        }
        if let end = bytes.firstIndex(of: 0x0a), let body = checkedBody(bytes[..<end]),
            let version = headerVersion(body)
        {
            throw DamageError(line: 1, reason: .unsupportedVersion(version))
        }
        do throws(DamageError) {
            var replay = try replayLines(bytes, from: 0, firstLine: 1, into: &registry) { line in
                parseVersion1(line).map(Parsed.record) ?? .damaged
            }
            replay.version = replay.validLength > 0 ? 1 : nil
            return replay
        } catch where error == DamageError(line: 1) && secondLineIsVersion2Record(bytes) {
            throw DamageError(line: 1, reason: .damagedHeader)
        }
    }

    private static func secondLineIsVersion2Record(_ bytes: [UInt8]) -> Bool {
        guard let first = bytes.firstIndex(of: 0x0a) else { return false }
        let rest = bytes[(first + 1)...]
        guard let end = rest.firstIndex(of: 0x0a) else { return false }
        return parse(rest[..<end]) != nil
    }

    /// A line as replay sees it.
    enum Parsed {
        case record(Record)
        case unknownType(String)
        case damaged
    }

    private static func replayLines(
        _ bytes: [UInt8], from first: Int, firstLine: Int, into registry: inout Registry,
        read: (ArraySlice<UInt8>) -> Parsed
    ) throws(DamageError) -> Replay {
        var replay = Replay(validLength: first)
        var start = first
        var lineNumber = firstLine
        while start < bytes.count {
            guard let end = bytes[start...].firstIndex(of: 0x0a) else {
                // No newline: the tail of an append that never completed.
                replay.tornTail = true
                return replay
            }
            switch read(bytes[start..<end]) {
            case .record(.registration(let address, let name)):
                registry.restore(name, at: address)
            case .record(.message(let message)):
                replay.messages.append(message)
            case .record(.removal(let address)):
                registry.remove(address)
            case .unknownType(let type):
                // Whole and checksummed, so not a torn append even when last.
                throw DamageError(line: lineNumber, reason: .unknownRecordType(type))
            case .damaged:
                if isTornTail(bytes[start...]) {
                    replay.tornTail = true
                    return replay
                }
                throw DamageError(line: lineNumber)
            }
            replay.lines += 1
            start = end + 1
            replay.validLength = start
            lineNumber += 1
        }
        return replay
    }

    /// A bad line counts as torn only when it and everything after it could
    /// be an interrupted append: one line at most, or zero bytes.
    private static func isTornTail(_ tail: ArraySlice<UInt8>) -> Bool {
        let newlines = tail.count { $0 == 0x0a }
        return newlines <= 1 && tail.last == 0x0a && tail.dropLast().allSatisfy({ $0 != 0x0a })
            || tail.allSatisfy { $0 == 0 || $0 == 0x0a }
    }

    /// The record of one version-2 line without its newline; nil if its
    /// checksum fails, its format is wrong or its type is unknown.
    public static func parse(_ line: ArraySlice<UInt8>) -> Record? {
        guard case .record(let record) = read(line) else { return nil }
        return record
    }

    static func read(_ line: ArraySlice<UInt8>) -> Parsed {
        let prefix = Array(#"{"type": ""#.utf8)
        guard let body = checkedBody(line), body.starts(with: prefix),
            let typeEnd = body[(body.startIndex + prefix.count)...].firstIndex(of: UInt8(ascii: "\""))
        else { return .damaged }
        let type = body[(body.startIndex + prefix.count)..<typeEnd]
        let fields = body[(typeEnd + 1)...]
        switch String(decoding: type, as: UTF8.self) {
        case "registration":
            guard fields.starts(with: #", "ip": ""#.utf8),
                let (address, name) = registration(fields.dropFirst(#", "ip": ""#.utf8.count))
            else { return .damaged }
            return .record(.registration(address, name))
        case "message":
            return message(fields).map { .record(.message($0)) } ?? .damaged
        case "removal":
            let prefix = #", "ip": ""#.utf8
            guard fields.starts(with: prefix), fields.count > prefix.count + 1, fields.last == UInt8(ascii: "\""),
                let address = IPAddress(utf8: Array(fields.dropFirst(prefix.count).dropLast()))
            else { return .damaged }
            return .record(.removal(address))
        case let unknown:
            return .unknownType(unknown)
        }
    }

    /// The record of one version-1 line without its newline (what chatd wrote
    /// before the header), if its checksum holds.
    public static func parseVersion1(_ line: ArraySlice<UInt8>) -> Record? {
        let prefix = Array(#"{"ip": ""#.utf8)
        guard let body = checkedBody(line), body.starts(with: prefix),
            let (address, name) = registration(body.dropFirst(prefix.count))
        else { return nil }
        return .registration(address, name)
    }

    /// `<address>", "username": "<name>"` to the end of a body, as both
    /// versions spell a registration after the opening quote of its address.
    private static func registration(_ fields: ArraySlice<UInt8>) -> (IPAddress, Username)? {
        // Written by `line(_:)` (or its version-1 predecessor), so a fixed shape suffices.
        let middle = Array(#"", "username": ""#.utf8)
        guard fields.last == UInt8(ascii: "\""), let split = fields.firstRange(of: middle),
            split.upperBound < fields.endIndex
        else { return nil }
        let addressText = Array(fields[..<split.lowerBound])
        let nameBytes = fields[split.upperBound..<(fields.endIndex - 1)]
        guard let address = IPAddress(utf8: addressText), let name = Username(bytes: nameBytes) else { return nil }
        return (address, name)
    }

    /// `, "seq": N, "time_ms": N, "from": "name", "text": "…"` to the end of a body.
    private static func message(_ fields: ArraySlice<UInt8>) -> ChatMessage? {
        var rest = fields
        func take(_ literal: String) -> Bool {
            guard rest.starts(with: literal.utf8) else { return false }
            rest = rest.dropFirst(literal.utf8.count)
            return true
        }
        func number() -> UInt64? {
            let digits = rest.prefix(while: isDigit)
            rest = rest.dropFirst(digits.count)
            return parseDecimal64(digits)
        }
        // Seqs stay far below 2^63 (one a microsecond for 290,000 years), so
        // a larger one is damage, and arithmetic on seqs never overflows.
        guard take(#", "seq": "#), let seq = number(), seq < 1 << 63, take(#", "time_ms": "#), let time = number(),
            time <= UInt64(Int64.max), take(#", "from": ""#),
            let nameEnd = rest.firstIndex(of: UInt8(ascii: "\"")),
            let from = Username(bytes: rest[..<nameEnd])
        else { return nil }
        rest = rest[nameEnd...]
        guard take(#"", "text": ""#), rest.last == UInt8(ascii: "\"") else { return nil }
        var text: [UInt8] = []
        var escaped = false
        for byte in rest.dropLast() {
            if escaped {
                guard byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { return nil }
                text.append(byte)
                escaped = false
            } else if byte == UInt8(ascii: "\\") {
                escaped = true
            } else {
                guard byte != UInt8(ascii: "\"") else { return nil }
                text.append(byte)
            }
        }
        guard !escaped, ChatText.check(text) == nil else { return nil }
        return ChatMessage(seq: seq, timeMilliseconds: Int64(time), from: from, text: text)
    }

    /// The version a header body names, if it is shaped as a header.
    private static func headerVersion(_ body: ArraySlice<UInt8>) -> Int? {
        let prefix = Array(#"{"journal": "chatd", "version": "#.utf8)
        let digits = body.dropFirst(prefix.count)
        guard body.starts(with: prefix), (1...9).contains(digits.count), digits.first != UInt8(ascii: "0"),
            digits.allSatisfy(isDigit)
        else { return nil }
        return Int(String(decoding: digits, as: UTF8.self))
    }

    /// `body` with the checksum field and the closing brace after it.
    static func checksummed(_ body: [UInt8]) -> [UInt8] {
        body + #", "crc32": \#(CRC32.checksum(body))}"#.utf8 + [0x0a]
    }

    /// The text a line's checksum covers, if the line ends in
    /// `, "crc32": <digits>}` and the checksum holds. Found from the end, so
    /// that whatever a record holds cannot be mistaken for the field.
    static func checkedBody(_ line: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        let marker = Array(#", "crc32": "#.utf8)
        guard line.last == UInt8(ascii: "}") else { return nil }
        let beforeBrace = line.dropLast()
        let digits = beforeBrace.reversed().prefix(while: isDigit)
        let digitsStart = beforeBrace.endIndex - digits.count
        let markerStart = digitsStart - marker.count
        guard (1...10).contains(digits.count), markerStart >= line.startIndex,
            line[markerStart..<digitsStart].elementsEqual(marker),
            let stored = UInt32(String(decoding: line[digitsStart..<beforeBrace.endIndex], as: UTF8.self))
        else { return nil }
        let body = line[..<markerStart]
        return stored == CRC32.checksum(body) ? body : nil
    }

    private static func isDigit(_ byte: UInt8) -> Bool { (48...57).contains(byte) }
}

/// CRC-32 (IEEE 802.3, as zlib and gzip use it), for journal lines.
public enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? 0xedb8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    public static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xffff_ffff
        for byte in bytes {
            crc = table[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8)
        }
        return crc ^ 0xffff_ffff
    }
}

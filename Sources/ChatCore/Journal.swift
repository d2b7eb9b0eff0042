// The registration journal: every change to the registry, appended and
// synced before the client hears SUCCESS, so that a confirmed username
// survives kill -9 and power loss between snapshots.
//
// Theory of operation
// -------------------
// One line per change, the address and the name it now holds, with a CRC-32
// of the line's text before the checksum field:
//
//     {"ip": "127.0.0.5", "username": "alice", "crc32": 2774502012}
//
// Replay applies each line as a fact, in order (Registry.restore): the
// address now holds the name, whoever held the name loses it, and neither
// the limit nor the INTRODUCE rules get a say, since the change happened.
// The INTRODUCE rules would not do: on a snapshot newer than the line, the
// name may already belong to an address that takes it only later in the
// history, so the line would be refused and the address left with a name it
// gave up. Applied as facts, lines are idempotent: after any run of them each
// address they name holds its last name (unless a later line gave that name
// to another), and addresses they do not name keep theirs unless a line took
// their name. So replaying a run of the history onto a state that already
// includes its start ends with the registrations the history ended with
// (their order, which only a snapshot shows, may differ), and the
// journal can be compacted crash-safely: write the snapshot, then drop the
// lines it covers. A crash between the two only replays lines twice.
// This needs the journal to hold every change made after the snapshot (a
// change it misses can be undone by an older line); the server sees to that.
//
// Damage. A crash during an append leaves a torn last line: one without its
// newline, or a tail of zero bytes where the file system extended the file
// before the data reached it. That tail never produced a SUCCESS (the sync
// had not returned), so replay drops it and reports where the good part ends,
// for the caller to truncate the file there. Anything else, a bad checksum or
// an unreadable line followed by more lines, is real corruption: replay stops
// with an error naming the line, and chatd refuses to start rather than guess.

public enum Journal {
    /// The line recording that `address` now holds `username`.
    public static func line(address: IPAddress, username: Username) -> [UInt8] {
        var body = Array(#"{"ip": ""#.utf8)
        body += address.description.utf8
        body += #"", "username": ""#.utf8
        body += username.text.utf8
        body += "\"".utf8
        let checksum = CRC32.checksum(body)
        return body + #", "crc32": \#(checksum)}"#.utf8 + [0x0a]
    }

    /// Why a journal cannot be replayed.
    public struct DamageError: Error, Equatable, CustomStringConvertible {
        /// The first damaged line, counting from 1.
        public let line: Int
        public init(line: Int) { self.line = line }
        public var description: String { "journal line \(line) is damaged (bad checksum or format)" }
    }

    /// What replaying a journal did.
    public struct Replay: Equatable, Sendable {
        /// Lines applied.
        public var lines = 0
        /// Bytes of whole, valid lines; the file should be cut to this length
        /// when `tornTail` is true.
        public var validLength = 0
        /// The file ended in a partial line (a crash during an append).
        public var tornTail = false

        public init(lines: Int = 0, validLength: Int = 0, tornTail: Bool = false) {
            self.lines = lines
            self.validLength = validLength
            self.tornTail = tornTail
        }
    }

    /// Applies every line of `bytes` to `registry` (see the theory above).
    public static func replay(_ bytes: [UInt8], into registry: inout Registry) throws(DamageError) -> Replay {
        var replay = Replay()
        var start = 0
        var lineNumber = 1
        while start < bytes.count {
            guard let end = bytes[start...].firstIndex(of: 0x0a) else {
                // No newline: the tail of an append that never completed.
                replay.tornTail = true
                return replay
            }
            guard let (address, name) = parse(bytes[start..<end]) else {
                if isTornTail(bytes[start...]) {
                    replay.tornTail = true
                    return replay
                }
                throw DamageError(line: lineNumber)
            }
            registry.restore(name, at: address)
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

    /// The address and name of one line without its newline, if its checksum holds.
    public static func parse(_ line: ArraySlice<UInt8>) -> (IPAddress, Username)? {
        let marker = Array(#", "crc32": "#.utf8)
        guard line.count > marker.count + 2, line.last == UInt8(ascii: "}"),
            let markerStart = line.firstRange(of: marker)?.lowerBound
        else { return nil }
        let body = line[line.startIndex..<markerStart]
        let digits = line[(markerStart + marker.count)..<(line.endIndex - 1)]
        guard !digits.isEmpty, digits.count <= 10, digits.allSatisfy({ (48...57).contains($0) }),
            let stored = UInt32(String(decoding: digits, as: UTF8.self)), stored == CRC32.checksum(body)
        else { return nil }
        // The body is written by `line(address:username:)`, so a fixed shape suffices.
        let prefix = Array(#"{"ip": ""#.utf8)
        let middle = Array(#"", "username": ""#.utf8)
        guard body.starts(with: prefix), body.last == UInt8(ascii: "\""),
            let split = body.firstRange(of: middle)
        else { return nil }
        let addressText = Array(body[(body.startIndex + prefix.count)..<split.lowerBound])
        let nameBytes = body[split.upperBound..<(body.endIndex - 1)]
        guard let address = IPAddress(utf8: addressText), let name = Username(bytes: nameBytes) else { return nil }
        return (address, name)
    }
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

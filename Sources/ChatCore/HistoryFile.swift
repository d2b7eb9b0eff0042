// The chat room's history file, beside the registry snapshot
// (registry.json -> registry.history), to and from bytes.
//
//     {"history": "chatd", "version": 1, "last_seq": 42, "crc32": 1234567890}
//     {"type": "message", "seq": 41, "time_ms": 1796205721000, "from": "alice", "text": "hi", "crc32": …}
//     {"type": "message", "seq": 42, …}
//
// The lines are the journal's message records (Journal.swift), so one
// reader serves both, each checksummed. `last_seq` is the newest seq ever
// given when the file was written; it outlives the messages themselves
// (history may hold fewer, or none), so seqs go on from it after a restart.
//
// The file is written whole and renamed into place with each snapshot,
// before the registry's file, and the journal is compacted only after
// both: its message records are then in this file. A crash between the two
// writes leaves messages in both the file and the journal, and replay adds
// only those newer than the file's (by seq). Any damage (a bad checksum, a
// line that is not a message, seqs out of order) is refused with the line's
// number: the file is never written in place, so damage is not a torn
// write, and guessing would hand out a seq twice.

public enum HistoryFile {
    public static let version = 1

    /// The file's bytes.
    public static func encode(_ messages: some Sequence<ChatMessage>, lastSeq: UInt64) -> [UInt8] {
        var body = Array(#"{"history": "chatd", "version": \#(version), "last_seq": "#.utf8)
        appendDecimal64(lastSeq, to: &body)
        var out = Journal.checksummed(body)
        for message in messages { out += Journal.line(.message(message)) }
        return out
    }

    public struct DecodingError: Error, Equatable, CustomStringConvertible {
        /// Counting from 1, the header included.
        public let line: Int
        public let reason: String
        public var description: String { "history line \(line): \(reason)" }
    }

    /// The messages, oldest first, and the newest seq ever given.
    public static func decode(_ bytes: [UInt8]) throws(DecodingError) -> (messages: [ChatMessage], lastSeq: UInt64) {
        var lines = bytes.split(separator: 0x0a, omittingEmptySubsequences: false)
        guard lines.last?.isEmpty == true else {
            throw DecodingError(line: max(lines.count, 1), reason: "the file does not end in a newline")
        }
        lines.removeLast()
        let prefix = Array(#"{"history": "chatd", "version": "#.utf8)
        guard let header = lines.first, let body = Journal.checkedBody(header), body.starts(with: prefix) else {
            throw DecodingError(line: 1, reason: "not a chatd history header, or its checksum fails")
        }
        let expected = Array(#"{"history": "chatd", "version": \#(version), "last_seq": "#.utf8)
        guard body.starts(with: expected), let lastSeq = parseDecimal64(body.dropFirst(expected.count)),
            lastSeq < 1 << 63  // as Journal's message records: anything larger is damage
        else {
            throw DecodingError(line: 1, reason: "a history of another version (written by a newer chatd?)")
        }
        var messages: [ChatMessage] = []
        messages.reserveCapacity(lines.count - 1)
        for (index, line) in lines.dropFirst().enumerated() {
            guard case .message(let message)? = Journal.parse(line) else {
                throw DecodingError(line: index + 2, reason: "damaged (bad checksum or format)")
            }
            guard message.seq > (messages.last?.seq ?? 0), message.seq <= lastSeq else {
                throw DecodingError(line: index + 2, reason: "seq \(message.seq) out of order")
            }
            messages.append(message)
        }
        return (messages, lastSeq)
    }
}

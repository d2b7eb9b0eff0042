// An independent reading of docs/PROTOCOL.md, for the fuzz harness to judge
// ChatCore's answers by.
//
// `Expectation.classify` parses a datagram the way the protocol document
// describes it (trim one "\n" or "\r\n", "CHAT/" magic, single-space fields,
// the id right after the version, at most 512 bytes), written differently
// from Protocol.swift on purpose: Arrays and `split` instead of a cursor over
// raw memory. `Model` is the registry as the document's table describes it,
// kept in plain Dictionaries. The harness runs every datagram through both
// this and the real handler and requires the same reply, the same event and
// the same registrations, so a bug in either shows up as a disagreement.

import ChatCore

/// A client as the registry must key it: an IPv4 address and its
/// IPv4-mapped IPv6 form (`::ffff:a.b.c.d`) are the same client.
struct ClientKey: Hashable, CustomStringConvertible {
    let high: UInt64
    let low: UInt64

    // Sharing ChatCore's rule rather than restating it costs the oracle no
    // independence: UsernameAndAddressTests pins the mapped form byte by byte.
    init(_ address: IPAddress) {
        (high, low) = address.ipv6Halves
    }

    var description: String { "(\(String(high, radix: 16)), \(String(low, radix: 16)))" }
}

/// What the protocol document says a datagram is.
enum Expectation: Equatable {
    case notChat
    case unsupportedVersion(id: UInt32)
    case malformed(id: UInt32)
    case invalidUsername(id: UInt32)
    case connect(id: UInt32)
    case introduce(id: UInt32, name: String)
    /// A chat room verb with its fields on the grammar: the room answers it,
    /// not the handshake's table.
    case chat

    static func classify(_ datagram: UnsafeRawBufferPointer) -> Expectation {
        var bytes = Array(datagram)
        let oversized = bytes.count > 512
        if bytes.last == UInt8(ascii: "\n") {
            bytes.removeLast()
            if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        }
        guard bytes.starts(with: "CHAT/".utf8) else { return .notChat }
        let fields = bytes.dropFirst(5).split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        let version = fields[0]
        // "right after the version": only readable when the version field is
        // there (an empty field ends the walk).
        let id = !version.isEmpty && fields.count > 1 ? readID(fields[1]) : nil
        guard version.elementsEqual("1".utf8) else { return .unsupportedVersion(id: id ?? 0) }
        guard let id else { return .malformed(id: 0) }
        guard !oversized else { return .malformed(id: id) }
        // SAY's text may hold empty fields (doubled spaces): judge the chat verbs first.
        if fields.count >= 3, isChat(Array(fields[2...])) { return .chat }
        guard !fields.contains(where: \.isEmpty) else { return .malformed(id: id) }
        if fields.count == 3, fields[2].elementsEqual("CONNECT".utf8) {
            return .connect(id: id)
        }
        if fields.count == 4, fields[2].elementsEqual("INTRODUCE".utf8) {
            let name = fields[3]
            guard isValidName(name) else { return .invalidUsername(id: id) }
            return .introduce(id: id, name: String(decoding: name, as: UTF8.self))
        }
        return .malformed(id: id)
    }

    /// The chat grammar of PROTOCOL.md, from the verb on.
    static func isChat(_ fields: [ArraySlice<UInt8>]) -> Bool {
        let verb = String(decoding: fields[0], as: UTF8.self)
        if verb == "ACK" { return fields.count == 1 || (fields.count == 2 && readNumber(fields[1]) != nil) }
        guard fields.count >= 2, isCookie(fields[1]) else { return false }
        switch verb {
        case "JOIN": return fields.count == 2 || (fields.count == 3 && fields[2].elementsEqual("BATCH".utf8))
        case "LEAVE": return fields.count == 2
        case "WHO": return fields.count == 2 || (fields.count == 3 && isValidName(fields[2]))
        case "HISTORY": return fields.count == 3 && readNumber(fields[2]) != nil
        // Any text, valid or not, is the room's to judge (INVALID_MESSAGE).
        case "SAY": return fields.count >= 3 && readNumber(fields[2]) != nil
        default: return false
        }
    }

    static func isCookie(_ field: ArraySlice<UInt8>) -> Bool {
        field.elementsEqual("0".utf8) || (field.count == 16 && field.allSatisfy { "0123456789abcdef".utf8.contains($0) })
    }

    /// 1 to 20 decimal digits that fit in 64 bits.
    static func readNumber(_ field: ArraySlice<UInt8>) -> UInt64? {
        guard (1...20).contains(field.count), field.allSatisfy({ (48...57).contains($0) }) else { return nil }
        return UInt64(String(decoding: field, as: UTF8.self))
    }

    /// 1 to 10 decimal digits, at most 4294967295.
    static func readID(_ field: ArraySlice<UInt8>) -> UInt32? {
        guard (1...10).contains(field.count), field.allSatisfy({ (48...57).contains($0) }) else { return nil }
        return UInt32(String(decoding: field, as: UTF8.self))
    }

    /// 1 to 32 of A-Z a-z 0-9 _ . -, the first a letter or digit.
    static func isValidName(_ name: some Collection<UInt8>) -> Bool {
        let alphanumerics = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)
        guard (1...32).contains(name.count), let first = name.first, alphanumerics.contains(first) else {
            return false
        }
        return name.allSatisfy { alphanumerics.contains($0) || "_.-".utf8.contains($0) }
    }
}

/// The registry as the protocol document's table describes it.
struct Model {
    var maxUsers: Int
    /// Spelling held by each client, and the clients in the registry's order
    /// (registration order, except where `remove` moved the last one).
    private(set) var names: [ClientKey: String] = [:]
    private(set) var order: [ClientKey] = []
    /// Which client holds each case-folded name.
    private var holders: [String: ClientKey] = [:]

    init(maxUsers: Int) {
        self.maxUsers = maxUsers
    }

    var count: Int { order.count }

    static func fold(_ name: String) -> String {
        String(decoding: name.utf8.map { (65...90).contains($0) ? $0 + 32 : $0 }, as: UTF8.self)
    }

    /// Takes over registrations already known to be consistent (a loaded snapshot).
    mutating func adopt(_ key: ClientKey, name: String) -> Bool {
        guard names[key] == nil, holders[Self.fold(name)] == nil else { return false }
        names[key] = name
        holders[Self.fold(name)] = key
        order.append(key)
        return true
    }

    /// A journal line applied as a fact, as Journal.swift describes replay:
    /// whoever else holds the name loses their registration, then the client
    /// holds the name (renamed in place, or added at the end).
    mutating func restore(_ key: ClientKey, name: String) {
        if let holder = holders[Self.fold(name)], holder != key { _ = remove(holder) }
        if let previous = names[key] { holders[Self.fold(previous)] = nil } else { order.append(key) }
        names[key] = name
        holders[Self.fold(name)] = key
    }

    /// Undoes a registration the way `Registry.remove` documents it: the
    /// last registration moves into the hole.
    mutating func remove(_ key: ClientKey) -> Bool {
        guard let name = names.removeValue(forKey: key), let index = order.firstIndex(of: key) else { return false }
        holders[Self.fold(name)] = nil
        order[index] = order[order.count - 1]
        order.removeLast()
        return true
    }

    /// The reply and event the document's table gives for `expectation` from
    /// `key`, applying the change it describes.
    mutating func apply(_ expectation: Expectation, from key: ClientKey) -> (Response?, RequestHandler.Event) {
        func user(_ text: String) -> Username { Username(text)! }
        switch expectation {
        case .notChat, .chat:
            return (nil, .dropped)
        case .unsupportedVersion(let id):
            return (.error(id: id, reason: .unsupportedVersion), .unsupportedVersion)
        case .malformed(let id):
            return (.error(id: id, reason: .malformed), .malformed)
        case .invalidUsername(let id):
            return (.error(id: id, reason: .invalidUsername, detail: "SYNTAX"), .invalidUsername)
        case .connect(let id):
            guard let name = names[key] else { return (.error(id: id, reason: .clientNotFound), .notFound) }
            return (.success(id: id, username: user(name)), .connected(user(name)))
        case .introduce(let id, let name):
            let success = Response.success(id: id, username: user(name))
            if let holder = holders[Self.fold(name)] {
                guard holder == key else {
                    return (.error(id: id, reason: .invalidUsername, detail: "TAKEN"), .taken(user(name)))
                }
                let previous = names[key]!
                names[key] = name
                return (success, .reintroduced(from: user(previous), to: user(name)))
            }
            if let previous = names[key] {
                holders[Self.fold(previous)] = nil
                holders[Self.fold(name)] = key
                names[key] = name
                return (success, .renamed(from: user(previous), to: user(name)))
            }
            guard order.count < maxUsers else { return (.error(id: id, reason: .serverFull), .full(user(name))) }
            names[key] = name
            holders[Self.fold(name)] = key
            order.append(key)
            return (success, .registered(user(name)))
        }
    }
}

// The registry's file format, to and from bytes.
//
//     {"version": 1, "saved_at": "2026-11-27T10:42:01Z", "users": [
//     {"ip": "127.0.0.5", "username": "alice"},
//     {"ip": "2001:db8::1", "username": "bob"}
//     ]}
//
// One user per line so that `grep`, `wc -l` and `diff` work on it. Addresses
// are in their usual text form (dotted IPv4, RFC 5952 IPv6). Neither
// addresses nor usernames can contain characters JSON must escape, so the
// writer emits them as they are. The reader accepts any valid JSON of this
// shape (any whitespace, any key order) but nothing else: an unknown version,
// a bad address or username, or a duplicate is an error naming the user's
// index, because guessing at a damaged registry could hand a name to the
// wrong client. The time of saving is passed in: the core reads no clock.

import Foundation

public enum Snapshot {
    public static let version = 1

    /// The file's bytes for `registry`, saved at `savedAt` (seconds since 1970, UTC).
    public static func encode(_ registry: Registry, savedAt: Int64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 + registry.count * 48)
        out += #"{"version": \#(version), "saved_at": "\#(rfc3339(savedAt))", "users": ["#.utf8
        var first = true
        for entry in registry.entries {
            out += first ? "\n".utf8 : ",\n".utf8
            first = false
            out += #"{"ip": ""#.utf8
            out += entry.address.description.utf8
            out += #"", "username": ""#.utf8
            out += entry.username.text.utf8
            out += #""}"#.utf8
        }
        out += "\n]}\n".utf8
        return out
    }

    /// Why a snapshot file cannot be loaded, in one line.
    public struct DecodingError: Error, Equatable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// The registrations in a snapshot file's bytes.
    public static func decode(_ bytes: [UInt8]) throws(DecodingError) -> [(address: IPAddress, username: Username)] {
        struct File: Decodable {
            var version: Int
            var saved_at: String?
            var users: [User]
        }
        struct User: Decodable {
            var ip: String
            var username: String
        }
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: Data(bytes))
        } catch let error as Swift.DecodingError {
            throw DecodingError(describe(error))
        } catch {
            throw DecodingError("not valid JSON")
        }
        guard file.version == version else {
            throw DecodingError("version \(file.version) is not supported (this chatd reads version \(version))")
        }
        var entries: [(address: IPAddress, username: Username)] = []
        entries.reserveCapacity(file.users.count)
        for (index, user) in file.users.enumerated() {
            guard let address = IPAddress(user.ip) else {
                throw DecodingError("user \(index): \"\(user.ip)\" is not an IP address")
            }
            guard let name = Username(user.username) else {
                throw DecodingError("user \(index): \"\(user.username)\" is not a valid username (\(Username.rule))")
            }
            entries.append((address, name))
        }
        return entries
    }

    /// Decodes and builds the registry in one step, as chatd does at start.
    public static func load(_ bytes: [UInt8], maxUsers: Int) throws(DecodingError) -> Registry {
        let entries = try decode(bytes)
        do {
            return try Registry(entries: entries, maxUsers: maxUsers)
        } catch {
            throw DecodingError(error.description)
        }
    }

    private static func describe(_ error: Swift.DecodingError) -> String {
        func path(_ context: Swift.DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }
            return keys.isEmpty ? "the top level" : keys.joined().drop { $0 == "." }.description
        }
        switch error {
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "not valid JSON" : "\(path(context)): \(context.debugDescription)"
        case .keyNotFound(let key, let context):
            return "\(path(context)): missing key \"\(key.stringValue)\""
        case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
            return "\(path(context)): expected \(type == Int.self ? "a number" : type == String.self ? "a string" : "\(type)")"
        @unknown default:
            return "not a chatd snapshot"
        }
    }
}

// The three places that list the config's keys agree: the parser's own
// defaults (`Config.defaults.rendered()`, every key in schema order), the
// shipped config/chatd.toml (which chatd.toml(5) is made from) and the
// README's "## Configuration" table: the same keys, in the same order, with
// the same defaults.

import ChatConfig
import Foundation
import Testing

private let repository = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

private func text(_ path: String) throws -> String {
    try String(contentsOf: repository.appendingPathComponent(path), encoding: .utf8)
}

struct KeyDefault: Equatable, CustomStringConvertible {
    let key: String
    let value: String
    var description: String { "\(key) = \(value)" }
}

/// `section.key = value` for each `key = value` line of a TOML text, in order.
func keysOfTOML(_ toml: String) -> [KeyDefault] {
    var section = ""
    var keys: [KeyDefault] = []
    for line in toml.split(separator: "\n", omittingEmptySubsequences: false) {
        if line.hasPrefix("["), line.hasSuffix("]") {
            section = String(line.dropFirst().dropLast())
        } else if !line.hasPrefix("#"), let equals = line.range(of: " = ") {
            keys.append(KeyDefault(key: "\(section).\(line[..<equals.lowerBound])", value: String(line[equals.upperBound...])))
        }
    }
    return keys
}

/// The key and default columns of the README's configuration table.
func keysOfREADME(_ readme: String) throws -> [KeyDefault] {
    let start = try #require(readme.range(of: "\n## Configuration\n"), "README has no ## Configuration")
    let rest = readme[start.upperBound...]
    let section = rest[..<(rest.range(of: "\n## ")?.lowerBound ?? rest.endIndex)]
    let rows = section.split(separator: "\n").filter { $0.hasPrefix("| `") }
    return try rows.map { row in
        let cells = row.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
        try #require(cells.count >= 3, "README table row without key and default: \(row)")
        func unquoted(_ cell: String) -> String {
            cell.hasPrefix("`") && cell.hasSuffix("`") && cell.count >= 2 ? String(cell.dropFirst().dropLast()) : cell
        }
        return KeyDefault(key: unquoted(cells[0]), value: unquoted(cells[1]))
    }
}

@Suite struct DocumentedKeysTests {
    @Test func readmeTableListsEveryKeyWithItsDefault() throws {
        let schema = keysOfTOML(Config.defaults.rendered())
        #expect(schema.count > 20)  // the parse above found the keys
        let readme = try keysOfREADME(try text("README.md"))
        let missing = schema.filter { key in !readme.contains { $0.key == key.key } }
        let unknown = readme.filter { key in !schema.contains { $0.key == key.key } }
        #expect(missing.isEmpty, "keys missing from the README's table: \(missing)")
        #expect(unknown.isEmpty, "keys in the README's table that chatd does not know: \(unknown)")
        #expect(readme == schema, "the README's table, in order, with its defaults, is not the schema's")
    }

    @Test func shippedConfigListsEveryKeyWithItsDefault() throws {
        let schema = keysOfTOML(Config.defaults.rendered())
        #expect(keysOfTOML(try text("config/chatd.toml")) == schema)
    }

    @Test func theReadmeParserSeesABrokenTable() throws {
        let readme = try text("README.md")
        let broken = readme.replacingOccurrences(of: "| `server.port` | `7447` |", with: "| `server.port` | `7448` |")
        #expect(broken != readme)
        #expect(try keysOfREADME(broken) != keysOfTOML(Config.defaults.rendered()))
        let dropped = readme.replacingOccurrences(of: "\n| `log.target` |", with: "\nnot a row `log.target` |")
        #expect(try keysOfREADME(dropped).count == keysOfREADME(readme).count - 1)
    }
}

// Turning config file text into a checked `Config`.
//
// TOMLKit (toml++ underneath) does the TOML; this file checks the resulting
// tables against the schema below and stops at the first problem, because one
// precise message is more use to an operator than a cascade. Sections are
// checked in schema order and keys in schema order within a section, so the
// message for a given file is always the same one. Unknown sections and keys
// are errors rather than being ignored: a misspelt key silently falling back
// to its default is the kind of mistake that otherwise surfaces in production.
//
// TOMLKit gives a line and column for syntax errors only; its parsed values
// carry no source position, so errors about a key's value name the key but
// not a line.

import ChatCore
import TOMLKit

extension Config {
    /// The sections and their keys, in the order they are checked and
    /// rendered.
    static let schema: [(section: String, keys: [String])] = [
        ("server", ["bind", "port"]),
        ("client", ["server", "port", "timeout_ms", "max_attempts", "backoff", "keepalive_s"]),
        ("registry", ["snapshot_path", "snapshot_interval_s", "max_users", "durability"]),
        ("limits", ["rate_per_ip", "burst_per_ip"]),
        ("chat", ["history", "presence_ttl_s", "messages_per_s", "messages_burst"]),
        ("delivery", ["timeout_ms", "backoff", "max_attempts", "window"]),
        ("control", ["socket"]),
        ("log", ["level", "target"]),
    ]

    // Public because chat's --port, --timeout-ms and --attempts override these
    // keys and must accept exactly what the file would.
    public static let portRange = 1...65535
    public static let timeoutMillisecondsRange = 1...600_000
    public static let maxAttemptsRange = 1...100
    static let backoffRange = 1.0...10.0
    // Public so that a keepalive flag of `chat talk` can accept exactly what
    // the file would.
    public static let keepaliveSecondsRange = 1...3_600
    static let snapshotIntervalSecondsRange = 1...86_400
    static let maxUsersRange = 1...100_000_000
    static let ratePerIPRange = 0.0...1_000_000.0
    static let burstPerIPRange = 0...1_000_000
    static let historyRange = 1...1_000_000
    static let presenceTTLSecondsRange = 2...86_400
    static let messagesPerSecondRange = 0.0...10_000.0
    static let messagesBurstRange = 1...100_000
    static let deliveryTimeoutMillisecondsRange = 10...600_000
    static let deliveryBackoffRange = 1.0...10.0
    static let deliveryMaxAttemptsRange = 1...100
    static let windowRange = 1...1_024
    /// sun_path holds 108 bytes, its terminating NUL included.
    public static let controlSocketPathLimit = 107

    /// Parses and checks the text of a config file. `path` is used only to
    /// name the file in errors. Missing sections and keys take their defaults.
    public static func parse(_ text: String, path: String) throws(ConfigError) -> Config {
        // TOMLKit hands the text to C as a NUL-terminated string, so a NUL
        // byte would silently end the file early; TOML forbids it anyway.
        if let nul = text.utf8.firstIndex(of: 0) {
            let before = text.utf8[..<nul]
            let line = before.count(where: { $0 == UInt8(ascii: "\n") }) + 1
            let lineStart = before.lastIndex(of: UInt8(ascii: "\n")).map { text.utf8.index(after: $0) }
            let column = text[(lineStart ?? text.startIndex)..<nul].count + 1
            throw ConfigError(
                path: path, line: line, key: nil,
                problem: "invalid TOML at column \(column): a NUL character is not allowed")
        }
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            let position = error.source.begin
            // toml++ escapes what it quotes, but the message must stay one line whatever it says.
            let message = error.description.split(whereSeparator: \.isNewline).joined(separator: " ")
            throw ConfigError(
                path: path, line: position.line, key: nil,
                problem: "invalid TOML at column \(position.column): \(message)")
        } catch {
            // TOMLKit documents only TOMLParseError; this keeps typed throws honest.
            throw ConfigError(path: path, line: nil, key: nil, problem: "invalid TOML: \(error)")
        }

        let sections = try checkedSections(root, path: path)
        let defaults = Config.defaults
        var config = defaults

        let server = sections["server"]!
        config.server.bind = try server.value("bind", default: defaults.server.bind) { value throws(ConfigError) in
            let requirement = "must be an IP address such as 0.0.0.0 or ::"
            guard let text = value.string else { throw server.error("bind", "\(requirement), got \(kind(of: value))") }
            guard let address = IPAddress(text) else { throw server.error("bind", "\(requirement), got \(quoted(text))") }
            return address
        }
        config.server.port = try server.port("port", default: defaults.server.port)

        let client = sections["client"]!
        config.client.server = try client.value("server", default: defaults.client.server) { value throws(ConfigError) in
            let requirement = "must be a host name or IP address, non-empty and without spaces"
            guard let text = value.string else { throw client.error("server", "\(requirement), got \(kind(of: value))") }
            guard !text.isEmpty, !text.contains(where: { $0.isWhitespace }) else {
                throw client.error("server", "\(requirement), got \(quoted(text))")
            }
            return text
        }
        config.client.port = try client.port("port", default: defaults.client.port)
        config.client.timeoutMilliseconds = try client.integer(
            "timeout_ms", in: timeoutMillisecondsRange, default: defaults.client.timeoutMilliseconds)
        config.client.maxAttempts = try client.integer(
            "max_attempts", in: maxAttemptsRange, default: defaults.client.maxAttempts)
        config.client.backoff = try client.number("backoff", in: backoffRange, default: defaults.client.backoff)
        config.client.keepaliveSeconds = try client.integer(
            "keepalive_s", in: keepaliveSecondsRange, default: defaults.client.keepaliveSeconds)

        let registry = sections["registry"]!
        config.registry.snapshotPath = try registry.value(
            "snapshot_path", default: defaults.registry.snapshotPath
        ) { value throws(ConfigError) in
            let requirement = "must be an absolute file path (starting with \"/\", not ending in \"/\")"
            guard let text = value.string else {
                throw registry.error("snapshot_path", "\(requirement), got \(kind(of: value))")
            }
            guard text.hasPrefix("/"), !text.hasSuffix("/") else {
                throw registry.error("snapshot_path", "\(requirement), got \(quoted(text))")
            }
            return text
        }
        config.registry.snapshotIntervalSeconds = try registry.integer(
            "snapshot_interval_s", in: snapshotIntervalSecondsRange,
            default: defaults.registry.snapshotIntervalSeconds)
        config.registry.maxUsers = try registry.integer(
            "max_users", in: maxUsersRange, default: defaults.registry.maxUsers)
        config.registry.durability = try registry.oneOf("durability", default: defaults.registry.durability)

        let limits = sections["limits"]!
        config.limits.ratePerIP = try limits.number("rate_per_ip", in: ratePerIPRange, default: defaults.limits.ratePerIP)
        config.limits.burstPerIP = try limits.integer(
            "burst_per_ip", in: burstPerIPRange, default: defaults.limits.burstPerIP)

        let chat = sections["chat"]!
        config.chat.history = try chat.integer("history", in: historyRange, default: defaults.chat.history)
        config.chat.presenceTTLSeconds = try chat.integer(
            "presence_ttl_s", in: presenceTTLSecondsRange, default: defaults.chat.presenceTTLSeconds)
        config.chat.messagesPerSecond = try chat.number(
            "messages_per_s", in: messagesPerSecondRange, default: defaults.chat.messagesPerSecond)
        config.chat.messagesBurst = try chat.integer(
            "messages_burst", in: messagesBurstRange, default: defaults.chat.messagesBurst)

        let delivery = sections["delivery"]!
        config.delivery.timeoutMilliseconds = try delivery.integer(
            "timeout_ms", in: deliveryTimeoutMillisecondsRange, default: defaults.delivery.timeoutMilliseconds)
        config.delivery.backoff = try delivery.number(
            "backoff", in: deliveryBackoffRange, default: defaults.delivery.backoff)
        config.delivery.maxAttempts = try delivery.integer(
            "max_attempts", in: deliveryMaxAttemptsRange, default: defaults.delivery.maxAttempts)
        config.delivery.window = try delivery.integer("window", in: windowRange, default: defaults.delivery.window)

        let control = sections["control"]!
        config.control.socket = try control.value("socket", default: defaults.control.socket) { value throws(ConfigError) in
            let requirement =
                "must be an absolute path of at most \(controlSocketPathLimit) bytes, or \"\" to turn the control socket off"
            guard let text = value.string else { throw control.error("socket", "\(requirement), got \(kind(of: value))") }
            guard text.isEmpty || (text.hasPrefix("/") && !text.hasSuffix("/") && text.utf8.count <= controlSocketPathLimit)
            else { throw control.error("socket", "\(requirement), got \(quoted(text))") }
            return text
        }

        let log = sections["log"]!
        config.log.level = try log.oneOf("level", default: defaults.log.level)
        config.log.target = try log.oneOf("target", default: defaults.log.target)

        return config
    }

    /// Rejects top-level entries that are not known sections, known sections
    /// that are not tables, and unknown keys within sections; returns a
    /// reader for every known section, present or not.
    private static func checkedSections(_ root: TOMLTable, path: String) throws(ConfigError) -> [String: Section] {
        let sectionNames = schema.map { "[\($0.section)]" }.joined(separator: ", ")
        // TOMLKit yields keys sorted, not in file order; sorting makes that explicit.
        for name in root.keys.sorted() where !schema.contains(where: { $0.section == name }) {
            let isTable = root[name]?.type == .table
            throw ConfigError(
                path: path, line: nil, key: displayKey(name),
                problem: isTable
                    ? "unknown section; sections are \(sectionNames)"
                    : "unknown key outside any section; keys belong in the sections \(sectionNames)")
        }

        var sections: [String: Section] = [:]
        for (name, keys) in schema {
            var table: TOMLTable?
            if let value = root[name] {
                guard let found = value.table else {
                    throw ConfigError(
                        path: path, line: nil, key: name,
                        problem: "must be a section ([\(name)] heading), got \(kind(of: value))")
                }
                for key in found.keys.sorted() where !keys.contains(key) {
                    throw ConfigError(
                        path: path, line: nil, key: "\(name).\(displayKey(key))",
                        problem: "unknown key; keys of [\(name)] are \(keys.joined(separator: ", "))")
                }
                table = found
            }
            sections[name] = Section(name: name, table: table, path: path)
        }
        return sections
    }

    /// "a string", "an integer", ...: what a wrongly typed value was.
    fileprivate static func kind(of value: any TOMLValueConvertible) -> String {
        switch value.type {
        case .string: "a string"
        case .int: "an integer"
        case .double: "a floating-point number"
        case .bool: "a boolean"
        case .array: "an array"
        case .table: "a table"
        case .date: "a date"
        case .time: "a time"
        case .dateTime: "a date-time"
        }
    }
}

/// One known section of the file (possibly absent), and typed access to its
/// keys that produces the error messages.
private struct Section {
    let name: String
    /// nil when the file has no such section, so every key takes its default.
    let table: TOMLTable?
    let path: String

    func error(_ key: String, _ problem: String) -> ConfigError {
        ConfigError(path: path, line: nil, key: "\(name).\(key)", problem: problem)
    }

    /// The key's value converted by `convert`, or `fallback` when it is absent.
    func value<T>(
        _ key: String, default fallback: T,
        _ convert: (any TOMLValueConvertible) throws(ConfigError) -> T
    ) throws(ConfigError) -> T {
        guard let value = table?[key] else { return fallback }
        return try convert(value)
    }

    func integer(_ key: String, in range: ClosedRange<Int>, default fallback: Int) throws(ConfigError) -> Int {
        try value(key, default: fallback) { value throws(ConfigError) in
            let requirement = "must be an integer from \(range.lowerBound) to \(range.upperBound)"
            // A float such as 7447.0 is refused: these are counts and sizes,
            // and accepting 0.5 by truncation would hide a mistake.
            guard let integer = value.int else {
                throw error(key, "\(requirement), got \(Config.kind(of: value))")
            }
            guard range.contains(integer) else { throw error(key, "\(requirement), got \(integer)") }
            return integer
        }
    }

    /// A finite number in `range`; an integer is accepted too (`backoff = 2` reads naturally).
    func number(_ key: String, in range: ClosedRange<Double>, default fallback: Double) throws(ConfigError) -> Double {
        try value(key, default: fallback) { value throws(ConfigError) in
            let requirement = "must be a number from \(range.lowerBound) to \(range.upperBound)"
            guard let number = value.double ?? value.int.map(Double.init) else {
                throw error(key, "\(requirement), got \(Config.kind(of: value))")
            }
            guard number.isFinite, range.contains(number) else { throw error(key, "\(requirement), got \(number)") }
            return number
        }
    }

    /// A string that must name one of `Choice`'s cases (case-sensitive).
    func oneOf<Choice: RawRepresentable & CaseIterable>(
        _ key: String, default fallback: Choice
    ) throws(ConfigError) -> Choice where Choice.RawValue == String {
        try value(key, default: fallback) { value throws(ConfigError) in
            let requirement = "must be one of \(Choice.allCases.map(\.rawValue).joined(separator: ", "))"
            guard let text = value.string else { throw error(key, "\(requirement), got \(Config.kind(of: value))") }
            guard let choice = Choice(rawValue: text) else { throw error(key, "\(requirement), got \(quoted(text))") }
            return choice
        }
    }

    func port(_ key: String, default fallback: UInt16) throws(ConfigError) -> UInt16 {
        // The range check in `integer` guarantees the conversion fits.
        UInt16(try integer(key, in: Config.portRange, default: Int(fallback)))
    }
}

/// A key as TOML would need it written: bare when it can be, quoted when it
/// holds anything else, so a stray space or dot in a key is visible.
func displayKey(_ key: String) -> String {
    let isBare =
        !key.isEmpty
        && key.unicodeScalars.allSatisfy { scalar in
            switch scalar {
            case "A"..."Z", "a"..."z", "0"..."9", "_", "-": true
            default: false
            }
        }
    return isBare ? key : quoted(key)
}

/// A TOML basic string: the text in double quotes, escaped so that it reads
/// back as the same string. Used both for rendering and to show a bad value.
func quoted(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\t": result += "\\t"
        case "\r": result += "\\r"
        case "\u{08}": result += "\\b"
        case "\u{0C}": result += "\\f"
        case "\u{00}"..."\u{1F}", "\u{7F}":
            let hex = String(scalar.value, radix: 16, uppercase: true)
            result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result + "\""
}

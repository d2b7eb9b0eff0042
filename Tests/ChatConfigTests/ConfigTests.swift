// Tests of the config file: defaults, every key read, rendering that reads
// back, and a message for each way a file can be wrong.
//
// The shipped config/chatd.toml is parsed here too, so the documented
// defaults in it cannot drift from `Config.defaults`.

import ChatConfig
import ChatCore
import Foundation
import Testing

private let path = "/etc/chatd/chatd.toml"

/// `Config.defaults` with one change applied, for expected values.
private func defaults(_ change: (inout Config) -> Void) -> Config {
    var config = Config.defaults
    change(&config)
    return config
}

/// The error `text` is rejected with; records an issue if it is accepted.
private func rejection(_ text: String) -> ConfigError? {
    do {
        let config = try Config.parse(text, path: path)
        Issue.record("accepted: \(config)")
        return nil
    } catch {
        return error
    }
}

@Suite struct DefaultsTests {
    @Test func emptyTextGivesDefaults() throws {
        #expect(try Config.parse("", path: path) == Config.defaults)
    }

    @Test func emptySectionsGiveDefaults() throws {
        let text = "[server]\n[client]\n[registry]\n[limits]\n[chat]\n[delivery]\n[log]\n"
        #expect(try Config.parse(text, path: path) == Config.defaults)
    }

    @Test func defaultsAreTheDocumentedValues() {
        let config = Config.defaults
        #expect(config.server == Config.Server(bind: .anyIPv4, port: 7447))
        #expect(config.client.server == "127.0.0.1")
        #expect(config.client.port == 7447)
        #expect(config.client.timeoutMilliseconds == 500)
        #expect(config.client.maxAttempts == 5)
        #expect(config.client.backoff == 2.0)
        #expect(config.client.keepaliveSeconds == 25)
        #expect(config.registry.snapshotPath == "/var/lib/chatd/registry.json")
        #expect(config.registry.snapshotIntervalSeconds == 30)
        #expect(config.registry.maxUsers == 1_000_000)
        #expect(config.chat.history == 2048)
        #expect(config.chat.presenceTTLSeconds == 120)
        #expect(config.chat.messagesPerSecond == 5.0)
        #expect(config.chat.messagesBurst == 20)
        #expect(config.delivery.timeoutMilliseconds == 1000)
        #expect(config.delivery.backoff == 2.0)
        #expect(config.delivery.maxAttempts == 5)
        #expect(config.delivery.window == 32)
        #expect(config.log.level == .info)
    }

    @Test func filesBesideTheSnapshotShareItsName() {
        let registry = Config.defaults.registry
        #expect(registry.journalPath == "/var/lib/chatd/registry.journal")
        #expect(registry.historyPath == "/var/lib/chatd/registry.history")
        let bare = Config.Registry(snapshotPath: "/srv/chat/state")
        #expect(bare.journalPath == "/srv/chat/state.journal")
        #expect(bare.historyPath == "/srv/chat/state.history")
    }

    @Test func shippedFileIsExactlyTheDefaults() throws {
        let file = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config/chatd.toml")
        let text = try String(contentsOf: file, encoding: .utf8)
        #expect(try Config.parse(text, path: file.path) == Config.defaults)
        // Every key is present in the shipped file, not just defaulted, and
        // in its own section: [client] and [delivery] share three key names.
        let sections: [(String, [String])] = [
            ("server", ["bind", "port"]),
            ("client", ["server", "port", "timeout_ms", "max_attempts", "backoff", "keepalive_s"]),
            ("registry", ["snapshot_path", "snapshot_interval_s", "max_users", "durability"]),
            ("limits", ["rate_per_ip", "burst_per_ip"]),
            ("chat", ["history", "presence_ttl_s", "messages_per_s", "messages_burst"]),
            ("delivery", ["timeout_ms", "backoff", "max_attempts", "window"]),
            ("log", ["level", "target"]),
        ]
        for (section, keys) in sections {
            let start = try #require(text.range(of: "\n[\(section)]\n"), "missing [\(section)]")
            let rest = text[start.upperBound...]
            let body = rest[..<(rest.range(of: "\n[")?.lowerBound ?? rest.endIndex)]
            for key in keys {
                #expect(body.contains("\n\(key) = ") || body.hasPrefix("\(key) = "), "missing \(section).\(key)")
            }
        }
    }

    @Test func logLevelsOrderBySeverity() {
        #expect(LogLevel.allCases.map(\.rawValue) == ["debug", "info", "notice", "warning", "error"])
        #expect(LogLevel.allCases.sorted() == LogLevel.allCases)
        #expect(LogLevel.debug < .info && LogLevel.warning < .error && !(LogLevel.error < .notice))
    }
}

struct OverrideCase: Sendable, CustomTestStringConvertible {
    let toml: String
    let expected: Config
    var testDescription: String { toml.replacingOccurrences(of: "\n", with: " ") }
}

@Suite struct OverrideTests {
    static let cases: [OverrideCase] = [
        .init(toml: "[server]\nbind = \"127.0.0.1\"", expected: defaults { $0.server.bind = .loopbackIPv4 }),
        .init(toml: "[server]\nbind = \"::\"", expected: defaults { $0.server.bind = .anyIPv6 }),
        .init(toml: "[server]\nport = 9000", expected: defaults { $0.server.port = 9000 }),
        .init(toml: "[client]\nserver = \"chat.example.org\"", expected: defaults { $0.client.server = "chat.example.org" }),
        .init(toml: "[client]\nport = 65535", expected: defaults { $0.client.port = 65535 }),
        .init(toml: "[client]\ntimeout_ms = 1", expected: defaults { $0.client.timeoutMilliseconds = 1 }),
        .init(toml: "[client]\nmax_attempts = 100", expected: defaults { $0.client.maxAttempts = 100 }),
        .init(toml: "[client]\nbackoff = 1.5", expected: defaults { $0.client.backoff = 1.5 }),
        .init(toml: "[client]\nbackoff = 3", expected: defaults { $0.client.backoff = 3.0 }),
        .init(toml: "[client]\nkeepalive_s = 1", expected: defaults { $0.client.keepaliveSeconds = 1 }),
        .init(toml: "[client]\nkeepalive_s = 3600", expected: defaults { $0.client.keepaliveSeconds = 3600 }),
        .init(toml: "[registry]\nsnapshot_path = \"/tmp/r.json\"", expected: defaults { $0.registry.snapshotPath = "/tmp/r.json" }),
        .init(toml: "[registry]\nsnapshot_interval_s = 86400", expected: defaults { $0.registry.snapshotIntervalSeconds = 86400 }),
        .init(toml: "[registry]\nmax_users = 1", expected: defaults { $0.registry.maxUsers = 1 }),
        .init(toml: "[log]\nlevel = \"debug\"", expected: defaults { $0.log.level = .debug }),
        .init(toml: "[log]\nlevel = \"error\"", expected: defaults { $0.log.level = .error }),
        .init(toml: "[log]\ntarget = \"journal\"", expected: defaults { $0.log.target = .journal }),
        .init(toml: "[registry]\ndurability = \"periodic\"", expected: defaults { $0.registry.durability = .periodic }),
        .init(toml: "[limits]\nrate_per_ip = 0\nburst_per_ip = 0", expected: defaults { $0.limits = .init(ratePerIP: 0, burstPerIP: 0) }),
        .init(toml: "[limits]\nrate_per_ip = 2.5", expected: defaults { $0.limits.ratePerIP = 2.5 }),
        .init(toml: "[log]\ntarget = \"stderr\"", expected: defaults { $0.log.target = .stderr }),
        // [chat] and [delivery], each key at both ends of its range.
        .init(toml: "[chat]\nhistory = 1", expected: defaults { $0.chat.history = 1 }),
        .init(toml: "[chat]\nhistory = 1000000", expected: defaults { $0.chat.history = 1_000_000 }),
        .init(toml: "[chat]\npresence_ttl_s = 2", expected: defaults { $0.chat.presenceTTLSeconds = 2 }),
        .init(toml: "[chat]\npresence_ttl_s = 86400", expected: defaults { $0.chat.presenceTTLSeconds = 86400 }),
        .init(toml: "[chat]\nmessages_per_s = 0", expected: defaults { $0.chat.messagesPerSecond = 0 }),
        .init(toml: "[chat]\nmessages_per_s = 0.5", expected: defaults { $0.chat.messagesPerSecond = 0.5 }),
        .init(toml: "[chat]\nmessages_per_s = 10000.0", expected: defaults { $0.chat.messagesPerSecond = 10_000 }),
        .init(toml: "[chat]\nmessages_burst = 1", expected: defaults { $0.chat.messagesBurst = 1 }),
        .init(toml: "[chat]\nmessages_burst = 100000", expected: defaults { $0.chat.messagesBurst = 100_000 }),
        .init(toml: "[delivery]\ntimeout_ms = 10", expected: defaults { $0.delivery.timeoutMilliseconds = 10 }),
        .init(toml: "[delivery]\ntimeout_ms = 600000", expected: defaults { $0.delivery.timeoutMilliseconds = 600_000 }),
        .init(toml: "[delivery]\nbackoff = 1.0", expected: defaults { $0.delivery.backoff = 1.0 }),
        .init(toml: "[delivery]\nbackoff = 10", expected: defaults { $0.delivery.backoff = 10.0 }),
        .init(toml: "[delivery]\nmax_attempts = 1", expected: defaults { $0.delivery.maxAttempts = 1 }),
        .init(toml: "[delivery]\nmax_attempts = 100", expected: defaults { $0.delivery.maxAttempts = 100 }),
        .init(toml: "[delivery]\nwindow = 1", expected: defaults { $0.delivery.window = 1 }),
        .init(toml: "[delivery]\nwindow = 1024", expected: defaults { $0.delivery.window = 1024 }),
        // The same key names in [client] and [delivery] stay apart.
        .init(toml: "[client]\ntimeout_ms = 7\nmax_attempts = 2\n[delivery]\ntimeout_ms = 70\nmax_attempts = 9",
              expected: defaults {
                  $0.client.timeoutMilliseconds = 7; $0.client.maxAttempts = 2
                  $0.delivery.timeoutMilliseconds = 70; $0.delivery.maxAttempts = 9
              }),
        // Dotted keys and inline tables are the same tables to TOML.
        .init(toml: "server.port = 1\nlog = { level = \"notice\" }",
              expected: defaults { $0.server.port = 1; $0.log.level = .notice }),
    ]

    @Test(arguments: cases) func keyIsRead(_ test: OverrideCase) throws {
        #expect(try Config.parse(test.toml, path: path) == test.expected)
    }

    @Test func ipv6BindListensOnBothFamilies() throws {
        let config = try Config.parse("[server]\nbind = \"::\"\nport = 7448\n", path: path)
        #expect(config.server.bind == .anyIPv6)
        #expect(!config.server.bind.isIPv4)
        #expect(config.server.port == 7448)
        #expect(config.rendered().contains("bind = \"::\"\n"))
    }
}

@Suite struct RenderingTests {
    static let nonDefault = Config(
        server: .init(bind: IPAddress("2001:db8::7")!, port: 1),
        client: .init(server: "host\"with\\odd\u{1}chars", port: 65535, timeoutMilliseconds: 600_000,
                      maxAttempts: 1, backoff: 1.1, keepaliveSeconds: 3600),
        registry: .init(snapshotPath: "/srv/chat data/é.json", snapshotIntervalSeconds: 1, maxUsers: 100_000_000),
        chat: .init(history: 1, presenceTTLSeconds: 86400, messagesPerSecond: 0.1, messagesBurst: 100_000),
        delivery: .init(timeoutMilliseconds: 10, backoff: 9.75, maxAttempts: 100, window: 1024),
        log: .init(level: .warning, target: .stderr))

    @Test(arguments: [Config.defaults, nonDefault]) func roundTrips(_ config: Config) throws {
        #expect(try Config.parse(config.rendered(), path: path) == config)
    }

    @Test func defaultsRenderEveryKeyInOrder() {
        #expect(Config.defaults.rendered() == """
            [server]
            bind = "0.0.0.0"
            port = 7447

            [client]
            server = "127.0.0.1"
            port = 7447
            timeout_ms = 500
            max_attempts = 5
            backoff = 2.0
            keepalive_s = 25

            [registry]
            snapshot_path = "/var/lib/chatd/registry.json"
            snapshot_interval_s = 30
            max_users = 1000000
            durability = "sync"

            [limits]
            rate_per_ip = 20.0
            burst_per_ip = 40

            [chat]
            history = 2048
            presence_ttl_s = 120
            messages_per_s = 5.0
            messages_burst = 20

            [delivery]
            timeout_ms = 1000
            backoff = 2.0
            max_attempts = 5
            window = 32

            [control]
            socket = "/run/chatd/control"

            [log]
            level = "info"
            target = "auto"

            """)
    }

    @Test func integerBackoffRendersAsFloat() throws {
        let config = try Config.parse("[client]\nbackoff = 4", path: path)
        #expect(config.rendered().contains("backoff = 4.0\n"))
        let chat = try Config.parse("[chat]\nmessages_per_s = 7\n[delivery]\nbackoff = 3", path: path)
        #expect(chat.rendered().contains("messages_per_s = 7.0\n"))
        #expect(chat.rendered().contains("[delivery]\ntimeout_ms = 1000\nbackoff = 3.0\n"))
    }
}

struct BadCase: Sendable, CustomTestStringConvertible {
    let toml: String
    /// The `section.key` the error must name, nil for syntax errors.
    let key: String?
    let line: Int?
    let fragment: String
    var testDescription: String { toml.replacingOccurrences(of: "\n", with: " ") }

    init(_ toml: String, key: String?, line: Int? = nil, _ fragment: String) {
        self.toml = toml
        self.key = key
        self.line = line
        self.fragment = fragment
    }
}

@Suite struct ErrorTests {
    static let cases: [BadCase] = [
        // Syntax, with the line TOMLKit reports.
        .init("[server]\nport = 7447\nbind = \n", key: nil, line: 3, "invalid TOML at column"),
        .init("[server\n", key: nil, line: 1, "invalid TOML"),
        .init("[server]\nport = 1\nport = 2\n", key: nil, line: 3, "cannot redefine"),
        .init("[log]\nlevel = \"debug\"\u{0}\n", key: nil, line: 2, "column 16: a NUL character is not allowed"),
        // Unknown names, listing the allowed ones.
        .init("[server]\nprot = 7447", key: "server.prot", "unknown key; keys of [server] are bind, port"),
        .init("[client]\ntimeout = 5", key: "client.timeout",
              "keys of [client] are server, port, timeout_ms, max_attempts, backoff, keepalive_s"),
        .init("[chat]\nhistory_size = 5", key: "chat.history_size",
              "unknown key; keys of [chat] are history, presence_ttl_s, messages_per_s, messages_burst"),
        .init("[chat]\nrate_per_ip = 5", key: "chat.rate_per_ip", "unknown key; keys of [chat] are"),
        .init("[delivery]\ntimeout_s = 1", key: "delivery.timeout_s",
              "unknown key; keys of [delivery] are timeout_ms, backoff, max_attempts, window"),
        .init("[delivery]\nkeepalive_s = 25", key: "delivery.keepalive_s", "keys of [delivery] are"),
        .init("[delivery.retry]\nx = 1", key: "delivery.retry", "unknown key; keys of [delivery] are"),
        .init("[registry]\nmax_user = 5", key: "registry.max_user", "snapshot_path, snapshot_interval_s, max_users"),
        .init("[log]\nlevels = \"info\"", key: "log.levels", "keys of [log] are level, target"),
        .init("[log]\ntarget = \"syslog\"", key: "log.target", "must be one of auto, journal, stderr, got \"syslog\""),
        .init("[registry]\ndurability = \"always\"", key: "registry.durability", "must be one of sync, periodic"),
        .init("[limits]\nrate_per_ip = -1", key: "limits.rate_per_ip", "must be a number from 0.0 to 1000000.0, got -1.0"),
        .init("[limits]\nburst_per_ip = 1.5", key: "limits.burst_per_ip", "must be an integer from 0 to 1000000"),
        .init("[server.extra]\nx = 1", key: "server.extra", "unknown key"),
        .init("[serverz]\nport = 1", key: "serverz", "unknown section; sections are [server], [client], [registry], [limits], [chat], [delivery], [control], [log]"),
        .init("port = 7447", key: "port", "unknown key outside any section"),
        .init("[log]\n\"le vel\" = 1", key: "log.\"le vel\"", "unknown key"),
        // Sections that are not tables, keys that are.
        .init("server = 7447", key: "server", "must be a section ([server] heading), got an integer"),
        .init("[[client]]\nport = 1", key: "client", "got an array"),
        .init("[server.port]\nx = 1", key: "server.port", "must be an integer from 1 to 65535, got a table"),
        // Wrong types.
        .init("[server]\nport = \"7447\"", key: "server.port", "must be an integer from 1 to 65535, got a string"),
        .init("[client]\nport = 7447.0", key: "client.port", "got a floating-point number"),
        .init("[client]\nmax_attempts = true", key: "client.max_attempts", "got a boolean"),
        .init("[client]\nbackoff = \"2\"", key: "client.backoff", "must be a number from 1.0 to 10.0, got a string"),
        .init("[client]\nserver = 127", key: "client.server", "got an integer"),
        .init("[server]\nbind = [\"::\"]", key: "server.bind", "got an array"),
        .init("[registry]\nsnapshot_path = 1979-05-27", key: "registry.snapshot_path", "got a date"),
        .init("[log]\nlevel = 1", key: "log.level", "got an integer"),
        .init("[client]\nkeepalive_s = 25.0", key: "client.keepalive_s", "must be an integer from 1 to 3600, got a floating-point number"),
        .init("[chat]\nhistory = \"2048\"", key: "chat.history", "must be an integer from 1 to 1000000, got a string"),
        .init("[chat]\npresence_ttl_s = 1.5", key: "chat.presence_ttl_s", "got a floating-point number"),
        .init("[chat]\nmessages_per_s = true", key: "chat.messages_per_s", "must be a number from 0.0 to 10000.0, got a boolean"),
        .init("[chat]\nmessages_burst = 2.5", key: "chat.messages_burst", "got a floating-point number"),
        .init("[delivery]\ntimeout_ms = \"1s\"", key: "delivery.timeout_ms", "must be an integer from 10 to 600000, got a string"),
        .init("[delivery]\nbackoff = \"2\"", key: "delivery.backoff", "must be a number from 1.0 to 10.0, got a string"),
        .init("[delivery]\nmax_attempts = 5.0", key: "delivery.max_attempts", "got a floating-point number"),
        .init("[delivery]\nwindow = [8]", key: "delivery.window", "got an array"),
        .init("chat = 1", key: "chat", "must be a section ([chat] heading), got an integer"),
        // Out of range, at each end.
        .init("[server]\nport = 0", key: "server.port", "must be an integer from 1 to 65535, got 0"),
        .init("[server]\nport = 65536", key: "server.port", "from 1 to 65535, got 65536"),
        .init("[client]\nport = -1", key: "client.port", "from 1 to 65535, got -1"),
        .init("[client]\ntimeout_ms = 0", key: "client.timeout_ms", "from 1 to 600000, got 0"),
        .init("[client]\ntimeout_ms = 600001", key: "client.timeout_ms", "from 1 to 600000, got 600001"),
        .init("[client]\nmax_attempts = 0", key: "client.max_attempts", "from 1 to 100, got 0"),
        .init("[client]\nmax_attempts = 101", key: "client.max_attempts", "from 1 to 100, got 101"),
        .init("[client]\nbackoff = 0.99", key: "client.backoff", "from 1.0 to 10.0, got 0.99"),
        .init("[client]\nbackoff = 11", key: "client.backoff", "from 1.0 to 10.0, got 11.0"),
        .init("[client]\nbackoff = inf", key: "client.backoff", "got inf"),
        .init("[client]\nbackoff = nan", key: "client.backoff", "got nan"),
        .init("[registry]\nsnapshot_interval_s = 0", key: "registry.snapshot_interval_s", "from 1 to 86400, got 0"),
        .init("[registry]\nsnapshot_interval_s = 86401", key: "registry.snapshot_interval_s", "from 1 to 86400, got 86401"),
        .init("[registry]\nmax_users = -5", key: "registry.max_users", "must be an integer from 1 to 100000000, got -5"),
        .init("[registry]\nmax_users = 100000001", key: "registry.max_users", "got 100000001"),
        .init("[client]\nkeepalive_s = 0", key: "client.keepalive_s", "must be an integer from 1 to 3600, got 0"),
        .init("[client]\nkeepalive_s = 3601", key: "client.keepalive_s", "from 1 to 3600, got 3601"),
        .init("[chat]\nhistory = 0", key: "chat.history", "must be an integer from 1 to 1000000, got 0"),
        .init("[chat]\nhistory = 1000001", key: "chat.history", "from 1 to 1000000, got 1000001"),
        .init("[chat]\npresence_ttl_s = 1", key: "chat.presence_ttl_s", "must be an integer from 2 to 86400, got 1"),
        .init("[chat]\npresence_ttl_s = 86401", key: "chat.presence_ttl_s", "from 2 to 86400, got 86401"),
        .init("[chat]\nmessages_per_s = -0.5", key: "chat.messages_per_s",
              "must be a number from 0.0 to 10000.0, got -0.5"),
        .init("[chat]\nmessages_per_s = 10000.5", key: "chat.messages_per_s", "from 0.0 to 10000.0, got 10000.5"),
        .init("[chat]\nmessages_per_s = inf", key: "chat.messages_per_s", "got inf"),
        .init("[chat]\nmessages_per_s = nan", key: "chat.messages_per_s", "got nan"),
        .init("[chat]\nmessages_burst = 0", key: "chat.messages_burst", "must be an integer from 1 to 100000, got 0"),
        .init("[chat]\nmessages_burst = 100001", key: "chat.messages_burst", "from 1 to 100000, got 100001"),
        .init("[delivery]\ntimeout_ms = 9", key: "delivery.timeout_ms", "must be an integer from 10 to 600000, got 9"),
        .init("[delivery]\ntimeout_ms = 600001", key: "delivery.timeout_ms", "from 10 to 600000, got 600001"),
        .init("[delivery]\nbackoff = 0.99", key: "delivery.backoff", "must be a number from 1.0 to 10.0, got 0.99"),
        .init("[delivery]\nbackoff = 10.01", key: "delivery.backoff", "from 1.0 to 10.0, got 10.01"),
        .init("[delivery]\nbackoff = -inf", key: "delivery.backoff", "got -inf"),
        .init("[delivery]\nmax_attempts = 0", key: "delivery.max_attempts", "must be an integer from 1 to 100, got 0"),
        .init("[delivery]\nmax_attempts = 101", key: "delivery.max_attempts", "from 1 to 100, got 101"),
        .init("[delivery]\nwindow = 0", key: "delivery.window", "must be an integer from 1 to 1024, got 0"),
        .init("[delivery]\nwindow = 1025", key: "delivery.window", "from 1 to 1024, got 1025"),
        // Strings that must have a shape.
        .init("[server]\nbind = \"localhost\"", key: "server.bind",
              "must be an IP address such as 0.0.0.0 or ::, got \"localhost\""),
        .init("[server]\nbind = \"[::1]\"", key: "server.bind", "must be an IP address"),
        .init("[server]\nbind = \"\"", key: "server.bind", "must be an IP address"),
        .init("[client]\nserver = \"\"", key: "client.server", "non-empty and without spaces, got \"\""),
        .init("[client]\nserver = \"my host\"", key: "client.server", "without spaces, got \"my host\""),
        .init("[registry]\nsnapshot_path = \"registry.json\"", key: "registry.snapshot_path",
              "must be an absolute file path"),
        .init("[registry]\nsnapshot_path = \"\"", key: "registry.snapshot_path", "absolute file path"),
        .init("[registry]\nsnapshot_path = \"/var/lib/chatd/\"", key: "registry.snapshot_path", "not ending in"),
        .init("[log]\nlevel = \"verbose\"", key: "log.level",
              "must be one of debug, info, notice, warning, error, got \"verbose\""),
        .init("[log]\nlevel = \"INFO\"", key: "log.level", "got \"INFO\""),
    ]

    @Test(arguments: cases) func isRejected(_ test: BadCase) throws {
        let error = try #require(rejection(test.toml))
        let text = error.description
        #expect(error.path == path)
        #expect(error.key == test.key)
        #expect(error.line == test.line)
        #expect(text.contains(test.fragment), "\(text)")
        if let key = test.key { #expect(text.hasPrefix("\(path): \(key): "), "\(text)") }
        if let line = test.line { #expect(text.hasPrefix("\(path):\(line): "), "\(text)") }
        #expect(!text.contains("\n"), "one line: \(text)")
    }

    @Test func descriptionLayout() {
        #expect(ConfigError(path: "/f", line: 12, key: "registry.max_users", problem: "bad").description
            == "/f:12: registry.max_users: bad")
        #expect(ConfigError(path: "/f", line: nil, key: "server.prot", problem: "bad").description
            == "/f: server.prot: bad")
        #expect(ConfigError(path: "/f", line: 3, key: nil, problem: "bad").description == "/f:3: bad")
    }

    @Test func firstProblemInSchemaOrderIsReported() throws {
        let error = try #require(rejection("[log]\nlevel = \"x\"\n[server]\nport = 0\n"))
        #expect(error.key == "server.port")
    }
}

/// `Config.load` takes its reader as an argument, so these need no files.
@Suite struct LoadTests {
    private struct Unreadable: Error, CustomStringConvertible {
        var description: String { "open(/etc/chatd/chatd.toml): Permission denied (errno 13)" }
    }

    @Test func absentDefaultFileGivesDefaults() throws {
        var asked: [String] = []
        let config = try Config.load(path: nil) { asked.append($0); return nil }
        #expect(config == Config.defaults)
        #expect(asked == [Config.defaultPath])
    }

    @Test func namedFileIsRead() throws {
        let config = try Config.load(path: "/tmp/chatd.toml") { _ in Array("[server]\nport = 9000\n".utf8) }
        #expect(config == defaults { $0.server.port = 9000 })
    }

    @Test func absentNamedFileIsAnError() throws {
        let error = try #require(throws: ConfigError.self) { try Config.load(path: "/tmp/none.toml") { _ in nil } }
        #expect(error.description == "/tmp/none.toml: no such file")
    }

    @Test func readFailureIsAnError() throws {
        let error = try #require(throws: ConfigError.self) { try Config.load(path: nil) { _ in throw Unreadable() } }
        #expect(error.description == "\(path): cannot read: open(/etc/chatd/chatd.toml): Permission denied (errno 13)")
    }

    @Test func bytesThatAreNotUTF8AreAnError() throws {
        let error = try #require(throws: ConfigError.self) { try Config.load(path: path) { _ in [0xff, 0xfe] } }
        #expect(error.description == "\(path): not UTF-8 text")
    }
}

// The effective settings written back out as TOML, for
// `chatd --check-config`: an operator sees every value chatd will use,
// including the defaults the file left out.
//
// The output is itself a valid config file that parses back to the same
// `Config`, so it can be saved and edited. Keys appear in schema order, one
// section per heading, with no comments: the documented file is
// config/chatd.toml.

extension Config {
    /// Every key of every section, as TOML. For any `Config` that `parse`
    /// accepts, parsing the result gives the same `Config` back.
    public func rendered() -> String {
        let sections: [(String, [(String, String)])] = [
            ("server", [("bind", quoted(server.bind.description)), ("port", "\(server.port)")]),
            (
                "client",
                [
                    ("server", quoted(client.server)),
                    ("port", "\(client.port)"),
                    ("timeout_ms", "\(client.timeoutMilliseconds)"),
                    ("max_attempts", "\(client.maxAttempts)"),
                    ("backoff", Self.float(client.backoff)),
                    ("keepalive_s", "\(client.keepaliveSeconds)"),
                ]
            ),
            (
                "registry",
                [
                    ("snapshot_path", quoted(registry.snapshotPath)),
                    ("snapshot_interval_s", "\(registry.snapshotIntervalSeconds)"),
                    ("max_users", "\(registry.maxUsers)"),
                    ("durability", quoted(registry.durability.rawValue)),
                ]
            ),
            ("limits", [("rate_per_ip", "\(limits.ratePerIP)"), ("burst_per_ip", "\(limits.burstPerIP)")]),
            (
                "chat",
                [
                    ("history", "\(chat.history)"),
                    ("presence_ttl_s", "\(chat.presenceTTLSeconds)"),
                    ("messages_per_s", Self.float(chat.messagesPerSecond)),
                    ("messages_burst", "\(chat.messagesBurst)"),
                ]
            ),
            (
                "delivery",
                [
                    ("timeout_ms", "\(delivery.timeoutMilliseconds)"),
                    ("backoff", Self.float(delivery.backoff)),
                    ("max_attempts", "\(delivery.maxAttempts)"),
                    ("window", "\(delivery.window)"),
                ]
            ),
            ("control", [("socket", quoted(control.socket))]),
            ("log", [("level", quoted(log.level.rawValue)), ("target", quoted(log.target.rawValue))]),
        ]
        return sections.map { name, entries in
            "[\(name)]\n" + entries.map { "\($0) = \($1)\n" }.joined()
        }.joined(separator: "\n")
    }

    /// A TOML float. Swift's description is the shortest text that reads
    /// back as the same Double and always has a "." or an exponent in it,
    /// which TOML needs to see a float; only the non-finite spellings differ.
    private static func float(_ value: Double) -> String {
        if value.isNaN { return "nan" }
        if value.isInfinite { return value < 0 ? "-inf" : "inf" }
        return value.description
    }
}

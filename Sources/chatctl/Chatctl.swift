// chatctl: the administrator's tool for a running chatd, over its control
// socket (docs/CONTROL.md). Each subcommand is one request; this file only
// gathers the socket's path, sends the request, and turns the answer into
// output and an exit status scripts can rely on.

import ArgumentParser
import ChatConfig
import ChatCore
import ChatSystem

@main
struct Chatctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatctl",
        abstract: "Look inside and correct a running chatd over its control socket.",
        discussion: """
            chatctl talks to chatd over the Unix socket of the [control] section of chatd's \
            config (default \(Config.defaults.control.socket)), which under systemd \
            chatd-control.socket holds. Only root and chatd's own user are answered.

            Exit status:
              0   success
              64  bad usage
              65  lookup, remove: the name or address is not registered
              69  chatd is not running (no socket at the path, or nobody accepting on it),
                  or it closed the connection without answering
              74  snapshot: chatd could not write the snapshot
              75  remove: chatd cannot make the change durable now (the journal failed);
                  16 clients are connected already; or chatd did not answer in time: try later
              76  chatd answered something this chatctl did not expect
              77  permission denied (run as root)
              78  reload: chatd refused the new config (the reason is printed), or
                  chatctl's own --config file is invalid

            Examples:
              chatctl status
              chatctl users --match 'al*'
              chatctl lookup alice
              chatctl lookup 192.0.2.10
              chatctl remove alice
              chatctl snapshot
              chatctl reload
              chatctl metrics > /var/lib/prometheus/node-exporter/chatd.prom
            """,
        version: ChatdVersion.string,
        subcommands: [Status.self, Users.self, Lookup.self, Remove.self, Snapshot.self, Reload.self, Metrics.self])
}

struct ConnectionOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "The control socket. Default: control.socket of --config (\(Config.defaults.control.socket)).",
        valueName: "path"))
    var socket: String?

    @Option(help: ArgumentHelp(
        "chatd's config file, read for control.socket. Default: \(Config.defaultPath), when it exists.",
        valueName: "path"))
    var config: String?
}

struct OutputOptions: ParsableArguments {
    @Flag(help: "Print the answer as JSON (docs/CONTROL.md) rather than text.")
    var json = false
}

/// How a lookup or remove names its registration.
struct TargetOptions: ParsableArguments {
    @Argument(help: ArgumentHelp(
        "A username, or an IPv4 or IPv6 address. Text that reads as an address is taken as one, unless --name says otherwise.",
        valueName: "name-or-address"))
    var target: String

    @Flag(help: "Take the argument as a username even if it reads as an address (127.0.0.5 is a valid username).")
    var name = false

    @Flag(help: "Take the argument as an address.")
    var address = false

    func validate() throws {
        if name && address { throw ValidationError("--name and --address exclude each other") }
    }
}

extension Chatctl {
    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show chatd's version, uptime, users, room, storage and traffic.",
            discussion: """
                Requests and replies per second are averages over the last minute; the dropped \
                counts are totals since chatd started.
                """)
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let answer = connection.send(.status)
            let status = answer.expectOK()
            if output.json { return printJSON(status) }
            print(Self.text(status))
        }

        /// The answer for a person: one fact per line, as `systemctl status` reads.
        static func text(_ status: ControlObject) -> String {
            func value(_ key: String) -> String {
                switch status[key] {
                case .string(let text)?: text
                case .integer(let value)?: "\(value)"
                case .number(let value)?: "\(value)"
                case .bool(let value)?: "\(value)"
                case .null?, nil: "-"
                }
            }
            var snapshot = status["last_snapshot"]?.string ?? "none yet"
            if let error = status["snapshot_error"]?.string { snapshot += " (the last attempt failed: \(error))" }
            var storage = value("durability")
            if let bytes = status["journal_bytes"]?.integer { storage += ", journal \(bytes) bytes" }
            if let error = status["journal_error"]?.string { storage += "; the journal is failing: \(error)" }
            let lines: [(String, String)] = [
                ("chatd", "\(value("version")), pid \(value("pid")), up \(duration(status["uptime_s"]?.integer ?? 0))"),
                ("listening", value("listening")),
                ("users", "\(value("users")) of at most \(value("max_users"))"),
                ("room members", value("members")),
                ("durability", storage),
                ("last snapshot", snapshot),
                ("traffic", "\(value("requests_per_s")) datagrams/s in, \(value("replies_per_s")) out (last minute)"),
                ("messages", "\(value("messages_accepted")) accepted"),
                (
                    "dropped",
                    "\(value("dropped_malformed")) malformed, \(value("dropped_rate_limited")) rate-limited, "
                        + "\(value("dropped_not_chat")) not CHAT/1, \(value("dropped_amplification")) over the amplification limit"
                ),
            ]
            return lines.map { "\(padded($0 + ":", to: 14)) \($1)" }.joined(separator: "\n")
        }
    }

    struct Users: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List registrations: address and username, one per line.",
            discussion: """
                chatd streams the list in slices between datagram batches, so listing a million users \
                does not stall it. A registration that exists for the whole listing is printed once; \
                one moved by a removal during the listing may be printed twice.
                """)
        @OptionGroup var connection: ConnectionOptions
        @Option(help: ArgumentHelp(
            "Only usernames matching this shell pattern (* any run of characters, ? one), case-insensitively.",
            valueName: "pattern"))
        var match: String?
        @OptionGroup var output: OutputOptions

        func validate() throws {
            if let match, ControlPattern(match) == nil {
                throw ValidationError("--match must be 1 to \(ControlPattern.maxLength) bytes")
            }
        }

        func run() throws {
            let answer = connection.send(.users(match: match.flatMap(ControlPattern.init)), wait: .seconds(60))
            while true {
                let line = answer.next()
                if line["ok"] != nil {
                    guard line["ok"]?.bool == true else { fail(line) }
                    return
                }
                guard let address = line["address"]?.string, let username = line["username"]?.string else {
                    finish(.protocolError, "chatd sent a users line without address and username")
                }
                if output.json { printJSON(line) } else { print("\(address) \(username)") }
            }
        }
    }

    struct Lookup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Who holds a username, or which username an address holds.",
            discussion: "Prints the address for a username, the username for an address.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var target: TargetOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let named = target.resolved
            let answer = connection.send(.lookup(named))
            let found = answer.expectOK()
            if output.json { return printJSON(found) }
            switch named {
            case .username: print(found["address"]?.string ?? "")
            case .address: print(found["username"]?.string ?? "")
            }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Free a registration, by username or by address.",
            discussion: """
                The change is as durable as an INTRODUCE: with durability "sync" it is in the journal \
                and synced before chatctl hears OK. chatd logs it with the caller's uid \
                (CHATD_ADMIN_UID). A room member at that address leaves the room.
                """)
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var target: TargetOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let answer = connection.send(.remove(target.resolved))
            let removed = answer.expectOK()
            if output.json { return printJSON(removed) }
            print("removed \(removed["username"]?.string ?? "?") (\(removed["address"]?.string ?? "?"))")
        }
    }

    struct Snapshot: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a snapshot now and wait for its outcome.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let answer = connection.send(.snapshot, wait: .seconds(600))
            let written = answer.expectOK()
            if output.json { return printJSON(written) }
            print(
                "snapshot written: \(written["users"]?.integer ?? 0) users, \(written["bytes"]?.integer ?? 0) bytes "
                    + "in \(written["duration_ms"]?.integer ?? 0) ms, saved at \(written["saved_at"]?.string ?? "?")")
        }
    }

    struct Reload: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-read chatd's config, as systemctl reload chatd does, and report the outcome.")
        @OptionGroup var connection: ConnectionOptions

        func run() throws {
            let answer = connection.send(.reload)
            _ = answer.expectOK()
            print("config reloaded")
        }
    }

    struct Metrics: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print chatd's counters and gauges in the Prometheus text format.",
            discussion: """
                For node_exporter's textfile collector (write to a temporary file, then rename it \
                into the collector's folder) or a scraper on this machine.
                """)
        @OptionGroup var connection: ConnectionOptions

        func run() throws {
            let answer = connection.send(.metrics)
            guard let text = answer.expectOK()["text"]?.string else {
                finish(.protocolError, "chatd's metrics answer has no text")
            }
            print(text, terminator: "")
        }
    }
}

/// `3d 4h`, `5h 12m`, `42s`: uptime as people read it.
func duration(_ seconds: Int64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60)
    if days > 0 { return "\(days)d \(hours)h" }
    if hours > 0 { return "\(hours)h \(minutes)m" }
    if minutes > 0 { return "\(minutes)m \(seconds % 60)s" }
    return "\(seconds)s"
}

func padded(_ text: String, to width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

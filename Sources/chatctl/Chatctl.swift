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
              69  chatd is not running (no socket at the path, or nobody accepting on it)
              74  snapshot: chatd could not write the snapshot
              75  remove: chatd cannot make the change durable now (the journal failed); try later
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
        func run() throws { throw ExitCode(70) }
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
        func run() throws { throw ExitCode(70) }
    }

    struct Lookup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Who holds a username, or which username an address holds.",
            discussion: "Prints the address for a username, the username for an address.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var target: TargetOptions
        @OptionGroup var output: OutputOptions
        func run() throws { throw ExitCode(70) }
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
        func run() throws { throw ExitCode(70) }
    }

    struct Snapshot: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a snapshot now and wait for its outcome.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        func run() throws { throw ExitCode(70) }
    }

    struct Reload: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-read chatd's config, as systemctl reload chatd does, and report the outcome.")
        @OptionGroup var connection: ConnectionOptions
        func run() throws { throw ExitCode(70) }
    }

    struct Metrics: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print chatd's counters and gauges in the Prometheus text format.",
            discussion: """
                For node_exporter's textfile collector (write to a temporary file, then rename it \
                into the collector's folder) or a scraper on this machine.
                """)
        @OptionGroup var connection: ConnectionOptions
        func run() throws { throw ExitCode(70) }
    }
}

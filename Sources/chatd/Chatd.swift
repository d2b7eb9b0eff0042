// chatd: the CHAT/1 server daemon.
//
// `run()` reads top to bottom in the order the daemon starts:
// signals blocked → config → logging → sockets → snapshot → journal replay →
// Server.run(), which sends READY=1, serves, sends STOPPING=1 and writes the
// final snapshot.
// Signals come first because the signalfd only works if SIGTERM, SIGINT and
// SIGHUP are blocked before anything could start a thread.

import ArgumentParser
import ChatConfig
import ChatCore
import ChatServer
import ChatSystem
import Logging

@main
struct Chatd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatd",
        abstract: "The CHAT/1 server: answers CONNECT and INTRODUCE over UDP and keeps the registry of usernames.",
        discussion: """
            chatd listens on the address and port of the [server] section of its config \
            file (or on the socket systemd passes it), keeps the registry of client IP address \
            -> username in memory, and saves it as a JSON snapshot every snapshot_interval_s \
            seconds when it changed, and once more when it stops. With durability "sync" (the \
            default) every change is also appended to registry.journal beside the snapshot and \
            synced before the client hears SUCCESS. chatctl reaches it over the Unix socket of \
            [control] socket (/run/chatd/control; under systemd, the one chatd-control.socket \
            passes it).

            Signals:
              SIGTERM, SIGINT  save the final snapshot and exit 0
              SIGHUP           re-read the config: log level, snapshot interval,
                               max_users, [limits], [chat] and [delivery] take
                               effect; a change of bind, port, snapshot_path,
                               durability or log target needs a restart

            Exit status: 0 after a clean stop, 1 on a config, socket, snapshot or \
            journal error (the message names the file or address and what is wrong).

            Examples:
              chatd                        run with /etc/chatd/chatd.toml
                                           (built-in defaults if it is absent)
              chatd --config ./chatd.toml  run with another config file
              chatd --check-config         check the config, print the settings
              chatd --reload 1234          reload the chatd with process id 1234
                                           and wait until it has (ExecReload=)
            """,
        version: ChatdVersion.string)

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Config file to read.",
            discussion: "Default: \(Config.defaultPath); when that file does not exist, built-in defaults apply.",
            valueName: "path"))
    var config: String?

    @Flag(name: .long, help: "Check the config file, print the effective settings and exit (0 valid, 1 invalid).")
    var checkConfig = false

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Make the chatd with this process id re-read its config, wait until it has, and exit 0 if the new config was applied or 1 if it was refused.",
            discussion: "This is the unit's ExecReload=, so that `systemctl reload chatd` returns only once the reload is done and fails when it was refused.",
            valueName: "pid"))
    var reload: Int32?

    func validate() throws {
        if let reload, reload <= 1 { throw ValidationError("--reload takes the process id of a running chatd") }
        if reload != nil && checkConfig { throw ValidationError("--reload and --check-config do not go together") }
    }

    func run() throws {
        if let reload {
            try requestReload(of: reload)
            return
        }
        let signals = try orExit("cannot set up signal handling") {
            try SignalFD(signals: [Signal.terminate, Signal.interrupt, Signal.hangup])
        }

        let settings: Config
        do {
            settings = try Config.load(path: config, read: FileSystem.readFile(atPath:))
        } catch {
            fail("\(error)")
        }
        if checkConfig {
            print(settings.rendered(), terminator: "")
            let path = config ?? Config.defaultPath
            printError(
                FileSystem.fileExists(atPath: path)
                    ? "chatd: \(path) is valid" : "chatd: \(path) does not exist; these are the built-in defaults")
            return
        }

        let serverSettings = Server.Settings(settings)
        let useJournal =
            switch serverSettings.logTarget {
            case .journal: true
            case .stderr: false
            case .auto: Systemd.standardErrorIsJournal()
            }
        LoggingSystem.bootstrap { label -> any LogHandler in
            useJournal ? JournalLogHandler(identifier: label) : StderrLogHandler.automatic(label: label)
        }
        var logger = Logger(label: "chatd")
        logger.logLevel = serverSettings.logLevel

        let passed = try orExit("cannot read the sockets systemd passed") { try Systemd.listenedSockets() }
        let (sockets, origin) = try orExit("cannot listen on \(serverSettings.listen)") {
            try listeningSockets(serverSettings.listen, passed: passed, logger: logger)
        }
        let controlListener: UnixListener?
        do {
            controlListener = try controlSocket(settings.control.socket, passed: passed)
        } catch {
            let path = settings.control.socket
            let fix =
                origin == .systemd
                ? "systemctl enable --now chatd-control.socket, then systemctl restart chatd"
                : "set [control] socket to a path chatd may create, or to \"\" for none"
            // A path the administrator chose must work; the default only
            // serves chatctl, and serving clients matters more.
            if origin == .config && path != Config.defaults.control.socket {
                fail("cannot create the control socket \(path): \(error) (\(fix))")
            }
            logger.warning("no control socket, so chatctl cannot reach this chatd", metadata: [
                "control.path": "\(path)", "error": "\(error)", "fix": "\(fix)",
            ])
            controlListener = nil
        }
        let loadStart = SystemClock.monotonicNow()
        var registry = try orExit("cannot load snapshot \(serverSettings.snapshotPath)") {
            try loadSnapshot(at: serverSettings.snapshotPath, maxUsers: serverSettings.maxUsers)
        }
        let historyPath = serverSettings.historyPath
        var history: (messages: [ChatMessage], lastSeq: UInt64) = try orExit("cannot load the chat history \(historyPath)") {
            do {
                return try FileSystem.readFile(atPath: historyPath).map(HistoryFile.decode) ?? ([], 0)
            } catch let damage as HistoryFile.DecodingError {
                fail("""
                    cannot load the chat history \(historyPath): \(damage)
                    chatd will not guess which messages the room held or which seqs it gave. Keep a copy of \
                    the file; if it cannot be repaired, move it away (mv \(shellQuoted(historyPath)) \
                    \(shellQuoted(historyPath + ".damaged"))) and start chatd: the room then starts over \
                    from what the journal holds, and seqs may be given again.
                    """)
            }
        }
        let journalPath = serverSettings.journalPath
        let (journal, recovery) = try orExit("cannot recover the journal \(journalPath)") {
            do {
                return try JournalWriter.recover(
                    at: journalPath, into: &registry, history: &history, durability: serverSettings.durability,
                    snapshotPath: serverSettings.snapshotPath, historyPath: historyPath)
            } catch let damage as Journal.DamageError {
                // Refusing is right, but the administrator needs the way out.
                switch damage.reason {
                case .damaged:
                    fail("""
                        cannot recover the journal \(journalPath): \(damage)
                        chatd will not guess which client holds which name. Keep a copy of the file, then delete \
                        line \(damage.line) (sed -i '\(damage.line)d' \(shellQuoted(journalPath))) and start chatd \
                        again; the registration on that line is lost unless the snapshot holds it.
                        """)
                case .damagedHeader:
                    let header = String(decoding: Journal.header.dropLast(), as: UTF8.self)
                    fail("""
                        cannot recover the journal \(journalPath): \(damage)
                        Its records are whole, but cannot be read without the header. Keep a copy of the file, \
                        then write the header back (sed -i \(shellQuoted("1c" + header)) \(shellQuoted(journalPath))) \
                        and start chatd again.
                        """)
                case .unknownRecordType, .unsupportedVersion:
                    // Deleting the line would throw away a change that newer chatd made.
                    fail("""
                        cannot recover the journal \(journalPath): \(damage)
                        A newer chatd wrote this journal: run that version. Going back to this one is safe only \
                        after the newer chatd stopped cleanly (its final snapshot then holds every change): then \
                        move the journal away (mv \(shellQuoted(journalPath)) \(shellQuoted(journalPath + ".newer"))) \
                        and start this chatd.
                        """)
                }
            }
        }
        if recovery.upgradedFromVersion1 {
            logger.notice("journal was version 1 (from an older chatd): folded it into the snapshot and started a version-2 journal", metadata: [
                "journal.path": "\(journalPath)", "journal.lines": "\(recovery.lines)",
                "snapshot.path": "\(serverSettings.snapshotPath)",
            ])
        }
        if recovery.folded {
            logger.notice("durability is periodic: folded the journal into the snapshot and removed it", metadata: [
                "journal.path": "\(journalPath)", "journal.lines": "\(recovery.lines)",
            ])
        }
        var seqsReserved: UInt64?
        if serverSettings.durability == .periodic {
            // Messages are pushed before they reach the disk: claim seqs
            // ahead, so that after a crash none anyone saw is given again.
            let claim = history.lastSeq + ChatService.seqReservation
            try orExit("cannot write the chat history \(historyPath)") {
                try FileSystem.writeAtomically(HistoryFile.encode(history.messages, lastSeq: claim), toPath: historyPath)
            }
            seqsReserved = claim
        }
        let loadTime = SystemClock.monotonicNow() - loadStart
        if recovery.droppedBytes > 0 {
            logger.warning("journal ended in a torn line from a crash during a write; dropped it (it was never confirmed)", metadata: [
                "journal.path": "\(serverSettings.journalPath)", "bytes": "\(recovery.droppedBytes)",
            ])
        }
        switch origin {
        case .systemd: logger.info("listening on sockets from systemd", metadata: ["sockets": "\(sockets.count)"])
        case .config: logger.info("listening on the configured address", metadata: ["listen": "\(serverSettings.listen)"])
        }

        let configPath = config
        let server = try orExit("cannot start the event loop") {
            try Server(
                settings: serverSettings, registry: registry, history: history, seqsReserved: seqsReserved,
                sockets: sockets, origin: origin,
                signals: signals,
                journal: journal, controlListener: controlListener, logger: logger,
                reloadConfig: { try Config.load(path: configPath, read: FileSystem.readFile(atPath:)) })
        }
        logger.info("started", metadata: [
            "message.id": MessageID.started, "listen": "\(server.listening)", "users": "\(registry.count)",
            "snapshot.path": "\(serverSettings.snapshotPath)", "snapshot.load_ms": "\(loadTime.nanoseconds / 1_000_000)",
            "journal.replayed": "\(recovery.lines)", "durability": "\(serverSettings.durability)",
            "config": "\(config ?? Config.defaultPath)",
        ])
        let saved = try orExit("event loop failed") { try server.run() }
        if !saved { throw ExitCode.failure }
    }

    /// Sends SIGHUP to `pid` and waits for its reload status (see ReloadStatus).
    private func requestReload(of pid: Int32) throws {
        guard let path = ReloadStatus.path else {
            // Run by hand, without a runtime directory: nothing to wait on.
            try orExit("cannot signal process \(pid)") { try Posix.kill(pid: pid, signal: Signal.hangup) }
            printError("chatd: sent SIGHUP to \(pid); its log says whether the reload was applied")
            return
        }
        let before = ReloadStatus.read(at: path)?.count ?? 0
        try orExit("cannot signal process \(pid)") { try Posix.kill(pid: pid, signal: Signal.hangup) }
        let deadline = SystemClock.monotonicNow() + .seconds(60)
        while SystemClock.monotonicNow() < deadline {
            if let status = ReloadStatus.read(at: path), status.count > before {
                guard status.applied else { fail("reload refused: \(status.reason ?? "unknown reason")") }
                return
            }
            try Posix.sleep(.milliseconds(20))
        }
        fail("chatd (process \(pid)) did not confirm the reload within 60 s")
    }

    /// The sockets systemd passed (FileDescriptorName=chat) when started by
    /// socket activation, which lets a restart lose no datagram; otherwise
    /// one socket bound where the config says.
    private func listeningSockets(
        _ listen: Endpoint, passed: [(fd: Int32, name: String)], logger: Logger
    ) throws -> ([UDPSocket], Server.SocketOrigin) {
        let ours = passed.filter { $0.name == "chat" }
        for other in passed where other.name != "chat" && other.name != "control" {
            logger.warning("ignoring a socket from systemd not named chat or control", metadata: [
                "fd": "\(other.fd)", "name": "\(other.name)",
            ])
        }
        if !ours.isEmpty {
            return (try ours.map { try UDPSocket(adopting: $0.fd) }, .systemd)
        }
        // As much room as chatd.socket's ReceiveBuffer=, for bursts and floods.
        return ([try UDPSocket(binding: listen, receiveBufferSize: 8 << 20)], .config)
    }

    /// The control socket: the one systemd passed (FileDescriptorName=control,
    /// from chatd-control.socket), else one created at `path` (mode 0600:
    /// root only), else none when `path` is empty.
    private func controlSocket(_ path: String, passed: [(fd: Int32, name: String)]) throws -> UnixListener? {
        if let socket = passed.first(where: { $0.name == "control" }) {
            return try UnixListener(adopting: socket.fd)
        }
        guard !path.isEmpty else { return nil }
        return try UnixListener(binding: path, mode: 0o600)
    }

    /// The registry in the snapshot file; an empty one (and its folder
    /// created) when there is no file yet. Any other problem is fatal and
    /// leaves the file untouched: starting empty would lose every name in it.
    private func loadSnapshot(at path: String, maxUsers: Int) throws -> Registry {
        guard let bytes = try FileSystem.readFile(atPath: path) else {
            if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
                try FileSystem.createDirectories(atPath: String(path[..<slash]), mode: 0o750)
            }
            return Registry(maxUsers: maxUsers)
        }
        if bytes.count > 8 << 20 {
            // Parsing runs at tens of MB/s; ask systemd for time so that a
            // large registry does not make the start time out.
            Systemd.notify("EXTEND_TIMEOUT_USEC=\(10_000_000 + bytes.count / 4)")
        }
        return try Snapshot.load(bytes, maxUsers: maxUsers)
    }
}

/// Runs `body`; on error prints one line "chatd: <what>: <error>" and exits 1.
private func orExit<T>(_ what: String, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch {
        fail("\(what): \(error)")
    }
}

private func fail(_ message: String) -> Never {
    printError("chatd: \(message)")
    Chatd.exit(withError: ExitCode.failure)
}

/// `text` as one word for a POSIX shell.
private func shellQuoted(_ text: String) -> String {
    let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+,:@".unicodeScalars)
    guard text.isEmpty || !text.unicodeScalars.allSatisfy(safe.contains) else { return text }
    return "'" + text.split(separator: "'", omittingEmptySubsequences: false).joined(separator: #"'\''"#) + "'"
}

private func printError(_ message: String) {
    FileSystem.writeStandardError(message + "\n")
}

// `chatd-bench chat`: a room of M members, S of them talking, against a
// CHAT/1 server (chatd, or ../shared/bench/chatfloor.c).
//
// The run is ircload.c's, over UDP: register and join every member, settle,
// send for --duration seconds (open loop at --rate, or closed loop with
// --window per sender), then wait for the deliveries to drain (at most
// --drain-s). The server's CPU time (--server-pid) is read when sending
// starts and after the drain, so the deliveries per server CPU second
// include the server's work for every message sent, and machine-wide busy
// time is read alongside, to show how much unrelated work ran meanwhile.
// The server's resident memory is read before registering, after it, and
// after joining (C7 of the chat table: members joined minus only
// registered). Finally every member LEAVEs, which tells which members the
// server had dropped.

import ArgumentParser
import ChatCore
import ChatSystem

extension AckMode: ExpressibleByArgument {}

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "A chat room under load: M members, S senders; deliveries, latency and server CPU.",
        discussion: chatFiguresHelp + """


            Examples:
              chatd-bench chat --members 100 --senders 4 --rate 1000 --duration 10 --server-pid $(pidof chatd)
              chatd-bench chat --rate 0 --window 16                   closed loop, saturation
              chatd-bench chat --ack per-push                         the basic format only
              chatd-bench chat --members 10000 --rate 10 --json       a big room
            """)

    static let chatFiguresHelp = """
        What the figures mean:
          accepted        SAYs answered SUCCESS (of those sent)
          deliveries      first receipts of this run's messages, summed over members
                          (the server pushes to every member, the sender included)
          deliveries/s    deliveries over the time from the first SAY to the end of the drain
          server CPU      with --server-pid: the server's user + system time from the
                          first SAY to the end of the drain, from /proc/PID/stat
          deliveries/server CPU s
                          the figure to compare servers by
          latency         from a SAY's send to each member's first receipt of the
                          message (p50, p99, p99.9, max; HDR histogram)
          duplicate pushes
                          push datagrams that brought a member nothing new
                          (retransmissions of pushes whose ACK was lost or late)
          retransmitted messages
                          messages a member received again
          members incomplete
                          members that ended without every accepted message
          members dropped members whose LEAVE at the end was answered NOT_JOINED
          errors          ERROR replies (RATE_LIMITED, UNAVAILABLE …), datagrams
                          that do not parse, unanswered keepalives; the first is shown
        """

    @Option(help: ArgumentHelp("Server IPv4 address or host name.", valueName: "host"))
    var server = "127.0.0.1"

    @Option(help: ArgumentHelp("Server UDP port, 1 to 65535.", valueName: "n"))
    var port = 7447

    @Option(help: ArgumentHelp("Members of the room, 2 to 60000; each a socket on its own address (mind ulimit -n).", valueName: "m"))
    var members = 100

    @Option(help: ArgumentHelp("Senders: the first S members, 1 to members - 1 (at most 1000); member S observes the closed loop.", valueName: "s"))
    var senders = 4

    @Option(help: ArgumentHelp("Messages per second in all, open loop, spread evenly over the senders; 0 for the closed loop.", valueName: "r"))
    var rate = 1000.0

    @Option(help: ArgumentHelp("Closed loop: messages in flight per sender, 1 to 1024.", valueName: "w"))
    var window = 16

    @Option(help: ArgumentHelp("Bytes of each message's text, 1 to 400 (the stamp it starts with is never cut).", valueName: "n"))
    var textBytes = 60

    @Option(help: ArgumentHelp("per-push: one ACK per push (the basic format); cumulative: ask for BATCH at JOIN, falling back to per-push when the server does not offer it.", valueName: "mode"))
    var ack = AckMode.cumulative

    @Option(help: ArgumentHelp("BATCH: milliseconds an unacknowledged push waits for more before its ACK, 1 to 900. PROTOCOL.md says 10; another value is an experiment, not the protocol.", valueName: "ms"))
    var ackDelayMs = 10

    @Option(help: ArgumentHelp("Seconds of sending, more than 0 and at most 3600.", valueName: "s"))
    var duration = 10.0

    @Option(help: ArgumentHelp("Seconds between joining and sending, 0 to 60.", valueName: "s"))
    var settle = 1.0

    @Option(name: .customLong("drain-s"), help: ArgumentHelp("At most this many seconds after sending for the deliveries to arrive, 0 to 60.", valueName: "s"))
    var drain = 5.0

    @Option(help: ArgumentHelp("Milliseconds after which a setup request is sent again and an unanswered SAY (closed loop: an unobserved one) is given up, 10 to 60000.", valueName: "ms"))
    var timeoutMs = 2000

    @Option(name: .customLong("keepalive-s"), help: ArgumentHelp("Seconds between a member's keepalive JOINs, 1 to 3600 (below the server's presence_ttl_s).", valueName: "s"))
    var keepalive = 25

    @Option(help: ArgumentHelp("Setup requests (INTRODUCE, JOIN, LEAVE) in flight at once, 1 to 10000.", valueName: "n"))
    var setupWindow = 256

    @Option(help: ArgumentHelp("Receive buffer of each member's socket, in KiB, 64 to 65536.", valueName: "kib"))
    var receiveBufferKib = 1024

    @Option(help: ArgumentHelp("Address of the first member; member k uses this + k. All must lie in 127.0.0.0/8.", valueName: "addr"))
    var sourceBase = "127.3.0.1"

    @Option(help: ArgumentHelp("Process id of the server: adds its CPU time, deliveries per server CPU second and its memory.", valueName: "pid"))
    var serverPid: Int32?

    @Flag(help: "Print one JSON object on stdout instead of the table.")
    var json = false

    @Flag(help: "No progress line on stderr.")
    var quiet = false

    func validate() throws {
        guard (2...60000).contains(members) else { throw ValidationError("--members must be 2 to 60000, got \(members)") }
        guard (1...min(1000, members - 1)).contains(senders) else {
            throw ValidationError("--senders must be 1 to \(min(1000, members - 1)) (fewer than --members), got \(senders)")
        }
        guard rate >= 0, rate <= 1_000_000 else { throw ValidationError("--rate must be 0 to 1000000 messages per second") }
        guard (1...1024).contains(window) else { throw ValidationError("--window must be 1 to 1024, got \(window)") }
        guard (1...maxTextBytes).contains(textBytes) else { throw ValidationError("--text-bytes must be 1 to \(maxTextBytes), got \(textBytes)") }
        guard duration > 0, duration <= 3600 else { throw ValidationError("--duration must be more than 0 and at most 3600 seconds") }
        guard settle >= 0, settle <= 60 else { throw ValidationError("--settle must be 0 to 60 seconds") }
        guard drain >= 0, drain <= 60 else { throw ValidationError("--drain-s must be 0 to 60 seconds") }
        guard (1...900).contains(ackDelayMs) else { throw ValidationError("--ack-delay-ms must be 1 to 900, got \(ackDelayMs)") }
        guard (10...60000).contains(timeoutMs) else { throw ValidationError("--timeout-ms must be 10 to 60000, got \(timeoutMs)") }
        guard (1...3600).contains(keepalive) else { throw ValidationError("--keepalive-s must be 1 to 3600, got \(keepalive)") }
        guard (1...10000).contains(setupWindow) else { throw ValidationError("--setup-window must be 1 to 10000, got \(setupWindow)") }
        guard (64...65536).contains(receiveBufferKib) else { throw ValidationError("--receive-buffer-kib must be 64 to 65536, got \(receiveBufferKib)") }
        guard (1...65535).contains(port) else { throw ValidationError("--port must be 1 to 65535, got \(port)") }
        guard !server.isEmpty, !server.contains(" ") else { throw ValidationError("--server must be an address or host name") }
        if let serverPid, serverPid <= 0 { throw ValidationError("--server-pid must be a process id, got \(serverPid)") }
        _ = try sources()
    }

    private func sources() throws -> [UInt32] { try ClientAddresses.sources(sourceBase, count: members, of: "members") }

    func run() throws { try runReportingErrors(measure) }

    private func measure() throws {
        let address = try UDPSocket.resolve(host: server)
        guard case .v4 = address else {
            throw BenchError("\(server) is IPv6; the members send from 127.0.0.0/8, so the server must be IPv4")
        }
        let target = Endpoint(address, port: UInt16(port))
        // Fail now, not after the run, if /proc cannot be read.
        _ = try ProcFS.cpuSeconds(pid: nil)
        _ = try ProcFS.machineBusySeconds()
        if let serverPid { _ = try ProcFS.cpuSeconds(pid: serverPid) }
        let memory = { self.serverPid.flatMap { ProcFS.residentKiB(pid: $0) } }

        let engine = try ChatEngine(
            server: target, sources: try sources(), senders: senders, rate: rate, window: window, textBytes: textBytes,
            ackMode: ack, ackDelay: .milliseconds(ackDelayMs), timeout: .milliseconds(timeoutMs), keepalive: .seconds(keepalive), setupWindow: setupWindow,
            receiveBufferBytes: receiveBufferKib * 1024)
        var line = ChatProgressLine(enabled: !quiet, terminal: Posix.isTerminal(fd: 2), duration: duration)
        let setupLimit = Duration.seconds(max(10, members / 500))
        let rssBefore = memory()
        try engine.register(within: setupLimit) { line.show($0) }
        let rssRegistered = memory()
        try engine.join(within: setupLimit) { line.show($0) }
        let rssJoined = memory()
        try engine.settle(for: .seconds(settle)) { line.show($0) }

        engine.startRecording()
        let serverStart = try serverPid.map { try ProcFS.cpuSeconds(pid: $0) }
        let benchStart = try ProcFS.cpuSeconds(pid: nil)
        let busyStart = try ProcFS.machineBusySeconds()
        let start = SystemClock.monotonicNow()
        try engine.send(for: .seconds(duration)) { line.show($0) }
        let sendingEnded = SystemClock.monotonicNow()
        let drained = try engine.drain(within: .seconds(drain)) { line.show($0) }
        let end = SystemClock.monotonicNow()
        let benchEnd = try ProcFS.cpuSeconds(pid: nil)
        let busyEnd = try ProcFS.machineBusySeconds()
        let serverEnd = try serverPid.map { try ProcFS.cpuSeconds(pid: $0) }
        let rssEnd = memory()
        // Counted before LEAVE, which stops recording.
        let counters = engine.counters
        let incomplete = engine.incompleteMembers
        let fewest = engine.fewestReceived
        try engine.leave(within: .seconds(max(3, members / 1000))) { line.show($0) }
        line.finish()

        let serverCPU = serverStart.flatMap { start in serverEnd.map { $0 - start } }
        let benchCPU = benchEnd - benchStart
        let result = ChatResult(
            server: target.description, members: members, senders: senders, rate: rate, window: window,
            textBytes: textBytes, ack: ack, batchMembers: engine.batchMembers, joinedMembers: engine.joinedMembers,
            seconds: Double((end - start).nanoseconds) / 1e9, drainSeconds: Double((end - sendingEnded).nanoseconds) / 1e9,
            drained: drained, counters: counters, histogram: engine.histogram, incompleteMembers: incomplete,
            fewestReceived: fewest, droppedMembers: engine.droppedMembers, leftMembers: engine.leftMembers,
            benchCPU: benchCPU, serverCPU: serverCPU,
            otherCPU: (busyEnd - busyStart) - benchCPU - (serverCPU ?? 0),
            rssBeforeKiB: rssBefore, rssRegisteredKiB: rssRegistered, rssJoinedKiB: rssJoined, rssEndKiB: rssEnd,
            firstError: engine.firstError)
        print(json ? result.json : result.table, terminator: json ? "\n" : "")
        if counters.deliveries == 0 {
            throw BenchError("no deliveries from \(target) (\(counters.accepted) of \(counters.saysSent) SAYs accepted)")
        }
    }
}

/// The once-a-second progress line on stderr.
struct ChatProgressLine {
    let enabled: Bool
    let terminal: Bool
    let duration: Double
    private var pending = false

    init(enabled: Bool, terminal: Bool, duration: Double) {
        self.enabled = enabled
        self.terminal = terminal
        self.duration = duration
    }

    mutating func show(_ sample: ChatProgress) {
        guard enabled else { return }
        var text: String
        switch sample.phase {
        case .registering, .joining, .leaving:
            text = "\(sample.phase.rawValue): \(sample.done)/\(sample.members) members"
        case .settling:
            text = "settling"
        case .sending, .draining:
            text = sample.phase == .sending ? "sending \(fixed(sample.elapsed, 0))/\(fixed(duration, 0)) s: " : "draining: "
            text += "\(sample.deliveriesLastSecond) deliveries/s, accepted \(sample.counters.accepted), errors \(sample.counters.errors)"
        }
        text = "chatd-bench: " + text
        if terminal {
            FileSystem.writeStandardError("\r" + text + "\u{1B}[K")
            pending = true
        } else {
            FileSystem.writeStandardError(text + "\n")
        }
    }

    mutating func finish() {
        if pending { FileSystem.writeStandardError("\n") }
        pending = false
    }
}

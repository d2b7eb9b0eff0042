// `chatd-bench run`: simulate N clients against a server and report what it did.
//
// Options are checked in validate(), before any socket is opened. The run is
// registration → warm-up → measured phase; CPU times of the server (with
// --server-pid) and of the generator are read from /proc just around the
// measured phase. A progress line goes to stderr once a second: rewritten in
// place with \r on a terminal, one plain line per second otherwise.

import ArgumentParser
import ChatCore
import ChatSystem

extension Mix: ExpressibleByArgument {}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Simulate many clients against a server and print throughput, latency and losses (the default).",
        discussion: Bench.figuresHelp + """


            Examples:
              chatd-bench run --clients 64 --window 4 --mix connect --duration 5
              chatd-bench run --mix mixed --server-pid 1234 --json
              chatd-bench run --clients 1 --window 1 --duration 10
            """)

    @Option(help: ArgumentHelp("Server address or host name (IPv4: the clients send from 127.0.0.0/8).", valueName: "host"))
    var server = "127.0.0.1"

    @Option(help: ArgumentHelp("Server UDP port, 1 to 65535.", valueName: "n"))
    var port = 7447

    @Option(help: ArgumentHelp("Simulated clients, 1 to 60000; each is a socket with its own source address (mind ulimit -n).", valueName: "n"))
    var clients = 64

    @Option(help: ArgumentHelp("Requests each client keeps in flight, 1 to 64.", valueName: "n"))
    var window = 4

    @Option(help: ArgumentHelp("What the clients ask: connect, mixed, introduce or miss (see above).", valueName: "mix"))
    var mix = Mix.connect

    @Option(help: ArgumentHelp("Seconds to measure, more than 0 and at most 3600.", valueName: "s"))
    var duration = 5.0

    @Option(help: ArgumentHelp("Seconds of load before measuring (not recorded), 0 to 60.", valueName: "s"))
    var warmup = 0.5

    @Option(help: ArgumentHelp("Milliseconds without a reply after which a request counts as lost and its slot sends a new one, 1 to 60000.", valueName: "ms"))
    var timeoutMs = 1000

    @Option(help: ArgumentHelp("Source address of the first client; client k uses this + k. All must lie in 127.0.0.0/8.", valueName: "addr"))
    var sourceBase = "127.1.0.1"

    @Option(help: ArgumentHelp("Process id of the server: adds its CPU time over the measured phase and replies per server CPU second.", valueName: "pid"))
    var serverPid: Int32?

    @Flag(help: "Print one JSON object on stdout instead of the table.")
    var json = false

    @Flag(help: "No progress line on stderr.")
    var quiet = false

    func validate() throws {
        guard (1...60000).contains(clients) else { throw ValidationError("--clients must be 1 to 60000, got \(clients)") }
        guard (1...64).contains(window) else { throw ValidationError("--window must be 1 to 64, got \(window)") }
        guard duration > 0, duration <= 3600 else { throw ValidationError("--duration must be more than 0 and at most 3600 seconds") }
        guard warmup >= 0, warmup <= 60 else { throw ValidationError("--warmup must be 0 to 60 seconds") }
        guard (1...60000).contains(timeoutMs) else { throw ValidationError("--timeout-ms must be 1 to 60000, got \(timeoutMs)") }
        guard (1...65535).contains(port) else { throw ValidationError("--port must be 1 to 65535, got \(port)") }
        guard !server.isEmpty, !server.contains(" ") else { throw ValidationError("--server must be an address or host name") }
        if let serverPid, serverPid <= 0 { throw ValidationError("--server-pid must be a process id, got \(serverPid)") }
        _ = try sources()
    }

    private func sources() throws -> [UInt32] { try ClientAddresses.sources(sourceBase, count: clients, of: "clients") }

    func run() throws { try runReportingErrors(measure) }

    private func measure() throws {
        let address = try UDPSocket.resolve(host: server)
        guard case .v4 = address else {
            throw BenchError("\(server) is IPv6; the simulated clients send from 127.0.0.0/8, so the server must be IPv4")
        }
        let target = Endpoint(address, port: UInt16(port))
        // Fail now, not after the run, if /proc cannot be read.
        _ = try ProcFS.cpuSeconds(pid: nil)
        if let serverPid { _ = try ProcFS.cpuSeconds(pid: serverPid) }

        let engine = try LoadEngine(
            server: target, sources: try sources(), window: window, mix: mix, timeout: .milliseconds(timeoutMs))
        var line = ProgressLine(enabled: !quiet, terminal: Posix.isTerminal(fd: 2), duration: duration)
        if mix != .miss {
            try engine.register(within: .seconds(max(10, clients / 1000))) { line.show($0) }
        }
        try engine.pump(for: .seconds(warmup), phase: .warmingUp) { line.show($0) }

        engine.startRecording()
        let serverStart = try serverPid.map { try ProcFS.cpuSeconds(pid: $0) }
        let benchStart = try ProcFS.cpuSeconds(pid: nil)
        let start = SystemClock.monotonicNow()
        try engine.pump(for: .seconds(duration), phase: .measuring) { line.show($0) }
        let elapsed = SystemClock.monotonicNow() - start
        let benchEnd = try ProcFS.cpuSeconds(pid: nil)
        let serverEnd = try serverPid.map { try ProcFS.cpuSeconds(pid: $0) }
        engine.stopRecording()
        line.finish()

        let result = RunResult(
            mix: mix, clients: clients, window: window, server: target.description,
            seconds: Double(elapsed.nanoseconds) / 1e9, counters: engine.counters, histogram: engine.histogram,
            benchCPU: benchEnd - benchStart,
            serverCPU: serverStart.flatMap { start in serverEnd.map { $0 - start } },
            firstError: engine.firstError)
        print(json ? result.json : result.table, terminator: json ? "\n" : "")
        if result.counters.received == 0 {
            throw BenchError("no replies in the measured phase from \(target)")
        }
    }
}

/// The once-a-second progress line on stderr.
struct ProgressLine {
    let enabled: Bool
    /// On a terminal the line is rewritten in place; otherwise each is a line of its own.
    let terminal: Bool
    let duration: Double
    private var pending = false

    init(enabled: Bool, terminal: Bool, duration: Double) {
        self.enabled = enabled
        self.terminal = terminal
        self.duration = duration
    }

    mutating func show(_ sample: ProgressSample) {
        guard enabled else { return }
        var text: String
        switch sample.phase {
        case .registering:
            text = "registering: \(sample.registered)/\(sample.clients) clients"
        case .warmingUp:
            text = "warming up: \(sample.repliesLastSecond) replies/s"
        case .measuring:
            text = "measuring \(fixed(sample.elapsed, 0))/\(fixed(duration, 0)) s: \(sample.repliesLastSecond) replies/s, "
                + "lost \(sample.counters.lost), errors \(sample.counters.errors)"
        }
        text = "chatd-bench: " + text
        if terminal {
            // Clear to the end of the line, in case the previous one was longer.
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

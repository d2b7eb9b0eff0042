// `chatd-bench flood`: garbage from thousands of addresses while one real
// client keeps asking, to show the server stays usable and bounded.
//
// A background thread sends --datagrams datagrams, --per-source from each
// source address before moving on to the next (127.200.0.1, 127.200.0.2, …),
// so the server sees thousands of addresses as a forged flood would show it:
// random bytes, CHAT/1 prefixes followed by junk, bad versions, oversized
// datagrams and INTRODUCEs of bad names. Meanwhile the main thread is a
// legitimate client: it registers once, then sends a CONNECT every
// --probe-interval-ms and times each reply. The result: the client's round
// trips (p50, p99, max), its losses, and, with --server-pid, the server's
// peak memory (VmHWM) and resident memory at the end.

import ArgumentParser
import ChatCore
import ChatSystem
import Histogram
import Synchronization

struct FloodCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flood",
        abstract: "Flood a server with bad datagrams from many addresses while timing a real client.",
        discussion: """
            Exit status 0 when the probe client's p99 round trip is under --max-p99-ms and
            it lost at most --max-lost requests, 1 otherwise.

            Example:
              chatd-bench flood --port 7447 --server-pid $(pidof chatd)
            """)

    @Option(help: ArgumentHelp("Server IPv4 address.", valueName: "addr"))
    var server = "127.0.0.1"

    @Option(help: ArgumentHelp("Server UDP port, 1 to 65535.", valueName: "n"))
    var port = 7447

    @Option(help: ArgumentHelp("Bad datagrams to send in all, 1 to 100000000.", valueName: "n"))
    var datagrams = 1_000_000

    @Option(help: ArgumentHelp("Datagrams from each source address before the next, 1 to 100000.", valueName: "n"))
    var perSource = 200

    @Option(help: ArgumentHelp("First flood source address; later ones count up from it.", valueName: "addr"))
    var sourceBase = "127.200.0.1"

    @Option(help: ArgumentHelp("The real client's address.", valueName: "addr"))
    var probeSource = "127.0.0.90"

    @Option(help: ArgumentHelp("Milliseconds between the real client's requests, 1 to 1000 (keep it within the server's per-address rate limit).", valueName: "ms"))
    var probeIntervalMs = 100

    @Option(help: ArgumentHelp("A probe request unanswered this long counts as lost, 1 to 10000.", valueName: "ms"))
    var timeoutMs = 1000

    @Option(help: ArgumentHelp("The server's process id, to report its memory.", valueName: "pid"))
    var serverPid: Int32?

    @Option(help: ArgumentHelp("Pass when the probe's p99 is under this, in milliseconds.", valueName: "ms"))
    var maxP99Ms = 50.0

    @Option(help: ArgumentHelp("Pass when the probe lost at most this many requests.", valueName: "n"))
    var maxLost = 0

    @Flag(help: "Print one JSON object instead of a summary.")
    var json = false

    func validate() throws {
        guard IPAddress(server)?.isIPv4 == true else { throw ValidationError("--server must be an IPv4 address") }
        guard IPAddress(probeSource)?.isIPv4 == true else { throw ValidationError("--probe-source must be an IPv4 address") }
        guard (1...65535).contains(port) else { throw ValidationError("--port must be 1 to 65535") }
        guard (1...100_000_000).contains(datagrams) else { throw ValidationError("--datagrams must be 1 to 100000000") }
        guard (1...100_000).contains(perSource) else { throw ValidationError("--per-source must be 1 to 100000") }
        // Every source is bound on this machine, so all must lie in 127.0.0.0/8
        // (Flooder skips .0 and .255: about one address in 128 more).
        let sources = (datagrams + perSource - 1) / perSource
        guard case .v4(let base)? = IPAddress(sourceBase), base >> 24 == 127, base & 0x00ff_ffff != 0,
            UInt64(base) + UInt64(sources + sources / 127 + 2) <= UInt64(ClientAddresses.lastLoopback)
        else {
            throw ValidationError("--source-base must be an IPv4 address in 127.0.0.0/8 with room for \(sources) sources after it, got \(sourceBase)")
        }
        guard (1...1000).contains(probeIntervalMs) else { throw ValidationError("--probe-interval-ms must be 1 to 1000") }
        guard (1...10_000).contains(timeoutMs) else { throw ValidationError("--timeout-ms must be 1 to 10000") }
    }

    func run() throws {
        let target = Endpoint(IPAddress(server)!, port: UInt16(port))
        guard case .v4(let base) = IPAddress(sourceBase)! else { return }
        let probe = try UDPSocket(binding: Endpoint(IPAddress(probeSource)!, port: 0))
        try register(probe, target: target)

        let done = DoneFlag()
        let flooder = try BackgroundThread()
        let (total, perSource) = (datagrams, perSource)
        let start = SystemClock.monotonicNow()
        flooder.run {
            done.set(flooded: Flooder.send(total, perSource: perSource, from: base, to: target))
        }

        var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var sent = 0
        var lost = 0
        var id: UInt32 = 1_000_000_000
        var request = [UInt8](repeating: 0, count: 64)
        var buffer = [UInt8](repeating: 0, count: 1024)
        while !done.isSet {
            id &+= 1
            let length = request.withUnsafeMutableBytes { Wire.writeRequest(id: id, introducing: nil, into: $0) }
            let sentAt = SystemClock.monotonicNow()
            _ = try request.withUnsafeBytes { try probe.send(UnsafeRawBufferPointer(rebasing: $0[..<length]), to: target) }
            sent += 1
            let deadline = sentAt + .milliseconds(timeoutMs)
            var answered = false
            while !answered, SystemClock.monotonicNow() < deadline {
                let left = deadline - SystemClock.monotonicNow()
                guard try probe.waitReadable(timeoutMilliseconds: Int32(max(1, left.nanoseconds / 1_000_000))) else { break }
                while case .processed(let (count, _)) = try buffer.withUnsafeMutableBytes({ try probe.receive(into: $0) }) {
                    let header = buffer.withUnsafeBytes { Wire.readReplyHeader(UnsafeRawBufferPointer(rebasing: $0[..<min(count, $0.count)])) }
                    if header?.id == id {
                        histogram.record(UInt64((SystemClock.monotonicNow() - sentAt).nanoseconds / 1000))
                        answered = true
                    }
                }
            }
            if !answered { lost += 1 }
            try Posix.sleep(.milliseconds(probeIntervalMs))
        }
        let seconds = Double((SystemClock.monotonicNow() - start).nanoseconds) / 1e9
        let memory = serverPid.flatMap { pid in try? FileSystem.readFile(atPath: "/proc/\(pid)/status") }
        let peakKiB = memory.flatMap { ProcFS.field("VmHWM:", statusText: $0) }
        let residentKiB = memory.flatMap { ProcFS.residentKiB(statusText: $0) }
        let p50 = Double(histogram.valueAtPercentile(50)) / 1000
        let p99 = Double(histogram.valueAtPercentile(99)) / 1000
        let max = Double(histogram.max) / 1000
        let flooded = done.flooded
        let pass = p99 < maxP99Ms && lost <= maxLost && flooded == total
        if json {
            print(
                #"{"flood_datagrams": \#(flooded), "flood_seconds": \#(seconds), "sources": \#((total + perSource - 1) / perSource), "probe_sent": \#(sent), "probe_lost": \#(lost), "probe_p50_ms": \#(p50), "probe_p99_ms": \#(p99), "probe_max_ms": \#(max), "server_peak_kib": \#(peakKiB.map(String.init) ?? "null"), "server_rss_kib": \#(residentKiB.map(String.init) ?? "null"), "pass": \#(pass)}"#)
        } else {
            print("flood: \(flooded) of \(total) datagrams from \((total + perSource - 1) / perSource) addresses in \(fixed(seconds, 2)) s")
            print("probe: \(sent) CONNECTs, \(lost) lost, round trip p50 \(fixed(p50, 2)) ms, p99 \(fixed(p99, 2)) ms, max \(fixed(max, 2)) ms")
            if let peakKiB, let residentKiB { print("server: peak memory \(peakKiB) KiB, resident at the end \(residentKiB) KiB") }
            print(pass ? "PASS" : "FAIL: every datagram sent, p99 under \(maxP99Ms) ms and at most \(maxLost) lost")
        }
        if !pass { throw ExitCode.failure }
    }

    /// INTRODUCE, retried, so that the probe's CONNECTs are answered SUCCESS.
    private func register(_ probe: UDPSocket, target: Endpoint) throws {
        var request = [UInt8](repeating: 0, count: 64)
        let length = request.withUnsafeMutableBytes {
            Wire.writeRequest(id: 1_000_000_000, introducing: Array("probe".utf8), into: $0)
        }
        for _ in 0..<20 {
            _ = try request.withUnsafeBytes { try probe.send(UnsafeRawBufferPointer(rebasing: $0[..<length]), to: target) }
            if try probe.waitReadable(timeoutMilliseconds: 250), case .processed = try probe.receive() { return }
        }
        throw BenchError("the server at \(target) did not answer the probe's INTRODUCE")
    }
}

/// Set once by the flooding thread, read by the main one.
private final class DoneFlag: Sendable {
    private let value = Atomic<Bool>(false)
    private let count = Atomic<Int>(0)
    func set(flooded: Int) {
        count.store(flooded, ordering: .relaxed)
        value.store(true, ordering: .releasing)
    }
    var isSet: Bool { value.load(ordering: .acquiring) }
    /// Datagrams the flooder sent; read after `isSet`.
    var flooded: Int { count.load(ordering: .relaxed) }
}

/// The flooding thread's work.
private enum Flooder {
    /// Returns how many datagrams went out: fewer than `total` only when a
    /// source address cannot be bound, which ends the flood.
    static func send(_ total: Int, perSource: Int, from base: UInt32, to target: Endpoint) -> Int {
        var random = SystemRandomNumberGenerator()
        var sent = 0
        var source: UInt32 = 0
        var datagram = [UInt8]()
        datagram.reserveCapacity(2048)
        while sent < total {
            // Skip .0 and .255 so every source is an ordinary host address.
            var address = base &+ source
            while address & 0xff == 0 || address & 0xff == 255 {
                source += 1
                address = base &+ source
            }
            source += 1
            guard let socket = try? UDPSocket(binding: Endpoint(.v4(address), port: 0)) else { return sent }
            for _ in 0..<min(perSource, total - sent) {
                makeGarbage(into: &datagram, using: &random)
                // A full buffer drops the datagram, as the network would.
                _ = try? socket.send(datagram, to: target)
                sent += 1
            }
            try? socket.close()
        }
        return sent
    }

    private static let prefixes: [[UInt8]] = [
        [], Array("CHAT/1 ".utf8), Array("CHAT/1 17 ".utf8), Array("CHAT/9 3 CONNECT".utf8),
        // "-" first: a name that breaks the rule, whatever random bytes follow.
        Array("CHAT/1 5 INTRODUCE -".utf8), Array("CHAT/".utf8),
    ]

    private static func makeGarbage(into datagram: inout [UInt8], using random: inout SystemRandomNumberGenerator) {
        datagram.removeAll(keepingCapacity: true)
        datagram += prefixes[Int.random(in: 0..<prefixes.count, using: &random)]
        let length = Int.random(in: 0...100, using: &random) == 0 ? 600 : Int.random(in: 0...40, using: &random)
        for _ in 0..<length { datagram.append(UInt8.random(in: 0...255, using: &random)) }
    }
}

// chatd-bench: the load generator and benchmark tool of chatd (think redis-benchmark).
//
// `run` (the default) simulates many CHAT/1 clients against a server and
// prints throughput, round-trip latency and losses; `snapshot` writes a
// registry snapshot of N made-up users for chatd to start with; `wait` waits
// for a server to answer its first request (how bench/run.sh times a start);
// `flood` sends garbage from thousands of addresses while timing a real client;
// `selftest` checks the tool's own pure pieces. This file holds only the
// command tree and its help; each subcommand has a file of its own.

import ArgumentParser
import ChatCore
import ChatSystem

@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatd-bench",
        abstract: "Load generator and benchmark for CHAT/1 servers (chatd, or the C refserver).",
        discussion: """
            `chatd-bench [run] [options]` registers every simulated client (one INTRODUCE each), \
            warms up briefly, then measures for --duration seconds and prints one summary. \
            See `chatd-bench run --help` for the options.

            \(figuresHelp)

            Examples:
              chatd-bench                          64 clients × 4 in flight, CONNECT, 5 s
              chatd-bench --mix mixed --server-pid $(pidof chatd)
              chatd-bench --clients 1 --window 1   unloaded round trip
              chatd-bench --mix miss --source-base 127.9.0.1
                                                   clients the server never saw
              chatd-bench snapshot 1000000 /tmp/registry.json
                                                   a snapshot of 1M users
              chatd-bench wait --port 7447         time until a server answers
              chatd-bench flood --port 7447 --server-pid $(pidof chatd)
                                                   1M bad datagrams vs one real client

            `make bench` runs the whole suite against chatd and the C refserver; \
            docs/PERFORMANCE.md explains it.
            """,
        subcommands: [RunCommand.self, ChatCommand.self, SnapshotCommand.self, WaitCommand.self, FloodCommand.self, SelfTestCommand.self],
        defaultSubcommand: RunCommand.self)

    static let figuresHelp = """
        What the figures mean:
          replies/s       replies received in the measured phase, per second
          latency         round trip of each answered request (send to its
                          reply): p50, p99, p99.9 and max from an HDR
                          histogram, in microseconds
          sent            requests sent in the measured phase
          received        replies matched to a request in flight
          lost            requests unanswered after --timeout-ms (the slot
                          then sends a new one); sent - received - lost is
                          what was still in flight at the end
          errors          replies the mix does not expect (CLIENT_NOT_FOUND
                          in the connect mix, TAKEN, SERVER_FULL …) and
                          replies that do not parse
          server CPU      with --server-pid: the server's user + system time
                          over the measured phase, from /proc/PID/stat
          replies/server CPU s
                          replies divided by that: the figure to compare
                          servers by when generator and server share cores
          bench CPU       what the generator itself used

        Mixes (loadgen.c's -m modes, so both generators measure the same work):
          connect    CONNECT from registered clients: every one a registry hit
          mixed      90 % CONNECT hits, 10 % INTRODUCE (ids ending in 0), each
                     renaming the client between its two names u<n> and u<n>b
          introduce  every request such a rename
          miss       CONNECT from clients that never registered, answered
                     CLIENT_NOT_FOUND (use a --source-base no run registered)

        Client k sends from --source-base + k and registers u<n>, n being its
        address's offset from 127.1.0.1: loadgen.c's names, so that both
        generators can take turns against one server.
        """
}

extension ClientAddresses {
    /// `--source-base` and a count of sockets (`noun`: what they are) as
    /// addresses, or the option's error.
    static func sources(_ sourceBase: String, count: Int, of noun: String) throws -> [UInt32] {
        guard case .v4(let base)? = IPAddress(sourceBase) else {
            throw ValidationError("--source-base must be an IPv4 address in 127.0.0.0/8, got \(sourceBase)")
        }
        guard let addresses = range(from: base, count: count) else {
            throw ValidationError(
                "--source-base \(sourceBase) with \(count) \(noun) leaves 127.0.0.0/8 (the last address would be \(IPAddress.v4(base &+ UInt32(count - 1))))")
        }
        return addresses
    }
}

/// Runs a measurement; the errors of the system and of the run end the
/// program with their message.
func runReportingErrors(_ measure: () throws -> Void) throws {
    do {
        try measure()
    } catch let error as BenchError {
        fail(error.description)
    } catch let error as ResolutionError {
        fail(error.description)
    } catch let error as SystemError where error.errno == 99 {  // EADDRNOTAVAIL
        fail("\(error): the source addresses must be local (127.0.0.0/8 is, on Linux)")
    } catch let error as SystemError {
        fail(error.description)
    }
}

/// Prints `chatd-bench: <message>` on stderr and exits 1.
func fail(_ message: String) -> Never {
    FileSystem.writeStandardError("chatd-bench: \(message)\n")
    Bench.exit(withError: ExitCode.failure)
}

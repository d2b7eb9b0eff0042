// `chatd-bench snapshot N FILE`: a valid chatd snapshot of N made-up users.
//
// The benchmark needs chatd holding a million users without a million
// INTRODUCEs from a million addresses, so it starts chatd on a snapshot made
// here. User k (from 1) gets the name u<k> padded to 7 digits (u0000001) and
// the address 10.0.0.0 + k, or, for one user in --ipv6-every, 2001:db8::k
// (documentation prefixes, and never in 127.0.0.0/8, so they cannot collide
// with the simulated clients or their names u<n>). The file is built the way
// chatd builds it, with ChatCore's Registry and Snapshot.encode, and written
// with FileSystem.writeAtomically.

import ArgumentParser
import ChatCore
import ChatSystem

struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Write a chatd snapshot file of N made-up users.",
        discussion: """
            User k (1 … N) is u<k> with k padded to 7 digits (u0000001), at the IPv4 address \
            10.0.0.0 + k, or at 2001:db8::k (hexadecimal) for every --ipv6-every-th user. \
            None is in 127.0.0.0/8, so the simulated clients of `chatd-bench run` never collide \
            with them. Start chatd with registry.max_users above N plus the clients, or the \
            clients' registration is refused with SERVER_FULL.

            Example:
              chatd-bench snapshot 1000000 /tmp/bench/registry.json
            """)

    @Argument(help: ArgumentHelp("How many users, 0 to 100000000.", valueName: "n"))
    var users: Int

    @Argument(help: ArgumentHelp("The snapshot file to write (replaced atomically).", valueName: "file"))
    var file: String

    @Option(help: ArgumentHelp("One user in this many gets an IPv6 address; 0 for none.", valueName: "n"))
    var ipv6Every = 16

    func validate() throws {
        guard (0...100_000_000).contains(users) else { throw ValidationError("N must be 0 to 100000000, got \(users)") }
        guard !file.isEmpty, !file.hasSuffix("/") else { throw ValidationError("FILE must name a file") }
        guard ipv6Every >= 0 else { throw ValidationError("--ipv6-every must be 0 or more, got \(ipv6Every)") }
    }

    func run() throws {
        let start = SystemClock.monotonicNow()
        var entries: [(address: IPAddress, username: Username)] = []
        entries.reserveCapacity(users)
        if users > 0 {
            for k in 1...users {
                let address: IPAddress =
                    ipv6Every > 0 && k % ipv6Every == 0
                    ? .v6(high: 0x2001_0db8_0000_0000, low: UInt64(k)) : .v4(0x0a00_0000 + UInt32(k))
                let digits = String(k)
                let name = "u" + String(repeating: "0", count: max(0, 7 - digits.count)) + digits
                entries.append((address, Username(name)!))
            }
        }
        let registry: Registry
        do {
            registry = try Registry(entries: entries, maxUsers: max(users, 1))
        } catch {
            fail("made-up users collide (a bug): \(error)")
        }
        entries = []
        let bytes = Snapshot.encode(registry, savedAt: SystemClock.wallSeconds().seconds)
        do {
            try FileSystem.writeAtomically(bytes, toPath: file, mode: 0o644)
        } catch {
            fail("cannot write \(file): \(error)")
        }
        let seconds = Double((SystemClock.monotonicNow() - start).nanoseconds) / 1e9
        print("wrote \(users) users (\(fixed(Double(bytes.count) / 1_000_000, 1)) MB) to \(file) in \(fixed(seconds, 2)) s")
    }
}

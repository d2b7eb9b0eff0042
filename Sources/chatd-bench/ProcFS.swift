// What the benchmark reads about processes from /proc: CPU time and resident memory.
//
// The figure that compares servers on a small machine is replies per server
// CPU second, so the bench reads the server's utime + stime from
// /proc/PID/stat just before and just after the measured phase (and its own,
// to show what the generator cost). The files are read with
// FileSystem.readFile, so no libc is called here; parsing is pure and
// checked by `chatd-bench selftest`.
//
// /proc/PID/stat counts CPU time in clock ticks of sysconf(_SC_CLK_TCK).
// ChatSystem has no sysconf wrapper, and USER_HZ is 100 on every Linux
// architecture the project builds for (x86_64, arm64), so the value is fixed
// here; `bench/run.sh` checks `getconf CLK_TCK` says the same.

import ChatSystem

enum ProcFS {
    /// USER_HZ, the unit of utime and stime in /proc/PID/stat (see above).
    static let clockTicksPerSecond = 100.0

    /// utime + stime, in clock ticks, from the text of /proc/PID/stat.
    ///
    /// The second field (the command name in parentheses) may itself
    /// contain spaces and parentheses, so fields are counted from the last
    /// ')': after it come state (field 3) … utime (14) and stime (15).
    static func cpuTicks(statText bytes: [UInt8]) -> UInt64? {
        guard let close = bytes.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = bytes[(close + 1)...].split(separator: UInt8(ascii: " "))
        // fields[0] is the state (field 3), so field n is fields[n - 3].
        guard fields.count > 12, let user = decimal(fields[11]), let system = decimal(fields[12]) else {
            return nil
        }
        return user + system
    }

    /// VmRSS in kibibytes, from the text of /proc/PID/status.
    static func residentKiB(statusText bytes: [UInt8]) -> UInt64? {
        field("VmRSS:", statusText: bytes)
    }

    /// A "Name:   1234 kB" line of /proc/PID/status, in KiB (VmRSS:, VmHWM: …).
    static func field(_ name: String, statusText bytes: [UInt8]) -> UInt64? {
        for line in bytes.split(separator: UInt8(ascii: "\n")) where line.starts(with: name.utf8) {
            let digits = line.dropFirst(name.utf8.count).filter { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }
            guard digits.count > 3, digits.suffix(2).elementsEqual("kB".utf8) else { return nil }
            return decimal(digits.dropLast(2))
        }
        return nil
    }

    /// CPU seconds (user + system) the process has used so far; pid nil
    /// means this process. Throws when the file is missing (the process is
    /// gone) or does not parse.
    static func cpuSeconds(pid: Int32?) throws -> Double {
        let path = pid.map { "/proc/\($0)/stat" } ?? "/proc/self/stat"
        guard let bytes = try FileSystem.readFile(atPath: path) else {
            throw BenchError("\(path) does not exist: is process \(pid.map(String.init) ?? "self") running?")
        }
        guard let ticks = cpuTicks(statText: bytes) else { throw BenchError("cannot parse \(path)") }
        return Double(ticks) / clockTicksPerSecond
    }

    /// Busy CPU ticks of the whole machine (user + nice + system + irq +
    /// softirq of the `cpu` line, all cores), from the text of /proc/stat:
    /// what ircload.c reads to tell how much unrelated work ran meanwhile.
    static func busyTicks(statText bytes: [UInt8]) -> UInt64? {
        guard let line = bytes.split(separator: UInt8(ascii: "\n")).first, line.starts(with: "cpu ".utf8) else { return nil }
        let fields = line.split(separator: UInt8(ascii: " ")).dropFirst().map { decimal($0) }
        // user nice system idle iowait irq softirq
        guard fields.count >= 7, fields.prefix(7).allSatisfy({ $0 != nil }) else { return nil }
        return fields[0]! + fields[1]! + fields[2]! + fields[5]! + fields[6]!
    }

    /// Busy CPU seconds of the whole machine since boot (see `busyTicks`).
    static func machineBusySeconds() throws -> Double {
        guard let bytes = try FileSystem.readFile(atPath: "/proc/stat"), let ticks = busyTicks(statText: bytes) else {
            throw BenchError("cannot read or parse /proc/stat")
        }
        return Double(ticks) / clockTicksPerSecond
    }

    /// VmRSS of a process in KiB, or nil when it cannot be read (the process is gone).
    static func residentKiB(pid: Int32) -> UInt64? {
        guard let bytes = try? FileSystem.readFile(atPath: "/proc/\(pid)/status") else { return nil }
        return residentKiB(statusText: bytes)
    }

    private static func decimal(_ digits: some Collection<UInt8>) -> UInt64? {
        guard !digits.isEmpty, digits.count < 20 else { return nil }
        var value: UInt64 = 0
        for byte in digits {
            let digit = byte &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            value = value * 10 + UInt64(digit)
        }
        return value
    }
}

/// A one-line failure the commands print as `chatd-bench: <message>` before exiting 1.
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

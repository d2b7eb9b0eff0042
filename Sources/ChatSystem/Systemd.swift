// What chatd asks of systemd, through libsystemd: readiness and status
// (sd_notify), the watchdog interval, sockets passed by socket activation,
// native journal entries, and whether stderr already goes to the journal.
//
// Every call here is harmless outside systemd: sd_notify without
// NOTIFY_SOCKET does nothing, no watchdog or passed sockets are found, and
// the journal check says no. So chatd has one code path, run by hand or as
// a service. Only the non-variadic sd_* functions are used, because C
// variadic functions do not import into Swift.

import CSystemd
import ChatCore
import Glibc

public enum Systemd {
    /// Sends `state` (newline-separated `KEY=value` assignments, such as
    /// "READY=1\nSTATUS=serving") to the service manager. Returns false when
    /// not running under systemd or when the message could not be sent;
    /// callers carry on either way, as sd_notify(3) advises.
    @discardableResult
    public static func notify(_ state: String) -> Bool {
        sd_notify(0, state) > 0
    }

    /// The interval within which systemd expects WATCHDOG=1, or nil when the
    /// unit has no WatchdogSec= (or it is meant for another process).
    public static func watchdogInterval() -> Duration? {
        var microseconds: UInt64 = 0
        guard sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0 else { return nil }
        return .microseconds(Int64(clamping: microseconds))
    }

    /// Sockets passed by socket activation, with their FileDescriptorName=.
    /// Clears LISTEN_FDS and friends so that nothing chatd starts inherits them.
    public static func listenedSockets() throws -> [(fd: Int32, name: String)] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let count = sd_listen_fds_with_names(1, &names)
        if count < 0 { throw SystemError(errno: -count, call: "sd_listen_fds_with_names") }
        defer {
            if let names {
                for index in 0..<Int(count) { free(names[index]) }
                free(names)
            }
        }
        return (0..<Int(count)).map { index in
            let name = names?[index].map { String(cString: $0) } ?? "unknown"
            return (fd: Int32(SD_LISTEN_FDS_START) + Int32(index), name: name)
        }
    }

    /// CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants in MONOTONIC_USEC=.
    public static func monotonicMicroseconds() -> UInt64 {
        UInt64(SystemClock.monotonicNow().nanoseconds / 1000)
    }

    /// Whether stderr is the journal's stream: JOURNAL_STREAM names the
    /// device and inode of the stream systemd connected, and it must match
    /// fd 2 itself, because the variable is inherited by children whose
    /// stderr was redirected elsewhere. `journalStream` is the variable's
    /// value, a parameter so that tests need not change the environment,
    /// which other threads may be reading.
    public static func standardErrorIsJournal(journalStream: String? = Posix.environment("JOURNAL_STREAM")) -> Bool {
        guard let value = journalStream else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]),
            let status = try? Posix.status(fd: 2)
        else { return false }
        return UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode
    }

    /// Writes one journal entry made of `fields` ("KEY=value", the value may
    /// hold any bytes, newlines included). Returns false if journald could
    /// not be reached.
    @discardableResult
    public static func journalSend(_ fields: [String]) -> Bool {
        // One buffer for all fields, so the iovecs point into stable memory.
        var storage: [UInt8] = []
        var ranges: [Range<Int>] = []
        for field in fields {
            let start = storage.count
            storage += field.utf8
            ranges.append(start..<storage.count)
        }
        return storage.withUnsafeMutableBytes { bytes in
            var vectors = ranges.map { range in
                iovec(iov_base: bytes.baseAddress.map { $0 + range.lowerBound }, iov_len: range.count)
            }
            return sd_journal_sendv(&vectors, Int32(vectors.count)) == 0
        }
    }
}

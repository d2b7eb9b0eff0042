// The two clocks the program reads, and what each is for.
//
// Timers, retries and deadlines use CLOCK_MONOTONIC, which never jumps when
// the administrator or NTP sets the time; ChatCore receives it as an
// `Instant`. CLOCK_REALTIME is read only to stamp log lines and snapshots for
// humans, never to measure an interval.

import ChatCore
import Glibc

// MARK: - Clocks

public enum SystemClock {
    /// Now on CLOCK_MONOTONIC (which, on Linux, stops while the machine is suspended).
    public static func monotonicNow() -> Instant {
        let time = read(CLOCK_MONOTONIC)
        return Instant(nanoseconds: Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec))
    }

    /// Now on CLOCK_REALTIME as seconds and nanoseconds since the Unix epoch,
    /// for timestamps only.
    public static func wallSeconds() -> (seconds: Int64, nanoseconds: Int32) {
        let time = read(CLOCK_REALTIME)
        return (Int64(time.tv_sec), Int32(time.tv_nsec))
    }

    /// Milliseconds since the Unix epoch on CLOCK_REALTIME, for timestamps only.
    public static func wallMilliseconds() -> Int64 {
        let time = read(CLOCK_REALTIME)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }

    /// The hour, minute and second of local time (TZ, /etc/localtime) at
    /// `milliseconds` since the Unix epoch, for showing a message's time.
    public static func localTimeOfDay(millisecondsSince1970 milliseconds: Int64) -> (hour: Int, minute: Int, second: Int) {
        var seconds = time_t(milliseconds >= 0 ? milliseconds / 1000 : (milliseconds - 999) / 1000)
        var parts = tm()
        // localtime_r need not read TZ itself (POSIX); tzset makes sure it has.
        tzset()
        guard localtime_r(&seconds, &parts) != nil else {
            let second = Int(seconds % 86_400 + 86_400) % 86_400
            return (second / 3600, second / 60 % 60, second % 60)
        }
        return (Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }

    private static func read(_ clock: clockid_t) -> timespec {
        var time = timespec()
        // Fails only for an unknown clock id, which these two are not.
        let result = clock_gettime(clock, &time)
        precondition(result == 0, "clock_gettime(\(clock)) failed with errno \(Glibc.errno)")
        return time
    }
}

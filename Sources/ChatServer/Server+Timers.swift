// chatd's periodic work: the 1 s housekeeping tick (STATUS=, overdue log
// summaries) and the watchdog ping, which only a healthy loop sends.

import ChatConfig
import ChatCore
import ChatSystem
import Logging

extension Server {
    /// Once a second: flush overdue summaries and keep STATUS= current.
    func housekeeping() {
        lastHousekeeping = SystemClock.monotonicNow()
        for (kind, count) in throttle.due(now: lastHousekeeping) {
            report(kind, count: count)
        }
        updateStatus()
    }

    /// Pings systemd only if the loop is really turning: the housekeeping
    /// timer must have been served recently, not just this one.
    func watchdog() {
        let sinceHousekeeping = SystemClock.monotonicNow() - lastHousekeeping
        guard sinceHousekeeping < .seconds(5) else {
            logger.error("watchdog ping withheld: the event loop is falling behind", metadata: [
                "housekeeping.late_ms": "\(sinceHousekeeping.nanoseconds / 1_000_000)"
            ])
            return
        }
        Systemd.notify("WATCHDOG=1")
    }

    func status() -> String {
        let snapshot = lastSnapshot.map { rfc3339($0).dropFirst(11).dropLast() + " UTC" } ?? "never"
        var text = "serving \(registry.count) users on \(listening), last snapshot \(snapshot)"
        if let statusNote { text += "; \(statusNote)" }
        return text
    }

    func updateStatus() {
        let text = status()
        guard text != sentStatus else { return }
        sentStatus = text
        Systemd.notify("STATUS=\(text)")
    }
}

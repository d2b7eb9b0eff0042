// chatd's own periodic work, beside the service's deadlines: the 1 s
// housekeeping tick (STATUS=, overdue log summaries) and the watchdog ping.
// Both run from the loop, so they stop when the loop stops turning.

import ChatConfig
import ChatCore
import ChatSystem
import Logging

extension Server {
    /// Runs what is due at `now`.
    func periodic(now: Instant) {
        if now >= nextHousekeeping {
            nextHousekeeping = now + .seconds(1)
            for (kind, count) in throttle.due(now: now) {
                report(kind, count: count)
            }
            updateStatus()
            traffic.record(at: now, received: service.counters.received, sent: statistics.sent)
            controlTick(now: now)
        }
        if let watchdogInterval, now >= nextWatchdog {
            nextWatchdog = now + watchdogInterval
            Systemd.notify("WATCHDOG=1")
        }
    }

    func status() -> String {
        let snapshot = service.lastSnapshot.map { rfc3339($0).dropFirst(11).dropLast() + " UTC" } ?? "never"
        var text =
            "serving \(service.registry.count) users and \(service.memberCount) room members on \(listening), last snapshot \(snapshot)"
        if let error = service.journalError { text += "; registrations and messages unavailable: \(error)" }
        if let error = service.snapshotError { text += "; snapshot failed: \(error)" }
        if let reloadNote { text += "; \(reloadNote)" }
        return text
    }

    func updateStatus() {
        let text = status()
        guard text != sentStatus else { return }
        sentStatus = text
        Systemd.notify("STATUS=\(text)")
    }
}

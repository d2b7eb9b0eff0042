// Summarising repeated events, so a flood of bad datagrams cannot flood the log.
//
// The first event of a kind is reported at once. Later events of that kind
// within `window` are only counted; the next report (the first event after
// the window, or `due(now:)` once the window has passed) carries the count of
// everything since the previous report. So a kind produces at most one report
// per window, and no occurrence goes uncounted. Time is passed in; the caller
// decides what a report looks like.

public struct Throttle<Kind: Hashable & Sendable>: Sendable {
    public let window: Duration
    private var reportedAt: [Kind: Instant] = [:]
    private var pending: [Kind: Int] = [:]

    public init(window: Duration) {
        self.window = window
    }

    /// Records one event; returns the count to report now, or nil to stay quiet.
    public mutating func record(_ kind: Kind, now: Instant) -> Int? {
        let count = pending[kind, default: 0] + 1
        if let last = reportedAt[kind], now - last < window {
            pending[kind] = count
            return nil
        }
        reportedAt[kind] = now
        pending[kind] = nil
        return count
    }

    /// Counts held back whose window has passed, to report now (call it
    /// periodically, so the tail of a burst is reported too).
    public mutating func due(now: Instant) -> [(kind: Kind, count: Int)] {
        var result: [(kind: Kind, count: Int)] = []
        for (kind, count) in pending {
            if let last = reportedAt[kind], now - last < window { continue }
            reportedAt[kind] = now
            pending[kind] = nil
            result.append((kind, count))
        }
        return result
    }
}

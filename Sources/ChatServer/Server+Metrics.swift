// What chatctl's `status` and `metrics` report: the service's counters and
// state, the shell's own counts, and traffic rates over the last minute.

import ChatCore
import ChatSystem

extension Server {
    /// Datagrams received and sent, sampled on the 1 s tick for the rates
    /// `status` shows: a minute of samples, so the rate is over the last
    /// minute (or since start, when younger).
    struct TrafficWindow {
        static let span = 60
        private var samples: [(at: Instant, received: Int, sent: Int)] = []

        mutating func record(at now: Instant, received: Int, sent: Int) {
            samples.append((now, received, sent))
            if samples.count > Self.span + 1 { samples.removeFirst(samples.count - Self.span - 1) }
        }

        /// Per second, between the oldest sample and now.
        func rates(now: Instant, received: Int, sent: Int) -> (received: Double, sent: Double) {
            guard let oldest = samples.first else { return (0, 0) }
            let seconds = Double((now - oldest.at).nanoseconds) / 1e9
            guard seconds >= 0.5 else { return (0, 0) }
            return (Double(received - oldest.received) / seconds, Double(sent - oldest.sent) / seconds)
        }
    }

    func statusObject(now: Instant) -> ControlObject {
        let counters = service.counters
        let rates = traffic.rates(now: now, received: counters.received, sent: statistics.sent)
        var object: ControlObject = [
            "ok": .bool(true),
            "version": .string(ChatdVersion.string),
            "pid": .integer(Int64(Posix.processID())),
            "uptime_s": .integer((now - startedAt).components.seconds),
            "listening": .string(listening),
            "users": .integer(Int64(service.registry.count)),
            "max_users": .integer(Int64(settings.maxUsers)),
            "members": .integer(Int64(service.memberCount)),
            "durability": .string(settings.durability.rawValue),
            "journal_bytes": settings.durability == .sync ? .integer(Int64(service.journalBytes)) : .null,
            "last_snapshot": service.lastSnapshot.map { .string(rfc3339($0)) } ?? .null,
            "last_snapshot_outcome": .string(snapshotOutcome),
            "requests_per_s": .number(Self.rounded(rates.received)),
            "replies_per_s": .number(Self.rounded(rates.sent)),
            "datagrams_received": .integer(Int64(counters.received)),
            "datagrams_sent": .integer(Int64(statistics.sent)),
            "dropped_not_chat": .integer(Int64(counters.dropped)),
            "dropped_malformed": .integer(Int64(counters.malformed)),
            "dropped_rate_limited": .integer(Int64(counters.rateLimited)),
            "dropped_amplification": .integer(Int64(counters.amplificationDropped)),
            "messages_accepted": .integer(Int64(counters.messagesAccepted)),
        ]
        object["journal_error"] = service.journalError.map(JSONValue.string) ?? .null
        object["snapshot_error"] = service.snapshotError.map(JSONValue.string) ?? .null
        return object
    }

    /// "written", "failed" (the error is in snapshot_error) or "none yet".
    private var snapshotOutcome: String {
        if service.snapshotError != nil { return "failed" }
        return service.lastSnapshot == nil ? "none yet" : "written"
    }

    private static func rounded(_ value: Double) -> Double {
        (value * 10).rounded() / 10
    }

    func metricsText(now: Instant) -> String {
        let counters = service.counters
        var metrics = MetricsText()
        metrics.add("chatd_build_info", .gauge, help: "chatd's version, as a label; always 1.", [("version=\"\(ChatdVersion.string)\"", 1)])
        metrics.add("chatd_start_time_seconds", .gauge, help: "When chatd started, in seconds since 1970.", Double(startedAtWall) / 1000)
        metrics.add("chatd_users", .gauge, help: "Registered addresses.", service.registry.count)
        metrics.add("chatd_users_max", .gauge, help: "registry.max_users: most registered addresses.", settings.maxUsers)
        metrics.add("chatd_room_members", .gauge, help: "Members of the chat room.", service.memberCount)
        metrics.add("chatd_datagrams_received_total", .counter, help: "Datagrams received on the chat sockets.", counters.received)
        metrics.add("chatd_datagrams_sent_total", .counter, help: "Datagrams sent: replies and pushes.", statistics.sent)
        metrics.add("chatd_send_errors_total", .counter, help: "Datagrams that could not be sent.", statistics.sendErrors)
        metrics.add(
            "chatd_datagrams_dropped_total", .counter, help: "Datagrams dropped unanswered, by reason.",
            [
                ("reason=\"not_chat\"", Double(counters.dropped)),
                ("reason=\"rate_limited\"", Double(counters.rateLimited)),
                ("reason=\"amplification\"", Double(counters.amplificationDropped)),
            ])
        metrics.add("chatd_malformed_total", .counter, help: "Malformed requests, answered with an error.", counters.malformed)
        metrics.add("chatd_cookie_challenges_total", .counter, help: "Chat requests answered COOKIE.", counters.cookieChallenges)
        metrics.add("chatd_messages_accepted_total", .counter, help: "Chat messages accepted into history.", counters.messagesAccepted)
        metrics.add("chatd_pushes_total", .counter, help: "Push datagrams sent, retransmissions included.", counters.pushes)
        metrics.add("chatd_push_retransmissions_total", .counter, help: "Pushes sent again for want of an ACK.", counters.retransmissions)
        metrics.add("chatd_acks_total", .counter, help: "ACKs that matched a push in flight.", counters.acks)
        metrics.add("chatd_members_dropped_total", .counter, help: "Members dropped for any reason but their own LEAVE.", counters.membersDropped)
        if settings.durability == .sync {
            metrics.add("chatd_journal_bytes", .gauge, help: "Size of the journal on disk.", service.journalBytes)
        }
        metrics.add(
            "chatd_journal_failing", .gauge, help: "1 while the journal cannot be written (changes answered UNAVAILABLE).",
            service.journalError == nil ? 0 : 1)
        metrics.add(
            "chatd_last_snapshot_timestamp_seconds", .gauge,
            help: "When the last snapshot was written, in seconds since 1970; 0 before the first.",
            Int(service.lastSnapshot ?? 0))
        metrics.add(
            "chatd_snapshot_failing", .gauge, help: "1 while the last snapshot attempt failed.",
            service.snapshotError == nil ? 0 : 1)
        metrics.add(
            "chatd_uptime_seconds", .gauge, help: "Seconds since chatd started.",
            Double((now - startedAt).nanoseconds / 1_000_000) / 1000)
        return metrics.text
    }
}

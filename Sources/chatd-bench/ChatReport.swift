// A chat run's result, as a table for people and one JSON object for scripts.
//
// As in Report.swift, every derived figure is computed here from the raw
// counts, so the two renderings never disagree.

import ChatCore
import Histogram

struct ChatResult: Sendable {
    var server: String
    var members: Int
    var senders: Int
    var rate: Double
    var window: Int
    var textBytes: Int
    var ack: AckMode
    /// Members the server speaks BATCH to (cumulative ACKs).
    var batchMembers: Int
    var joinedMembers: Int
    /// From the first SAY to the end of the drain.
    var seconds: Double
    var drainSeconds: Double
    /// Whether every member had every accepted message by the end of the drain.
    var drained: Bool
    var counters: ChatCounters
    /// Delivery latency in microseconds.
    var p50: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double
    var incompleteMembers: Int
    var fewestReceived: Int
    var droppedMembers: Int
    var leftMembers: Int
    var benchCPU: Double
    var serverCPU: Double?
    /// Busy CPU of the whole machine minus the server's and the generator's.
    var otherCPU: Double
    var rssBeforeKiB: UInt64?
    var rssRegisteredKiB: UInt64?
    var rssJoinedKiB: UInt64?
    var rssEndKiB: UInt64?
    var firstError: String?

    init(
        server: String, members: Int, senders: Int, rate: Double, window: Int, textBytes: Int, ack: AckMode,
        batchMembers: Int, joinedMembers: Int, seconds: Double, drainSeconds: Double, drained: Bool,
        counters: ChatCounters, histogram: Histogram<UInt64>, incompleteMembers: Int, fewestReceived: Int,
        droppedMembers: Int, leftMembers: Int, benchCPU: Double, serverCPU: Double?, otherCPU: Double,
        rssBeforeKiB: UInt64?, rssRegisteredKiB: UInt64?, rssJoinedKiB: UInt64?, rssEndKiB: UInt64?, firstError: String?
    ) {
        self.server = server
        self.members = members
        self.senders = senders
        self.rate = rate
        self.window = window
        self.textBytes = textBytes
        self.ack = ack
        self.batchMembers = batchMembers
        self.joinedMembers = joinedMembers
        self.seconds = seconds
        self.drainSeconds = drainSeconds
        self.drained = drained
        self.counters = counters
        let empty = histogram.totalCount == 0
        func micro(_ nanoseconds: UInt64) -> Double { empty ? 0 : Double(nanoseconds) / 1000 }
        p50 = micro(histogram.valueAtPercentile(50))
        p99 = micro(histogram.valueAtPercentile(99))
        p999 = micro(histogram.valueAtPercentile(99.9))
        max = micro(histogram.maxRecorded)
        mean = empty ? 0 : histogram.mean / 1000
        self.incompleteMembers = incompleteMembers
        self.fewestReceived = fewestReceived
        self.droppedMembers = droppedMembers
        self.leftMembers = leftMembers
        self.benchCPU = benchCPU
        self.serverCPU = serverCPU
        self.otherCPU = otherCPU
        self.rssBeforeKiB = rssBeforeKiB
        self.rssRegisteredKiB = rssRegisteredKiB
        self.rssJoinedKiB = rssJoinedKiB
        self.rssEndKiB = rssEndKiB
        self.firstError = firstError
    }

    var deliveriesPerSecond: Double { seconds > 0 ? Double(counters.deliveries) / seconds : 0 }

    /// Deliveries per CPU second the server spent: nil without --server-pid,
    /// or when the server used less than one clock tick.
    var deliveriesPerServerCPUSecond: Double? {
        guard let serverCPU, serverCPU > 0 else { return nil }
        return Double(counters.deliveries) / serverCPU
    }

    /// What every member should have received: accepted messages × members that joined.
    var expectedDeliveries: Int { counters.accepted * joinedMembers }

    /// Server memory per member joined: joined minus only registered, in bytes.
    var bytesPerMember: Double? {
        guard let joined = rssJoinedKiB, let registered = rssRegisteredKiB, joinedMembers > 0 else { return nil }
        return (Double(joined) - Double(registered)) * 1024 / Double(joinedMembers)
    }

    /// Push datagrams per delivery and ACK datagrams per delivery: what the wire format costs.
    var pushesPerDelivery: Double { counters.deliveries > 0 ? Double(counters.pushes) / Double(counters.deliveries) : 0 }
    var acksPerDelivery: Double { counters.deliveries > 0 ? Double(counters.acksSent) / Double(counters.deliveries) : 0 }

    private var loadText: String {
        rate > 0 ? fixed(rate, 0) + " messages/s open loop" : "closed loop, \(window) per sender"
    }

    // MARK: Table

    var table: String {
        var rows: [(String, String)] = [
            ("messages", "\(counters.accepted) accepted of \(counters.saysSent) sent"),
            ("deliveries", "\(counters.deliveries) of \(expectedDeliveries) expected"),
            ("deliveries/s", fixed(deliveriesPerSecond, 0)),
            ("latency p50", fixed(p50, 1) + " µs"),
            ("latency p99", fixed(p99, 1) + " µs"),
            ("latency p99.9", fixed(p999, 1) + " µs"),
            ("latency max", fixed(max, 1) + " µs"),
            ("datagrams", "\(counters.pushes) pushes (\(fixed(pushesPerDelivery, 3)) per delivery), \(counters.acksSent) ACKs (\(fixed(acksPerDelivery, 3)) per delivery)"),
            ("duplicate pushes", "\(counters.duplicatePushes)"),
            ("retransmitted messages", "\(counters.duplicateMessages)"),
            ("members incomplete", "\(incompleteMembers) (the fewest messages a member got: \(fewestReceived))"),
            ("members dropped", "\(droppedMembers) (LEAVE answered NOT_JOINED; \(leftMembers) left cleanly)"),
            ("errors", "\(counters.errors) (RATE_LIMITED \(counters.rateLimited), UNAVAILABLE \(counters.unavailable))"),
        ]
        if counters.sayUnanswered > 0 { rows.append(("SAYs unanswered", "\(counters.sayUnanswered)")) }
        if counters.notObserved > 0 { rows.append(("SAYs not observed", "\(counters.notObserved)")) }
        if counters.skipped > 0 { rows.append(("seqs skipped", "\(counters.skipped) (holes never filled)")) }
        if counters.staleMessages > 0 { rows.append(("stale messages", "\(counters.staleMessages) (older than the JOIN)")) }
        if counters.foreignMessages > 0 { rows.append(("foreign messages", "\(counters.foreignMessages) (not this run's)")) }
        if counters.strays > 0 { rows.append(("stray datagrams", "\(counters.strays)")) }
        if counters.sendFailures > 0 { rows.append(("failed sends", "\(counters.sendFailures)")) }
        if !drained { rows.append(("drain", "incomplete after " + fixed(drainSeconds, 2) + " s")) }
        if let serverCPU {
            rows.append(("server CPU", fixed(serverCPU, 2) + " s (" + fixed(100 * serverCPU / seconds, 0) + " % of a core)"))
            rows.append(("deliveries/server CPU s", deliveriesPerServerCPUSecond.map { fixed($0, 0) } ?? "n/a (no CPU time seen)"))
        }
        rows.append(("bench CPU", fixed(benchCPU, 2) + " s (" + fixed(100 * benchCPU / seconds, 0) + " % of a core)"))
        rows.append(("other CPU", fixed(otherCPU, 2) + " s (the rest of the machine)"))
        if let bytesPerMember { rows.append(("server memory", fixed(bytesPerMember, 0) + " B per member joined")) }
        var text = "chatd-bench chat: \(server), \(joinedMembers) members, \(senders) senders, \(loadText), "
            + "\(textBytes)-byte texts, ACKs \(ack.rawValue) (\(batchMembers) members in BATCH), "
            + fixed(seconds, 2) + " s measured (drain " + fixed(drainSeconds, 2) + " s)\n"
        let width = rows.map(\.0.count).max() ?? 0
        for (label, value) in rows {
            text += "  " + label + String(repeating: " ", count: width - label.count + 2) + value + "\n"
        }
        if let firstError { text += "  first error: \(firstError)\n" }
        return text
    }

    // MARK: JSON

    /// One line, flat keys, like `chatd-bench run --json`.
    var json: String {
        func optional(_ value: UInt64?) -> String { value.map(String.init) ?? "null" }
        var fields: [(String, String)] = [
            ("mode", jsonString("chat")), ("server", jsonString(server)), ("members", "\(members)"),
            ("joined_members", "\(joinedMembers)"), ("senders", "\(senders)"), ("rate", fixed(rate, 1)),
            ("window", "\(window)"), ("text_bytes", "\(textBytes)"), ("ack", jsonString(ack.rawValue)),
            ("batch_members", "\(batchMembers)"), ("seconds", fixed(seconds, 3)), ("drain_s", fixed(drainSeconds, 3)),
            ("drained", drained ? "true" : "false"),
            ("messages_sent", "\(counters.saysSent)"), ("messages_accepted", "\(counters.accepted)"),
            ("deliveries", "\(counters.deliveries)"), ("expected_deliveries", "\(expectedDeliveries)"),
            ("deliveries_per_s", fixed(deliveriesPerSecond, 0)),
            ("p50_us", fixed(p50, 1)), ("p99_us", fixed(p99, 1)), ("p999_us", fixed(p999, 1)),
            ("max_us", fixed(max, 1)), ("mean_us", fixed(mean, 1)),
            ("pushes", "\(counters.pushes)"), ("entries", "\(counters.entries)"), ("acks_sent", "\(counters.acksSent)"),
            ("duplicate_pushes", "\(counters.duplicatePushes)"), ("retransmitted_messages", "\(counters.duplicateMessages)"),
            ("stale_messages", "\(counters.staleMessages)"), ("foreign_messages", "\(counters.foreignMessages)"),
            ("skipped_seqs", "\(counters.skipped)"),
            ("members_incomplete", "\(incompleteMembers)"), ("fewest_received", "\(fewestReceived)"),
            ("members_dropped", "\(droppedMembers)"), ("members_left", "\(leftMembers)"),
            ("errors", "\(counters.errors)"), ("rate_limited", "\(counters.rateLimited)"),
            ("unavailable", "\(counters.unavailable)"), ("says_unanswered", "\(counters.sayUnanswered)"),
            ("not_observed", "\(counters.notObserved)"), ("cookie_retries", "\(counters.cookieRetries)"),
            ("keepalives", "\(counters.keepalives)"), ("strays", "\(counters.strays)"),
            ("send_failures", "\(counters.sendFailures)"), ("bench_cpu_s", fixed(benchCPU, 2)),
            ("other_cpu_s", fixed(otherCPU, 2)),
        ]
        fields.append(("server_cpu_s", serverCPU.map { fixed($0, 2) } ?? "null"))
        fields.append(("deliveries_per_server_cpu_s", deliveriesPerServerCPUSecond.map { fixed($0, 0) } ?? "null"))
        fields.append(("server_rss_before_kib", optional(rssBeforeKiB)))
        fields.append(("server_rss_registered_kib", optional(rssRegisteredKiB)))
        fields.append(("server_rss_joined_kib", optional(rssJoinedKiB)))
        fields.append(("server_rss_end_kib", optional(rssEndKiB)))
        fields.append(("server_bytes_per_member", bytesPerMember.map { fixed($0, 1) } ?? "null"))
        fields.append(("first_error", firstError.map(jsonString) ?? "null"))
        return "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
    }
}

// A run's result, and its two renderings: a table for people, one JSON object for scripts.
//
// Everything shown is computed here from the raw counts, so the table and the
// JSON never disagree. Numbers are formatted by hand (no Foundation), with a
// fixed number of decimals.

import ChatCore
import Histogram

struct RunResult: Sendable {
    var mix: Mix
    var clients: Int
    var window: Int
    var server: String
    /// Length of the measured phase, in seconds.
    var seconds: Double
    var counters: Counters
    /// Round-trip percentiles and maximum, in microseconds.
    var p50: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double
    /// CPU seconds the generator used during the measured phase.
    var benchCPU: Double
    /// CPU seconds the server used during the measured phase, with --server-pid.
    var serverCPU: Double?
    var firstError: String?

    init(
        mix: Mix, clients: Int, window: Int, server: String, seconds: Double, counters: Counters,
        histogram: Histogram<UInt64>, benchCPU: Double, serverCPU: Double?, firstError: String?
    ) {
        self.mix = mix
        self.clients = clients
        self.window = window
        self.server = server
        self.seconds = seconds
        self.counters = counters
        let empty = histogram.totalCount == 0
        func micro(_ nanoseconds: UInt64) -> Double { empty ? 0 : Double(nanoseconds) / 1000 }
        p50 = micro(histogram.valueAtPercentile(50))
        p99 = micro(histogram.valueAtPercentile(99))
        p999 = micro(histogram.valueAtPercentile(99.9))
        max = micro(histogram.maxRecorded)
        mean = empty ? 0 : histogram.mean / 1000
        self.benchCPU = benchCPU
        self.serverCPU = serverCPU
        self.firstError = firstError
    }

    var repliesPerSecond: Double { seconds > 0 ? Double(counters.received) / seconds : 0 }

    /// Replies per CPU second the server spent: nil without --server-pid, or
    /// when the server used less than one clock tick.
    var repliesPerServerCPUSecond: Double? {
        guard let serverCPU, serverCPU > 0 else { return nil }
        return Double(counters.received) / serverCPU
    }

    // MARK: Table

    var table: String {
        var rows: [(String, String)] = [
            ("replies/s", fixed(repliesPerSecond, 0)),
            ("latency p50", fixed(p50, 1) + " µs"),
            ("latency p99", fixed(p99, 1) + " µs"),
            ("latency p99.9", fixed(p999, 1) + " µs"),
            ("latency max", fixed(max, 1) + " µs"),
            ("sent", "\(counters.sent)"),
            ("received", "\(counters.received)"),
            ("lost", "\(counters.lost)"),
            ("errors", "\(counters.errors)"),
        ]
        if counters.stale > 0 { rows.append(("stale replies", "\(counters.stale)")) }
        if counters.sendFailures > 0 { rows.append(("failed sends", "\(counters.sendFailures)")) }
        if let serverCPU {
            rows.append(("server CPU", fixed(serverCPU, 2) + " s (" + fixed(100 * serverCPU / seconds, 0) + " % of a core)"))
            rows.append(("replies/server CPU s", repliesPerServerCPUSecond.map { fixed($0, 0) } ?? "n/a (no CPU time seen)"))
        }
        rows.append(("bench CPU", fixed(benchCPU, 2) + " s (" + fixed(100 * benchCPU / seconds, 0) + " % of a core)"))
        var text = "chatd-bench: \(server), \(clients) clients × \(window) in flight, mix \(mix.rawValue), "
            + fixed(seconds, 2) + " s measured\n"
        let width = rows.map(\.0.count).max() ?? 0
        for (label, value) in rows {
            text += "  " + label + String(repeating: " ", count: width - label.count + 2) + value + "\n"
        }
        if let firstError { text += "  first error: \(firstError)\n" }
        return text
    }

    // MARK: JSON

    /// One line, flat keys, so that `grep -o '"key": [0-9.]*'` works as well as a JSON parser.
    var json: String {
        var fields: [(String, String)] = [
            ("mix", jsonString(mix.rawValue)), ("clients", "\(clients)"), ("window", "\(window)"),
            ("server", jsonString(server)), ("seconds", fixed(seconds, 3)),
            ("replies_per_s", fixed(repliesPerSecond, 0)),
            ("p50_us", fixed(p50, 1)), ("p99_us", fixed(p99, 1)), ("p999_us", fixed(p999, 1)),
            ("max_us", fixed(max, 1)), ("mean_us", fixed(mean, 1)),
            ("sent", "\(counters.sent)"), ("received", "\(counters.received)"), ("lost", "\(counters.lost)"),
            ("errors", "\(counters.errors)"), ("stale", "\(counters.stale)"),
            ("send_failures", "\(counters.sendFailures)"), ("bench_cpu_s", fixed(benchCPU, 2)),
        ]
        fields.append(("server_cpu_s", serverCPU.map { fixed($0, 2) } ?? "null"))
        fields.append(("replies_per_server_cpu_s", repliesPerServerCPUSecond.map { fixed($0, 0) } ?? "null"))
        fields.append(("first_error", firstError.map(jsonString) ?? "null"))
        return "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
    }
}

// MARK: - Formatting helpers

/// `value` rounded to `decimals` places, without Foundation's String(format:).
func fixed(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return value.isNaN ? "nan" : (value < 0 ? "-inf" : "inf") }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    guard scaled < 9e18 else { return "\(value)" }
    let whole = UInt64(scaled)
    let unit = UInt64(scale)
    var text = (value < 0 && whole > 0 ? "-" : "") + "\(whole / unit)"
    if decimals > 0 {
        let fraction = "\(whole % unit)"
        text += "." + String(repeating: "0", count: decimals - fraction.count) + fraction
    }
    return text
}


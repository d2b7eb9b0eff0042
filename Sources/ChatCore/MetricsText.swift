// The Prometheus text exposition format (version 0.0.4), as `chatctl
// metrics` prints it: each metric family once, with its HELP and TYPE lines
// before its samples. Text for node_exporter's textfile collector or a
// scraper; nothing here knows which metrics chatd has (Server+Metrics does).

public struct MetricsText: Sendable {
    public enum Kind: String, Sendable {
        case counter, gauge
    }

    public private(set) var text = ""

    public init() {}

    /// One metric family. `samples` pairs label sets (`reason="malformed"`,
    /// or "" for none) with values; label values must need no escaping.
    public mutating func add(_ name: String, _ kind: Kind, help: String, _ samples: [(labels: String, value: Double)]) {
        precondition(Self.isValidName(name), "not a Prometheus metric name: \(name)")
        text += "# HELP \(name) \(Self.escapedHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
        for sample in samples {
            text += sample.labels.isEmpty ? name : "\(name){\(sample.labels)}"
            text += " \(Self.format(sample.value))\n"
        }
    }

    public mutating func add(_ name: String, _ kind: Kind, help: String, _ value: Double) {
        add(name, kind, help: help, [("", value)])
    }

    public mutating func add(_ name: String, _ kind: Kind, help: String, _ value: Int) {
        add(name, kind, help: help, [("", Double(value))])
    }

    /// Integers without a fraction, as exporters write counters; the rest
    /// in Swift's shortest round-tripping form.
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value < 0 ? "-Inf" : "+Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }

    /// HELP text escapes only backslash and newline.
    static func escapedHelp(_ help: String) -> String {
        help.replacing("\\", with: "\\\\").replacing("\n", with: "\\n")
    }

    static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, !(48...57).contains(first) else { return false }
        return name.utf8.allSatisfy { byte in
            (97...122).contains(byte) || (65...90).contains(byte) || (48...57).contains(byte) || byte == 95 || byte == 58
        }
    }
}

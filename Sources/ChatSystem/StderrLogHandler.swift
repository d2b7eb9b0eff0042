// A swift-log backend that writes one line per event to stderr, for a person or for journald.
//
// Under systemd, stderr goes to the journal, which stamps each line with the
// time and unit and reads a `<N>` prefix as the syslog priority, so that
// style carries only the priority, the message and the metadata. At a
// terminal the line carries an ISO 8601 UTC time, the level and the label
// instead. Each line is built first and written with one write(2), so lines
// from different threads never interleave mid-line, and newlines inside a
// message are escaped so that one event is always one line. Formatting is a
// pure function so tests can check it without capturing stderr.

import ChatCore
import Glibc
import Logging

// MARK: - Handler

public struct StderrLogHandler: LogHandler {
    public enum Style: Sendable, Hashable {
        /// `2026-11-27T11:00:00.123Z info [chatd] user registered client.ip=127.0.0.5 username=alice`
        case human
        /// `<6>user registered client.ip=127.0.0.5 username=alice`, for journald or syslog.
        case syslogPrefix
    }

    public let label: String
    public let style: Style
    /// Where lines go: 2 (stderr) unless a test says otherwise.
    public let fileDescriptor: Int32
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    public init(
        label: String,
        style: Style,
        logLevel: Logger.Level = .info,
        metadataProvider: Logger.MetadataProvider? = nil,
        fileDescriptor: Int32 = 2
    ) {
        self.label = label
        self.style = style
        self.logLevel = logLevel
        self.metadataProvider = metadataProvider
        self.fileDescriptor = fileDescriptor
    }

    /// `.human` when stderr is a terminal, `.syslogPrefix` otherwise (the
    /// journal, a pipe, a file). Fits `LoggingSystem.bootstrap(StderrLogHandler.automatic)`.
    public static func automatic(label: String) -> StderrLogHandler {
        StderrLogHandler(label: label, style: Posix.isTerminal(fd: 2) ? .human : .syslogPrefix)
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        // Later sources win: handler, then provider, then the call site.
        var merged = metadata
        if let provided = metadataProvider?.get() {
            merged.merge(provided) { _, new in new }
        }
        if let explicit = event.metadata {
            merged.merge(explicit) { _, new in new }
        }
        if let error = event.error, merged["error.message"] == nil {
            merged["error.message"] = "\(error)"
        }
        let time = style == .human ? SystemClock.wallSeconds() : (0, 0)
        let line = Self.format(
            style: style, label: label, level: event.level, message: event.message.description,
            metadata: merged, time: time)
        // A logger has nowhere to report its own failure to write.
        try? Posix.writeAll(fd: fileDescriptor, bytes: Array((line + "\n").utf8))
    }
}

// MARK: - Formatting

extension StderrLogHandler {
    /// One log line, without the newline. `time` (seconds and nanoseconds
    /// since the Unix epoch) is used by `.human` only.
    public static func format(
        style: Style,
        label: String,
        level: Logger.Level,
        message: String,
        metadata: Logger.Metadata,
        time: (seconds: Int64, nanoseconds: Int32)
    ) -> String {
        var line: String
        switch style {
        case .human:
            line = "\(timestamp(seconds: time.seconds, nanoseconds: time.nanoseconds)) \(level) [\(label)] "
        case .syslogPrefix:
            line = "<\(syslogPriority(level))>"
        }
        line += escapingLineBreaks(message)
        // MESSAGE_ID is for the journal; on a line it would only be noise.
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) where key != JournalLogHandler.messageIDKey {
            line += " \(key)=\(quotedIfNeeded(value.description))"
        }
        return line
    }

    /// The syslog priority journald reads from a `<N>` prefix (RFC 5424
    /// severities; swift-log has no alert or emergency).
    public static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// `2026-11-27T11:00:00.123Z`: UTC, millisecond precision.
    public static func timestamp(seconds: Int64, nanoseconds: Int32) -> String {
        rfc3339(seconds, milliseconds: Int(nanoseconds / 1_000_000))
    }

    /// Keeps an event on one line: CR and LF become `\r` and `\n`.
    private static func escapingLineBreaks(_ text: String) -> String {
        guard text.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "\r\n" }) else { return text }
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// A metadata value as is when it reads unambiguously as one `key=value`
    /// token, otherwise in double quotes with `"`, `\` and control characters escaped.
    static func quotedIfNeeded(_ value: String) -> String {
        let needsQuotes =
            value.isEmpty
            || value.unicodeScalars.contains { scalar in
                scalar == " " || scalar == "\"" || scalar == "\\" || scalar == "="
                    || scalar.properties.generalCategory == .control
            }
        guard needsQuotes else { return value }
        var result = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.properties.generalCategory == .control:
                result += "\\u{\(String(scalar.value, radix: 16))}"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}

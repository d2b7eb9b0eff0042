// A swift-log backend that writes native journal entries (sd_journal_sendv).
//
// Compared with lines on stderr, native entries keep every metadata value as
// a field of its own, so `journalctl CHATD_USERNAME=alice` finds a user's
// events and `-o json` hands them to scripts unparsed. Each entry carries:
//
//   MESSAGE, PRIORITY (syslog level), SYSLOG_IDENTIFIER, CODE_FILE/LINE/FUNC,
//   MESSAGE_ID when the event's metadata has "message.id" (a stable 128-bit
//   id per kind of event, listed in the README), and CHATD_<KEY> for every
//   other metadata key, upper-cased with anything outside [A-Z0-9_] turned
//   into "_" (journald drops fields with other names): client.ip becomes
//   CHATD_CLIENT_IP.

import Logging

public struct JournalLogHandler: LogHandler {
    public let identifier: String
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    /// The metadata key whose value becomes MESSAGE_ID rather than a CHATD_ field.
    public static let messageIDKey = "message.id"

    public init(identifier: String, logLevel: Logger.Level = .info, metadataProvider: Logger.MetadataProvider? = nil) {
        self.identifier = identifier
        self.logLevel = logLevel
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let explicit = event.metadata { merged.merge(explicit) { $1 } }
        if let error = event.error, merged["error.message"] == nil { merged["error.message"] = "\(error)" }
        Systemd.journalSend(
            Self.fields(
                identifier: identifier, level: event.level, message: event.message.description, metadata: merged,
                file: event.file, function: event.function, line: event.line))
    }

    /// The entry's fields, in a stable order (pure, for tests).
    public static func fields(
        identifier: String, level: Logger.Level, message: String, metadata: Logger.Metadata,
        file: String, function: String, line: UInt
    ) -> [String] {
        var fields = [
            "MESSAGE=\(message)",
            "PRIORITY=\(StderrLogHandler.syslogPriority(level))",
            "SYSLOG_IDENTIFIER=\(identifier)",
            "CODE_FILE=\(file)",
            "CODE_LINE=\(line)",
            "CODE_FUNC=\(function)",
        ]
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            if key == messageIDKey {
                fields.append("MESSAGE_ID=\(value)")
            } else {
                fields.append("\(fieldName(for: key))=\(value)")
            }
        }
        return fields
    }

    /// `client.ip` → `CHATD_CLIENT_IP`: only [A-Z0-9_] survive in journal field
    /// names, and the prefix keeps ours apart from journald's own.
    public static func fieldName(for key: String) -> String {
        let body = key.uppercased().unicodeScalars.map { scalar -> Character in
            switch scalar {
            case "A"..."Z", "0"..."9", "_": Character(scalar)
            default: "_"
            }
        }
        return String(("CHATD_" + String(body)).prefix(64))
    }
}

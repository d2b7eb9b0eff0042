// How `systemctl reload chatd` learns that chatd has finished reloading.
//
// systemd 252 has no Type=notify-reload, so a reload job ends when the
// ExecReload= command exits. `chatd --reload PID` is that command: it notes
// the reload count in the status file, sends SIGHUP, and waits until chatd
// has written a higher count with the outcome. Exiting 0 (applied) or 1
// (refused, with the reason on stderr) makes `systemctl reload` report what
// really happened. The file lives in $RUNTIME_DIRECTORY (RuntimeDirectory=
// in the unit); without it chatd writes nothing and --reload only signals.
//
// Format, one line: "<count> applied" or "<count> refused: <reason>".

import ChatSystem

public struct ReloadStatus: Equatable, Sendable {
    public var count: Int
    public var applied: Bool
    public var reason: String?

    public init(count: Int, applied: Bool, reason: String? = nil) {
        self.count = count
        self.applied = applied
        self.reason = reason
    }

    public static let fileName = "reload-status"

    /// The status file's path, when chatd runs with a runtime directory.
    public static var path: String? {
        Posix.environment("RUNTIME_DIRECTORY").map { "\($0)/\(fileName)" }
    }

    public var line: String {
        applied ? "\(count) applied\n" : "\(count) refused: \(reason ?? "unknown reason")\n"
    }

    public init?(line: String) {
        let text = line.hasSuffix("\n") ? String(line.dropLast()) : line
        guard let space = text.firstIndex(of: " "), let count = Int(text[..<space]) else { return nil }
        let rest = text[text.index(after: space)...]
        if rest == "applied" {
            self.init(count: count, applied: true)
        } else if rest.hasPrefix("refused: ") {
            self.init(count: count, applied: false, reason: String(rest.dropFirst("refused: ".count)))
        } else {
            return nil
        }
    }

    /// The status in the file, or nil when there is none (no reload yet).
    public static func read(at path: String) -> ReloadStatus? {
        guard let bytes = try? FileSystem.readFile(atPath: path) else { return nil }
        return ReloadStatus(line: String(decoding: bytes, as: UTF8.self))
    }

    public func write(to path: String) throws {
        try FileSystem.writeAtomically(Array(line.utf8), toPath: path, mode: 0o644)
    }
}
